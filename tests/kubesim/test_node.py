"""kubesim's kubelet as a remote node (apex_hub.kubesim.node) against an API server over HTTP.

Here the API server is a kubesim without a kubelet of its own, so this runs in the fast lane;
tests/realcluster/ runs the same node against a real kube-apiserver.
"""

import asyncio
import sys

import pytest
from kubernetes_asyncio import client

from apex_hub.kubesim import KubeSim
from apex_hub.kubesim.node import RemoteNode
from tests.helpers.wait import until

pytestmark = pytest.mark.process


async def eventually(check):
    return await until(check, interval=0.1)


@pytest.fixture
async def cluster(tmp_path):
    async with KubeSim(kubelet=None, workdir=tmp_path / "sim") as sim:
        async with RemoteNode(sim.kubeconfig_path, name="remote-1", workdir=tmp_path / "node") as node:
            async with sim.api_client() as api:
                yield sim, node, client.CoreV1Api(api)


def pod(name, script, volumes=(), mounts=()):
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "python:3",
                    "command": [sys.executable, "-c", script],
                    "volumeMounts": list(mounts),
                }
            ],
            "volumes": list(volumes),
            "terminationGracePeriodSeconds": 1,
        },
    }


async def test_a_pending_pod_is_bound_run_and_reported(cluster):
    sim, node, v1 = cluster
    await v1.create_namespaced_pod(
        "default", pod("hello", "print('hello from the node', flush=True)\nimport time; time.sleep(600)")
    )

    async def running():
        p = await v1.read_namespaced_pod("hello", "default")
        return p if p.status.phase == "Running" else None

    p = await eventually(running)
    assert p.spec.node_name == "remote-1"
    assert p.status.pod_ip.startswith("127.0.0.")
    assert p.status.container_statuses[0].state.running is not None
    reasons = await eventually(lambda: _reasons(v1, "hello", {"Scheduled", "Started"}))
    assert {"Scheduled", "Pulled", "Created", "Started"} <= reasons
    log = node.workdir / "pods" / "default" / "hello" / "main.log"
    await eventually(lambda: _contains(log, "hello from the node"))
    await v1.delete_namespaced_pod("hello", "default")
    await eventually(lambda: _gone(v1, "hello"))


async def test_configmap_volumes_follow_their_object(cluster, tmp_path):
    sim, node, v1 = cluster
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}, "data": {"k": "one"}})
    await v1.create_namespaced_pod(
        "default",
        pod(
            "reader",
            "import time; time.sleep(600)",
            volumes=[{"name": "c", "configMap": {"name": "cfg"}}],
            mounts=[{"name": "c", "mountPath": "/etc/cfg"}],
        ),
    )
    path = node.kubelet.pod_root("default", "reader") / "etc" / "cfg" / "k"
    await eventually(lambda: _contains(path, "one"))
    await v1.patch_namespaced_config_map("cfg", "default", {"data": {"k": "two"}})
    await eventually(lambda: _contains(path, "two"))


async def test_a_pod_of_another_node_is_left_alone(cluster):
    sim, node, v1 = cluster
    spec = pod("elsewhere", "import time; time.sleep(600)")
    spec["spec"]["nodeName"] = "some-other-node"
    await v1.create_namespaced_pod("default", spec)
    await asyncio.sleep(1)
    p = await v1.read_namespaced_pod("elsewhere", "default")
    assert p.status.phase == "Pending" and not p.status.pod_ip


async def _reasons(v1, name, wanted):
    events = await v1.list_namespaced_event("default", field_selector=f"involvedObject.name={name}")
    reasons = {e.reason for e in events.items}
    return reasons if wanted <= reasons else None


async def _contains(path, text):
    try:
        return text in path.read_text()
    except OSError:
        return False


async def _gone(v1, name):
    try:
        await v1.read_namespaced_pod(name, "default")
        return False
    except client.exceptions.ApiException as e:
        return e.status == 404
