"""End to end: a real JupyterHub + proxy with APExSpawner on kubesim (process kubelet).

One hub and one kubesim serve the whole module. Groups are made through the hub's
REST API, so the spawner reads real ``orm.Group`` objects; the single-user servers
are real ``jupyterhub-singleuser`` processes on their pods' own 127.0.0.N addresses,
and Conda environments are built by the real init container script (``venv`` builder:
no channel is reachable here).
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import aiohttp
import pytest
import pytest_asyncio
import yaml
from kubernetes_asyncio import client

from apex_hub.kubesim import KubeSim
from apex_hub.naming import user_namespace
from tests.helpers.hub import HubProcess, apex_hub_config

pytestmark = [pytest.mark.process, pytest.mark.asyncio(loop_scope="module")]
IMAGE = "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0"
ENV_NAME = "science"
ENV_TITLE = "Python (science, APEx)"

CATALOGUE = {
    "profiles": [
        {"slug": "lab", "display_name": "JupyterLab", "default": True},
        {
            "slug": "sci",
            "display_name": "Science",
            "config_maps": [
                {
                    "name": "motd",
                    "key": "motd.txt",
                    "mount_path": "/home/jovyan/apex/motd.txt",
                    "content": "Welcome {username}, this is {profile}.\n",
                }
            ],
            "env": {"APEX_GREETING": "hello {username}"},
            "conda_environments": [
                {
                    "name": ENV_NAME,
                    "display_name": ENV_TITLE,
                    "environment_yml": f"name: {ENV_NAME}\ndependencies:\n  - python\n",
                }
            ],
        },
        {"slug": "large", "display_name": "Large", "groups": ["apex-large"]},
    ],
}

CONFIG = """
c.APExSpawner.workspace_volume = {"name": "workspace", "size": "1Gi", "mount_path": "/home/jovyan"}
"""


class Env:
    def __init__(self, sim: KubeSim, hub: HubProcess):
        self.sim, self.hub = sim, hub

    def raw(self, plural: str, namespace: str, name: str) -> dict | None:
        """An object straight from kubesim's store (None when absent)."""
        return self.sim.store._raw(self.sim.store._rt(plural), namespace, name)

    def pod(self, namespace: str) -> dict:
        pods = [
            o for (ns, _), o in self.sim.store._table(self.sim.store._rt("pods")).items() if ns == namespace
        ]
        assert len(pods) == 1, pods
        return pods[0]

    async def pod_log(self, namespace: str, pod: str, container: str) -> str:
        url = f"{self.sim.url}/api/v1/namespaces/{namespace}/pods/{pod}/log"
        async with aiohttp.ClientSession() as s:
            async with s.get(url, params={"container": container}) as r:
                assert r.status == 200, await r.text()
                return await r.text()

    async def user(self, name: str, groups: tuple[str, ...] = ()) -> None:
        assert (await self.hub.api("POST", f"/users/{name}"))[0] == 201
        for group in groups:
            status, _ = await self.hub.api("POST", f"/groups/{group}")
            assert status in (201, 409)
            status, body = await self.hub.api("POST", f"/groups/{group}/users", json={"users": [name]})
            assert status == 200, body

    async def start(self, name: str, profile: str) -> dict:
        status, body = await self.hub.api("POST", f"/users/{name}/server", json={"profile": profile})
        assert status in (201, 202), (body, self.hub.log()[-3000:])
        return await self.hub.wait_ready(name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apex-hub")
    profiles = tmp / "profiles.yml"
    profiles.write_text(yaml.safe_dump(CATALOGUE, sort_keys=False))
    async with KubeSim(kubelet="process", workdir=tmp / "sim") as sim:
        config = apex_hub_config(sim.url, profiles, IMAGE) + CONFIG
        async with HubProcess(tmp / "hub", config, env={"KUBECONFIG": sim.kubeconfig_path}) as hub:
            yield Env(sim, hub)


async def test_group_gate_holds_against_the_rest_api(env):
    hub = env.hub
    await env.user("mallory")
    await env.user("dave", groups=("apex-large",))
    _, group = await hub.api("GET", "/groups/apex-large")
    assert group["users"] == ["dave"]

    # another group's profile, asked for directly through the REST API
    status, body = await hub.api("POST", "/users/mallory/server", json={"profile": "large"})
    assert status == 403, body
    assert "You may not use profile 'large'" in body["message"], body
    assert "apex-large" not in body["message"]  # the required groups are not revealed

    # KubeSpawner settings smuggled in next to a profile the user may have
    status, body = await hub.api(
        "POST", "/users/mallory/server", json={"profile": "lab", "image": "evil:latest"}
    )
    assert status == 403, body
    assert "not accepted: image" in body["message"], body

    # an unknown profile: 400, listing only what this user may choose
    status, body = await hub.api("POST", "/users/mallory/server", json={"profile": "nope"})
    assert status == 400, body
    assert "There is no profile 'nope'. Choose one of: lab, sci." in body["message"], body

    # nothing of mallory's reached Kubernetes: the gate runs before the namespace is made
    namespace = user_namespace("mallory")
    assert env.raw("namespaces", "", namespace) is None
    assert not [
        r for r in env.sim.requests if r.namespace == namespace and r.verb in ("create", "patch", "update")
    ]
    _, model = await hub.api("GET", "/users/mallory")
    assert not model["servers"] and not model["pending"]

    # a member of the group is let through (the spawner reads the groups made above)
    await env.start("dave", "large")
    pod = env.pod(user_namespace("dave"))
    assert pod["metadata"]["labels"]["apex.esa.int/profile"] == "large"
    await stop_server(hub, "dave")


async def test_workspace_files_env_and_conda_kernel_built_once(env):
    hub, user = env.hub, "carol"
    ns = user_namespace(user)
    await env.user(user)
    await env.start(user, "sci")
    pod = env.pod(ns)
    pod_name = pod["metadata"]["name"]
    assert pod["metadata"]["labels"]["apex.esa.int/profile"] == "sci"

    # the Conda environment: built by the init container, offered as a kernel
    log = await env.pod_log(ns, pod_name, "conda-environments")
    assert f"environment {ENV_NAME}: building with venv" in log, log
    assert f"environment {ENV_NAME}: built in" in log, log
    status, body = await hub.get(f"/user/{user}/api/kernelspecs")
    assert status == 200, body
    specs = json.loads(body)["kernelspecs"]
    assert f"conda-{ENV_NAME}" in specs, list(specs)
    kernel = specs[f"conda-{ENV_NAME}"]["spec"]
    assert kernel["display_name"] == ENV_TITLE
    python = kernel["argv"][0]
    assert python.endswith(f"/.apex/conda/envs/{ENV_NAME}/bin/python")
    # a real interpreter in the user's workspace volume
    assert (
        subprocess.run(
            [python, "-c", "import sys; assert sys.prefix != sys.base_prefix"], timeout=30
        ).returncode
        == 0
    )
    claim_dir = env.sim.workdir / "node" / "pvcs" / ns / "workspace"
    marker = claim_dir / ".apex" / "conda" / "envs" / ENV_NAME / ".apex-hash"
    built = (marker.read_text(), marker.stat().st_mtime_ns, (marker.parent / "pyvenv.cfg").stat().st_ino)

    # the ConfigMap file, with the placeholders filled in, in the home directory
    status, body = await hub.get(f"/user/{user}/api/contents/apex/motd.txt")
    assert status == 200, body
    assert json.loads(body)["content"] == f"Welcome {user}, this is sci.\n"
    # the profile's env var reached the server process
    assert _process_env(env, ns, pod_name)["APEX_GREETING"] == f"hello {user}"
    motd = env.raw("configmaps", ns, "motd")
    assert motd["metadata"]["labels"]["apex.esa.int/persist"] == "false"
    assert env.raw("configmaps", ns, "apex-conda-environments") is not None

    await stop_server(hub, user)
    # the stop swept the server's objects but kept the claim
    assert env.raw("configmaps", ns, "motd") is None
    assert env.raw("configmaps", ns, "apex-conda-environments") is None
    assert not [k for k in env.sim.store._table(env.sim.store._rt("pods")) if k[0] == ns]
    async with env.sim.api_client() as api:
        v1 = client.CoreV1Api(api)
        pvc = await v1.read_namespaced_persistent_volume_claim("workspace", ns)
        assert pvc.status.phase == "Bound"
        assert pvc.metadata.labels["apex.esa.int/persist"] == "true"

    # a second start: the ConfigMap is back (a new object), the environment is reused as is
    await env.start(user, "sci")
    pod = env.pod(ns)
    again = env.raw("configmaps", ns, "motd")
    assert again is not None and again["metadata"]["uid"] != motd["metadata"]["uid"]
    log = await env.pod_log(ns, pod["metadata"]["name"], "conda-environments")
    assert f"environment {ENV_NAME}: unchanged" in log and "reusing" in log, log
    assert "building" not in log, log
    assert (
        marker.read_text(),
        marker.stat().st_mtime_ns,
        (marker.parent / "pyvenv.cfg").stat().st_ino,
    ) == built
    status, body = await hub.get(f"/user/{user}/api/kernelspecs")
    assert status == 200 and f"conda-{ENV_NAME}" in json.loads(body)["kernelspecs"], body
    status, body = await hub.get(f"/user/{user}/api/contents/apex/motd.txt")
    assert status == 200 and json.loads(body)["content"] == f"Welcome {user}, this is sci.\n", body
    await stop_server(hub, user)


def _process_env(env: Env, namespace: str, pod_name: str) -> dict[str, str]:
    """The environment of the pod's (single) main container process, from /proc."""
    runtime = next(p for p in env.sim.kubelet._pods.values() if p.key == (namespace, pod_name))
    proc = runtime.procs["notebook"]
    with open(f"/proc/{proc.pid}/environ", "rb") as f:
        items = [i.decode(errors="replace").partition("=") for i in f.read().split(b"\0") if i]
    return {k: v for k, _, v in items}


async def stop_server(hub, user):
    status, _ = await hub.api("DELETE", f"/users/{user}/server")
    assert status in (202, 204)
    for _ in range(300):
        _, model = await hub.api("GET", f"/users/{user}")
        if not model["servers"] and not model["pending"]:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"server of {user} did not stop:\n{hub.log()[-3000:]}")


