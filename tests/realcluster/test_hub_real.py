"""End to end on the real control plane: a real JupyterHub with APExSpawner, authenticated as the
hub's ServiceAccount, spawns a real ``jupyterhub-singleuser`` that kubesim's node runs.
"""

import json
from datetime import UTC

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from apex_hub.naming import user_namespace
from tests.helpers.hub import HubProcess, apex_hub_config
from tests.helpers.wait import until

pytestmark = pytest.mark.realcluster
IMAGE = "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0"
CATALOGUE = {
    "profiles": [
        {
            "slug": "sci",
            "display_name": "Science",
            "default": True,
            "config_maps": [
                {
                    "name": "motd",
                    "key": "motd.txt",
                    "mount_path": "/home/jovyan/apex/motd.txt",
                    "content": "Welcome {username}, this is {profile} on a real API server.\n",
                }
            ],
            "env": {"APEX_GREETING": "hello {username}"},
        }
    ]
}


async def test_a_real_single_user_server_through_the_hub(real_cluster, node, tmp_path):
    profiles = tmp_path / "profiles.yml"
    profiles.write_text(yaml.safe_dump(CATALOGUE, sort_keys=False))
    config = (
        apex_hub_config(real_cluster.url, str(profiles), IMAGE)
        + "c.APExSpawner.delete_namespace_on_user_delete = True\n"
        + "".join(f"c.APExSpawner.{k} = {v!r}\n" for k, v in real_cluster.spawner_traits.items())
    )
    user, ns = "erin", user_namespace("erin")
    env = {"KUBECONFIG": str(real_cluster.hub_kubeconfig)}
    async with HubProcess(tmp_path / "hub", config, env=env) as hub:
        assert (await hub.api("POST", f"/users/{user}"))[0] == 201
        status, body = await hub.api("POST", f"/users/{user}/server", json={"profile": "sci"})
        assert status in (201, 202), (body, hub.log()[-3000:])
        await hub.wait_ready(user)
        # the single-user server answers through the proxy, with the ConfigMap file in its home
        status, body = await hub.get(f"/user/{user}/api/status")
        assert status == 200, body
        status, body = await hub.get(f"/user/{user}/api/contents/apex/motd.txt")
        assert status == 200, body
        assert json.loads(body)["content"] == f"Welcome {user}, this is sci on a real API server.\n"
        async with await real_cluster.admin_client() as api:
            v1 = client.CoreV1Api(api)
            pods = (await v1.list_namespaced_pod(ns)).items
            assert [p.spec.node_name for p in pods] == [node.name]
            assert pods[0].status.pod_ip.startswith("127.0.0.")
            # stop, then delete the user: pod and namespace go (the real namespace controller)
            status, _ = await hub.api("DELETE", f"/users/{user}/server")
            assert status in (202, 204)
            await _eventually(lambda: _no_pods(v1, ns))
            assert (await hub.api("DELETE", f"/users/{user}"))[0] == 204
            await _eventually(lambda: _gone(v1, ns))


async def _no_pods(v1, ns):
    return not (await v1.list_namespaced_pod(ns)).items


async def _gone(v1, ns):
    try:
        await v1.read_namespace(ns)
        return False
    except ApiException as e:
        return e.status == 404


async def _eventually(check):
    await until(check, interval=0.5)  # no deadline: the hang guard ends a hang


CULLER_CONFIG = """
from apex_hub.services import configure
configure(c, culler={{"policy": "{policy}", "state_dir": "{state}", "interval": 30}})
# the culler runs in the test process (its clock an hour ahead): keep its role, give it a known token
culler = c.JupyterHub.services[-1]
culler.pop("command")
culler["api_token"] = "{token}"
"""


async def test_a_culler_round_stops_a_real_server_and_keeps_its_claim(real_cluster, node, tmp_path):
    """The culler decides through the hub's API; the stop reaches the real API server: the idle
    server's pod goes, its claim stays, the server still inside its timeout keeps running."""
    import secrets
    from datetime import datetime, timedelta

    from apex_hub.services.culler import CullerService, CullingPolicy

    catalogue = {
        "profiles": [
            {
                "slug": "lab",
                "display_name": "Lab",
                "default": True,
                "volumes": [{"name": "home", "size": "1Gi", "mount_path": "/home/jovyan/work"}],
            },
            {"slug": "long", "display_name": "Long runs"},
        ]
    }
    profiles, policy_file, state = tmp_path / "profiles.yml", tmp_path / "culling.yaml", tmp_path / "state"
    profiles.write_text(yaml.safe_dump(catalogue, sort_keys=False))
    policy_file.write_text(
        yaml.safe_dump({"defaults": {"idle_timeout": "2h"}, "profiles": {"lab": {"idle_timeout": "30m"}}})
    )
    token = secrets.token_hex(16)
    config = (
        apex_hub_config(real_cluster.url, str(profiles), IMAGE)
        + "".join(f"c.APExSpawner.{k} = {v!r}\n" for k, v in real_cluster.spawner_traits.items())
        + CULLER_CONFIG.format(policy=policy_file, state=state, token=token)
    )
    env = {"KUBECONFIG": str(real_cluster.hub_kubeconfig)}
    async with HubProcess(tmp_path / "hub", config, env=env) as hub:
        for name, profile in (("gina", "lab"), ("hugo", "long")):
            assert (await hub.api("POST", f"/users/{name}"))[0] == 201
            status, body = await hub.api("POST", f"/users/{name}/server", json={"profile": profile})
            assert status in (201, 202), (body, hub.log()[-3000:])
        for name in ("gina", "hugo"):
            await hub.wait_ready(name)
        later = datetime.now(UTC) + timedelta(hours=1)  # past lab's 30 min, inside the 2 h default
        svc = CullerService(
            CullingPolicy.load(policy_file),
            api_url=f"{hub.url}/hub/api",
            api_token=token,
            state_dir=state,
            clock=lambda: later,
        )
        try:
            report = await svc.run_once()
        finally:
            await svc.close()
        assert report.errors == [], report.errors
        assert [(c.user, c.decision.reason) for c in report.stopped] == [("gina", "idle")]
        async with await real_cluster.admin_client() as api:
            v1 = client.CoreV1Api(api)
            gina, hugo = user_namespace("gina"), user_namespace("hugo")
            await _eventually(lambda: _no_pods(v1, gina))
            claims = (await v1.list_namespaced_persistent_volume_claim(gina)).items
            assert sorted(c.metadata.name for c in claims) == [
                "home",
                "workspace",
            ]  # the profile's and the default
            assert [p.status.phase for p in (await v1.list_namespaced_pod(hugo)).items] == ["Running"]
            _, model = await hub.api("GET", "/users/gina")
            assert "" not in (model.get("servers") or {}), model
            for name in ("hugo",):
                assert (await hub.api("DELETE", f"/users/{name}/server"))[0] in (202, 204)
            await _eventually(lambda: _no_pods(v1, hugo))
