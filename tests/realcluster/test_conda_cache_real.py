"""The shared Conda cache against a real control plane: the hub's ServiceAccount (rbac.yaml plus
helm-values/conda-cache-rbac.yaml, under the admission policy) creates the build Job, the real
Job controller makes its pod, kubesim's node runs it into a hostPath cache, and a workspace uses
the shared build. What kubesim's own Job controller (kubesim/jobs.py) plays is checked here."""

import copy
import json

import pytest
from kubernetes_asyncio import client

from apex_hub.spawner import conda_cache
from apex_hub.spawner.kube import Kube
from tests.helpers.cluster import HUB_NAMESPACE, helm_manifests
from tests.helpers.spawner import IMAGE, make_spawner
from tests.helpers.wait import until
from tests.realcluster.test_spawner_real import SERVE
from tests.spawner.test_conda_cache import CATALOGUE, ENV_YML

pytestmark = pytest.mark.realcluster


async def test_a_real_job_builds_the_shared_environment_for_a_workspace(hub, node, admin, tmp_path):
    import logging

    kube = Kube(admin, logging.getLogger("test"), retry_timeout=60)
    for doc in helm_manifests("conda-cache-rbac.yaml"):
        await kube.apply(doc)
    cache = tmp_path / "cache"
    s = make_spawner(
        hub,
        "cleo",
        catalogue=copy.deepcopy(CATALOGUE),
        user_options={"profile": "eo"},
        cmd=SERVE,
        start_timeout=300,
        http_timeout=300,
        server_ready_poll=0,
        conda_builder="venv",
        conda_cache_volume={"hostPath": {"path": str(cache), "type": "DirectoryOrCreate"}},
        conda_cache_path=str(cache),
        conda_cache_wait=3600,
        conda_cache_stall=3600,
        delete_namespace_on_user_delete=True,
        **hub.spawner_traits,
    )
    key = conda_cache.cache_key(ENV_YML, None, "venv", IMAGE)
    batch = client.BatchV1Api(admin)
    try:
        await s.start()
        job = await batch.read_namespaced_job(conda_cache.job_name(key), HUB_NAMESPACE)

        async def complete():
            found = await batch.read_namespaced_job(job.metadata.name, HUB_NAMESPACE)
            return found if found.status.succeeded else None

        done = await until(complete, interval=0.2)
        assert {c.type for c in done.status.conditions if c.status == "True"} >= {"Complete"}
        pods = await client.CoreV1Api(admin).list_namespaced_pod(
            HUB_NAMESPACE, label_selector=f"batch.kubernetes.io/job-name={job.metadata.name}"
        )
        assert [p.status.phase for p in pods.items] == ["Succeeded"]
        root = node.workdir / "node"
        log = (root / "pods" / s.namespace / s.pod_name / "conda-environments.log").read_text()
        assert "environment eo: using the shared build" in log and "building" not in log, log
        kernels = root / "pvcs" / s.namespace / "workspace" / ".apex" / "jupyter" / "kernels"
        spec = json.loads((kernels / "conda-eo" / "kernel.json").read_text())
        assert spec["argv"][0] == str(cache / key / "bin" / "python")
        await s.stop()
    finally:
        await s.delete_forever()
        await batch.delete_namespaced_job(
            conda_cache.job_name(key), HUB_NAMESPACE, propagation_policy="Background"
        )