async def test_a_spawn_into_someone_elses_namespace_is_refused_through_the_hub(env):
    """Issue 14.1 in a real hub: mallory's namespace exists and is alice's (as a 32-bit hash
    preimage used to make it); mallory's spawn must neither write there nor stop alice's pod."""
    hub = env.hub
    await env.user("alice")
    await env.start("alice", "lab")
    alice_ns = user_namespace("alice")
    alice_pod = env.pod(alice_ns)["metadata"]["name"]
    victim_ns = user_namespace("mallory2")
    async with env.sim.api_client() as api:
        await client.CoreV1Api(api).create_namespace(
            {
                "metadata": {
                    "name": victim_ns,
                    "labels": {"app.kubernetes.io/managed-by": "apex-hub"},
                    "annotations": {"apex.esa.int/username": "alice"},
                }
            }
        )
    env.sim.reset_log()
    await env.user("mallory2")
    status, body = await hub.api("POST", "/users/mallory2/server", json={"profile": "lab"})
    for _ in range(300):  # the refusal is quick; poll until the hub has given up on the spawn
        _, model = await hub.api("GET", "/users/mallory2")
        if not model.get("pending") and not model.get("servers"):
            break
        await asyncio.sleep(0.1)
    assert not model.get("servers"), model
    assert (
        "SECURITY: refusing namespace apex-mallory2 for user 'mallory2': it belongs to user 'alice'"
        in hub.log()
    )
    # the refusal comes back on the POST itself (202 only if the hub were slower than its
    # slow_spawn_timeout; the log line above is then the user's message on the progress page)
    assert status in (403, 202), body
    if status == 403:
        assert "the namespace apex-mallory2 exists and is not yours" in body["message"], body
        assert "alice" not in body["message"]
    writes = [
        r
        for r in env.sim.requests
        if r.verb in ("create", "patch", "update", "delete", "deletecollection")
        and (r.namespace in (victim_ns, alice_ns) or r.name == victim_ns)
    ]
    assert not writes, writes
    assert env.raw("pods", alice_ns, alice_pod) is not None  # alice's server still runs
    await stop_server(hub, "alice")
