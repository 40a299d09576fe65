"""End to end: a real JupyterHub + proxy with unmodified KubeSpawner on kubesim (process kubelet).

The single-user server is a real ``jupyterhub-singleuser`` process that the simulated
kubelet starts on the pod's own 127.0.0.N address.
"""

import os

import pytest
from kubernetes_asyncio import client

from apex_hub.kubesim import KubeSim
from tests.helpers.hub import HubProcess
from tests.helpers.wait import until

pytestmark = [pytest.mark.process, pytest.mark.slow]
ROOT_ARGS = ["--allow-root"] if os.geteuid() == 0 else []

CONFIG = """
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.JupyterHub.authenticator_class = "dummy"
c.KubeSpawner.k8s_api_host = "{url}"
c.KubeSpawner.enable_user_namespaces = True
c.KubeSpawner.user_namespace_template = "hub-{{username}}"
c.KubeSpawner.image = "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
# The kubelet runs pods as its own user; when that is root (CI), Jupyter must be told it is fine.
c.KubeSpawner.args = {root_args}
c.KubeSpawner.storage_pvc_ensure = True
c.KubeSpawner.storage_capacity = "1Gi"
c.KubeSpawner.pvc_name_template = "claim-{{username}}"
c.KubeSpawner.volumes = [{{"name": "home", "persistentVolumeClaim": {{"claimName": "claim-{{username}}"}}}}]
c.KubeSpawner.volume_mounts = [{{"name": "home", "mountPath": "/home/jovyan"}}]
c.KubeSpawner.events_enabled = True
c.KubeSpawner.start_timeout = 60
c.KubeSpawner.http_timeout = 60
"""


async def test_hub_spawns_real_singleuser_on_kubesim(tmp_path):
    async with KubeSim(kubelet="process", workdir=tmp_path / "sim") as sim:
        async with HubProcess(
            tmp_path / "hub",
            CONFIG.format(url=sim.url, root_args=ROOT_ARGS),
            env={"KUBECONFIG": sim.kubeconfig_path},
        ) as hub:
            assert (await hub.api("POST", "/users/alice"))[0] == 201
            status, _ = await hub.api("POST", "/users/alice/server")
            assert status in (201, 202), hub.log()[-3000:]
            server = await hub.wait_ready("alice")
            pod = sim.store.get(sim.store._rt("pods"), "hub-alice", "jupyter-alice")
            ip = pod["status"]["podIP"]
            assert ip.startswith("127.0.0.") and ip != "127.0.0.1"
            assert server["url"] == "/user/alice/"
            # through the proxy, to the real single-user server on the pod's address
            status, body = await hub.get("/user/alice/api/status")
            assert status == 200 and '"started"' in body
            # the PVC is mounted as the home directory: a notebook file saved now outlives the pod
            status, _ = await hub.request(
                "PUT",
                "/user/alice/api/contents/kept.txt",
                json={"type": "file", "format": "text", "content": "data"},
            )
            assert status in (200, 201)
            await stop_server(hub, "alice")
            # a second start gets the same claim back, with the file in it
            assert (await hub.api("POST", "/users/alice/server"))[0] in (201, 202)
            await hub.wait_ready("alice")
            status, body = await hub.get("/user/alice/files/kept.txt")
            assert status == 200 and body == "data"
            await stop_server(hub, "alice")
            async with sim.api_client() as api:
                v1 = client.CoreV1Api(api)
                assert not (await v1.list_namespaced_pod("hub-alice")).items
                pvc = await v1.read_namespaced_persistent_volume_claim("claim-alice", "hub-alice")
                assert pvc.status.phase == "Bound"


async def stop_server(hub, user):
    status, _ = await hub.api("DELETE", f"/users/{user}/server")
    assert status in (202, 204)

    async def stopped():
        _, model = await hub.api("GET", f"/users/{user}")
        return not model["servers"]

    await until(stopped, interval=0.2)
