"""Conda environments built once per cluster (``conda_cache_volume``): APExSpawner in process on a
process-mode kubesim (real HTTP, the real init container script and build Jobs, ``venv`` builder).

The cache is a hostPath volume (kubesim's process kubelet gives every pod the host directory at
its own path, as a node would), mounted read-only into workspaces and read-write into the Job.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess

import pytest
import yaml
from kubernetes_asyncio import client
from kubespawner import KubeSpawner

from apex_hub.kubesim import KubeSim
from apex_hub.spawner import conda_cache
from tests.helpers.spawner import IMAGE, make_spawner, obj, objects
from tests.helpers.wait import until
from tests.test_helm_values import ROOT, allows

pytestmark = pytest.mark.process
HUB_NAMESPACE = "jhub"
ENV_YML = "name: eo\ndependencies:\n  - python\n"
CATALOGUE = {
    "profiles": [
        {
            "slug": "eo",
            "display_name": "EO",
            "default": True,
            "conda_environments": [{"name": "eo", "display_name": "Python (EO)", "environment_yml": ENV_YML}],
        },
        {
            "slug": "eo2",
            "display_name": "EO, next version",
            "conda_environments": [
                {"name": "eo", "display_name": "Python (EO 2)", "environment_yml": ENV_YML + "# v2\n"}
            ],
        },
    ]
}
#: The workspace's server: anything listening on its port (the kernel specs are checked on disk).
SERVER = ["python3", "-m", "http.server", "--bind", "0.0.0.0", "8888"]


@pytest.fixture
async def psim(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", "")
    from kubespawner.clients import load_config

    load_config.cache_clear()
    async with KubeSim(kubelet="process", workdir=tmp_path / "sim") as sim:
        sim.make_default()
        async with sim.api_client() as api:
            await client.CoreV1Api(api).create_namespace({"metadata": {"name": HUB_NAMESPACE}})
        yield sim
        await KubeSpawner._stop_all_reflectors()


def spawner(sim, user, cache, profile="eo", wait=3600.0, stall=3600.0, **traits):
    return make_spawner(
        sim,
        user,
        catalogue=copy.deepcopy(CATALOGUE),
        user_options={"profile": profile},
        cmd=SERVER,
        server_ready_poll=0,
        start_timeout=600,
        conda_builder="venv",
        conda_cache_volume={"hostPath": {"path": str(cache), "type": "DirectoryOrCreate"}} if cache else None,
        conda_cache_path=str(cache or "/opt/apex/conda-cache"),
        conda_cache_wait=wait,
        conda_cache_stall=stall,
        **traits,
    )


def key_of(yml: str = ENV_YML) -> str:
    return conda_cache.cache_key(yml, None, "venv", IMAGE)


def init_log(sim, s) -> str:
    return sim.kubelet.logs(s.namespace, s.pod_name, "conda-environments")


def claim_env(sim, s, name="eo"):
    return sim.workdir / "node" / "pvcs" / s.namespace / "workspace" / ".apex" / "conda" / "envs" / name


def kernel(sim, s, name="eo") -> dict:
    path = sim.workdir / "node" / "pvcs" / s.namespace / "workspace" / ".apex" / "jupyter" / "kernels"
    return json.loads((path / f"conda-{name}" / "kernel.json").read_text())


def jobs(sim) -> list[dict]:
    return objects(sim, "jobs", HUB_NAMESPACE, group="batch")


def job_creates(sim) -> list:
    return [r for r in sim.requests if r.resource == "jobs" and r.verb == "create"]


async def test_one_job_for_concurrent_spawns_and_later_starts_use_it_at_once(psim, tmp_path):
    cache = tmp_path / "cache"
    spawners = [spawner(psim, user, cache) for user in ("ana", "bo", "cy")]
    await asyncio.gather(*(s.start() for s in spawners))
    key = key_of()
    (job,) = jobs(psim)  # three spawns of one profile, one build
    assert job["metadata"]["name"] == conda_cache.job_name(key)
    assert job["metadata"]["annotations"][conda_cache.KEY_ANNOTATION] == key
    assert sorted(r.status for r in job_creates(psim)) == [201, 409, 409]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (build,) = pod["containers"]
    assert build["image"] == IMAGE and build["securityContext"]["allowPrivilegeEscalation"] is False
    assert build["volumeMounts"] == [
        {"name": conda_cache.CACHE_VOLUME, "mountPath": str(cache)}
    ]  # read-write
    assert {e["name"]: e["value"] for e in build["env"]}["APEX_CONDA_SPEC"] == ENV_YML
    await until(
        lambda: (
            (obj(psim, "jobs", HUB_NAMESPACE, job["metadata"]["name"], "batch") or {})
            .get("status", {})
            .get("succeeded")
        )
    )
    shared = cache / key
    assert (shared / ".apex-ready").read_text().strip() == key
    for s in spawners:
        log = init_log(psim, s)
        assert "environment eo: using the shared build" in log, log
        assert "building" not in log, log  # no per-user build
        assert not claim_env(psim, s).exists()  # and no prefix in the claim
        spec = kernel(psim, s)
        assert spec["argv"][0] == str(shared / "bin" / "python")
        assert spec["metadata"]["apex"] == {
            "environment": "eo",
            "sha256": __import__("hashlib").sha256(ENV_YML.encode()).hexdigest(),
            "shared": key,
        }
        pod = obj(psim, "pods", s.namespace, s.pod_name)
        mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert mounts[conda_cache.CACHE_VOLUME] == {
            "name": conda_cache.CACHE_VOLUME,
            "mountPath": str(cache),
            "readOnly": True,
        }
    # the shared interpreter really runs, from the shared prefix
    out = subprocess.run(
        [str(shared / "bin" / "python"), "-c", "import sys, ipykernel; print(sys.prefix)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == str(shared), out.stderr

    # the second user's first start (here the fourth): the build is there, nothing waited for
    dee = spawner(psim, "dee", cache)
    await dee.start()
    log = init_log(psim, dee)
    assert "using the shared build" in log and "waiting" not in log and "building" not in log, log
    assert kernel(psim, dee)["argv"][0] == str(shared / "bin" / "python")
    assert len(jobs(psim)) == 1 and [r.status for r in job_creates(psim)][-1] == 409
    for s in [*spawners, dee]:
        await s.stop()
    assert (shared / ".apex-ready").exists()  # stops never touch the cache


async def test_a_changed_file_gets_its_own_build_and_a_per_user_file_builds_per_user(psim, tmp_path):
    cache = tmp_path / "cache"
    first, second = spawner(psim, "eve", cache), spawner(psim, "fay", cache, profile="eo2")
    await first.start()
    await second.start()
    old, new = key_of(), key_of(ENV_YML + "# v2\n")
    assert old != new
    assert sorted(j["metadata"]["name"] for j in jobs(psim)) == sorted(map(conda_cache.job_name, (old, new)))
    assert kernel(psim, first)["argv"][0] == str(cache / old / "bin" / "python")
    assert kernel(psim, second)["argv"][0] == str(cache / new / "bin" / "python")  # never the old one

    for s in (first, second):
        await s.stop()


async def test_a_users_own_build_is_kept_and_private_asks_for_one(psim, tmp_path):
    """The shared prefix is read-only: a user who wants to change an environment builds their own
    (``<name>.private``), which later starts keep using, the shared build notwithstanding."""
    cache = tmp_path / "cache"
    s = spawner(psim, "gus", cache)
    await s.start()
    assert "using the shared build" in init_log(psim, s)
    await s.stop()
    claim_env(psim, s).parent.joinpath("eo.private").write_text("")
    await s.start()
    log = init_log(psim, s)
    assert "environment eo: eo.private asks for your own; building in your workspace" in log, log
    assert "building with venv" in log and "using the shared" not in log, log
    own = kernel(psim, s)
    assert (
        own["argv"][0].endswith("/.apex/conda/envs/eo/bin/python") and "shared" not in own["metadata"]["apex"]
    )
    (claim_env(psim, s) / "mine.txt").write_text("changed by the user")
    await s.stop()
    claim_env(psim, s).parent.joinpath("eo.private").unlink()  # even so: their own build is kept
    await s.start()
    log = init_log(psim, s)
    assert "environment eo: unchanged" in log and "shared" not in log, log
    assert (claim_env(psim, s) / "mine.txt").exists()
    assert (cache / key_of() / ".apex-ready").exists() and len(jobs(psim)) == 1
    await s.stop()


async def test_a_failed_shared_build_falls_back_to_the_per_user_build(psim, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    key = key_of()
    (cache / key).write_text("not a directory: the Job's build cannot make its prefix")
    s = spawner(psim, "hal", cache)
    await s.start()
    (job,) = jobs(psim)
    log = init_log(psim, s)
    assert "environment eo: the shared build failed" in log, log
    assert "no shared build to use; building in your workspace" in log and "built in" in log, log
    assert kernel(psim, s)["argv"][0].endswith("/.apex/conda/envs/eo/bin/python")
    assert (claim_env(psim, s) / "bin" / "python").exists()

    async def failed():
        found = obj(psim, "jobs", HUB_NAMESPACE, job["metadata"]["name"], "batch")
        return any(c["type"] == "Failed" for c in found.get("status", {}).get("conditions", []))

    await until(failed)
    assert obj(psim, "jobs", HUB_NAMESPACE, job["metadata"]["name"], "batch")["status"]["failed"] == 2
    # the next start neither rebuilds the broken environment in a new Job nor waits: its own is current
    await s.stop()
    await s.start()
    log = init_log(psim, s)
    assert "unchanged" in log and "waiting" not in log, log
    assert len(jobs(psim)) == 1
    await s.stop()


async def test_a_job_that_cannot_be_created_does_not_stop_the_start(psim, tmp_path):
    psim.inject(verb="create", resource="jobs", status=403, times=None)
    s = spawner(psim, "ivy", tmp_path / "cache", stall=0.5)
    await s.start()
    assert not jobs(psim)
    log = init_log(psim, s)
    assert "the shared build made no progress for 0.5 s" in log and "building with venv" in log, log
    await s.stop()


async def test_cache_off_the_workspace_is_as_before(psim):
    s = spawner(psim, "jo", None)
    await s.start()
    pod = obj(psim, "pods", s.namespace, s.pod_name)
    assert conda_cache.CACHE_VOLUME not in {v["name"] for v in pod["spec"]["volumes"]}
    init = pod["spec"]["initContainers"][0]
    assert not [e for e in init["env"] if e["name"].startswith("APEX_CONDA_CACHE")]
    assert not job_creates(psim) and not jobs(psim)
    log = init_log(psim, s)
    assert "environment eo: building with venv" in log and "shared" not in log, log
    await s.stop()


def test_the_hub_namespace_role_allows_the_job_creates_and_nothing_more():
    """helm-values/conda-cache-rbac.yaml: what the cache needs beyond rbac.yaml (create Jobs in
    the hub's own namespace: the spawner only ever POSTs them; a 409 is an answer, not a read)."""
    import kubernetes_validate

    docs = [d for d in yaml.safe_load_all((ROOT / "helm-values" / "conda-cache-rbac.yaml").read_text()) if d]
    assert sorted(d["kind"] for d in docs) == ["Role", "RoleBinding"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
        assert doc["metadata"]["namespace"] == HUB_NAMESPACE
    role = next(d for d in docs if d["kind"] == "Role")
    assert allows(role["rules"], "batch", "jobs", "create")
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    rbac = [d for d in yaml.safe_load_all((ROOT / "helm-values" / "rbac.yaml").read_text()) if d]
    hub = next(d for d in rbac if d["kind"] == "ClusterRoleBinding")["subjects"]
    assert binding["subjects"] == hub and binding["roleRef"]["name"] == role["metadata"]["name"]


def test_the_isolation_gate_lets_only_the_operators_cache_volume_through():
    from apex_hub.spawner.podgate import pod_problems

    cache = {"hostPath": {"path": "/opt/apex/conda-cache", "type": "DirectoryOrCreate"}}
    pod = {
        "spec": {
            "volumes": [
                {"name": conda_cache.CACHE_VOLUME, **cache},
                {"name": "sneaky", "hostPath": {"path": "/var/run"}},
                {"name": conda_cache.CACHE_VOLUME + "-2", **cache},  # same source, another name
            ],
            "containers": [],
        }
    }
    problems = pod_problems(conda_cache.gate_view(pod, cache))
    assert problems == [
        "volume 'sneaky' mounts the node's '/var/run'",
        f"volume '{conda_cache.CACHE_VOLUME}-2' mounts the node's '/opt/apex/conda-cache'",
    ]
    assert len(pod_problems(conda_cache.gate_view(pod, None))) == 3  # cache off: nothing let through
