"""End to end on the Zero-to-JupyterHub 4.4.0 configuration path: helm-values/values.yaml as operators install it.

The hub is a real ``python -m jupyterhub`` whose config file is the chart's configuration path
(tests/helpers/z2jh.py: our values merged over chart 4.4.0's defaults, the chart's own KubeSpawner
settings, ``hub.config``, then every ``hub.extraConfig`` snippet in key order) — so the chart's
``profile_list = []``, its cloud-metadata init container, its user-scheduler name and memory guarantee
are all in play unless our values decide otherwise. The hub database is PostgreSQL, login goes through
APExOIDCAuthenticator against the local OpenID provider, the three services run as the values start
them, and servers are real ``jupyterhub-singleuser`` processes on kubesim's process kubelet.

Only what a cluster provides is replaced, and only in addresses and paths: the services' ``http://hub:818x``
URLs become loopback ports, ``/srv/apex`` a temporary directory, ``http://proxy-public`` the proxy's
loopback URL, the issuer the local provider's, in-cluster Kubernetes kubesim's kubeconfig, and the
``psycopg2`` driver of the image ``psycopg`` (the one installed here). Runs in both dependency lanes
(JupyterHub 5.5 / KubeSpawner 7.0 from the image, and the newest releases).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import uuid
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy import create_engine, text

from apex_hub.kubesim import KubeSim
from apex_hub.localidp import login
from tests.helpers import z2jh
from tests.helpers.hub import ROOT_ARGS, HubProcess, free_port
from tests.helpers.oidc import CLIENT_ID, CLIENT_SECRET, make_idp, skip_without_idp
from tests.services.test_accounting_ledger import postgres  # noqa: F401 - fixture

pytestmark = [pytest.mark.process, pytest.mark.asyncio(loop_scope="module")]
ROOT = Path(__file__).resolve().parents[1]
NEVER = "http://never.invalid/"
POLL = 0.5


def _replace_strings(node, replacements: dict[str, str]):
    """``node`` with every string's occurrences of the keys of ``replacements`` replaced."""
    if isinstance(node, str):
        for old, new in replacements.items():
            node = node.replace(old, new)
        return node
    if isinstance(node, dict):
        return {k: _replace_strings(v, replacements) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_strings(v, replacements) for v in node]
    return node


async def until(what: str, check, hub: HubProcess, tries: int = 600):
    """Poll ``check()`` (async, returns a truthy value when done) ``tries`` times ``POLL`` s apart."""
    for _ in range(tries):
        result = await check()
        if result:
            return result
        await asyncio.sleep(POLL)
    raise AssertionError(f"{what}: not reached\n{hub.log()[-6000:]}")


async def server_log(env, user: str) -> str:
    """The notebook container's log of ``user``'s server pod (for failure messages)."""
    async with env.sim.api_client() as api:
        from kubernetes_asyncio import client

        v1 = client.CoreV1Api(api)
        for pod in (await v1.list_pod_for_all_namespaces(label_selector="component=singleuser-server")).items:
            if pod.metadata.annotations.get("hub.jupyter.org/username") == user:
                log = await v1.read_namespaced_pod_log(
                    pod.metadata.name, pod.metadata.namespace, container="notebook"
                )
                return log[-4000:]
    return "(no pod)"


class Env:
    def __init__(self, sim, idp, hub, work):
        self.sim, self.idp, self.hub, self.work = sim, idp, hub, work

    def browser(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory, postgres):
    skip_without_idp()
    work = tmp_path_factory.mktemp("z2jh")
    names = {"hub": "hub_" + uuid.uuid4().hex[:8], "acct": "acct_" + uuid.uuid4().hex[:8]}
    admin = create_engine(f"{postgres}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    async with KubeSim(kubelet="process", workdir=work / "sim") as sim:
        async with sim.api_client() as api:
            from kubernetes_asyncio import client

            v1 = client.CoreV1Api(api)
            await v1.create_namespace({"metadata": {"name": "jhub"}})
            # the profiles' image pull secret, which the operator creates in the release namespace
            await v1.create_namespaced_secret(
                "jhub",
                {
                    "metadata": {"name": "apex-registry"},
                    "type": "kubernetes.io/dockerconfigjson",
                    "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
                },
            )
        hub = HubProcess(work / "hub", "")
        idp = make_idp(hub.url, workdir=work / "idp")
        await idp.start()
        ports = {name: free_port() for name in ("culler", "monitoring", "accounting")}
        replacements = {
            "http://hub:8182": f"http://127.0.0.1:{ports['culler']}",
            "http://hub:8183": f"http://127.0.0.1:{ports['monitoring']}",
            "http://hub:8184": f"http://127.0.0.1:{ports['accounting']}",
            "http://proxy-public": hub.url,
            "/srv/apex": str(work / "srv"),
            '"kubernetes": "incluster"': f'"kubernetes": "{sim.kubeconfig_path}"',
            "https://auth.apex.example.org/realms/apex": idp.issuer,
            "https://hub.apex.example.org": hub.url,
            "postgresql+psycopg2://apexhub@postgres.example.org:5432/apexhub": f"{postgres}/{names['hub']}",
        }
        values = _replace_strings(z2jh.load_values(), replacements)
        files = work / "extrafiles"
        files.mkdir()
        mounts = z2jh.write_extra_files(values, str(files))
        (work / "values.json").write_text(json.dumps(values))
        (work / "mounts.json").write_text(json.dumps(mounts))
        hub.config = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.helpers import z2jh
# the chart's configuration path, with our values merged over its defaults
z2jh.chart_config(json.load(open({str(work / "values.json")!r})), mounts=json.load(open({str(work / "mounts.json")!r})), c=c)
# -- what the cluster provides, on loopback (the chart's hub Service, the kubelet, the API server) --
c.JupyterHub.hub_bind_url = c.JupyterHub.hub_connect_url = "http://127.0.0.1:{hub.hub_port}"
c.JupyterHub.services.append({{"name": "tester", "api_token": "{hub.token}"}})
c.JupyterHub.load_roles.append({{"name": "tester", "services": ["tester"], "scopes": [
    "admin:users", "admin:servers", "access:servers", "list:users", "read:users", "admin:auth_state",
    "tokens", "read:groups"]}})
c.APExSpawner.k8s_api_host = "{sim.url}"
c.APExSpawner.args = {ROOT_ARGS!r}
c.APExSpawner.conda_builder = "venv"
c.APExSpawner.http_timeout = 120
c.APExSpawner.start_timeout = 120
"""
        (work / "srv").mkdir()
        hub.env = {
            "POD_NAMESPACE": "jhub",
            "HUB_SERVICE_PORT": str(hub.hub_port),
            "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
            "OAUTH_CLIENT_ID": CLIENT_ID,
            "OAUTH_CLIENT_SECRET": CLIENT_SECRET,
            "KUBECONFIG": sim.kubeconfig_path,
            "APEX_ACCOUNTING_DB_URL": f"{postgres}/{names['acct']}",
            "APEX_MONITORING_METRICS_TOKEN": "metrics-" + secrets.token_hex(8),
        }
        try:
            async with hub:
                yield Env(sim, idp, hub, work)
        finally:
            await idp.stop()


async def test_the_chart_path_gives_apexspawner_its_catalogue_and_no_chart_leftovers(env):
    status, _ = await env.hub.request("GET", "/hub/health")
    assert status == 200
    log = env.hub.log()
    assert "Group management has been offloaded" not in log and "ScopeNotFound" not in log
    assert "extra_user_scopes" not in log  # no unrecognised setting (JupyterHub 5.5 has none)


async def test_alice_logs_in_sees_her_form_spawns_a_gated_profile_and_uses_the_services(env):
    hub = env.hub
    async with env.browser() as http:
        url, resp = await login(http, f"{hub.url}/hub/oauth_login", "alice", "alice-pw", NEVER)
        assert resp.status == 200 and url.startswith(hub.url + "/hub/"), (url, hub.log()[-3000:])
        # the profile form: the catalogue's profiles for her groups (not the chart's empty profile_list)
        async with http.get(f"{hub.url}/hub/spawn") as r:
            form = await r.text()
            assert r.status == 200, form
        offered = set(re.findall(r'name="profile"[^>]*value="([^"]+)"', form)) or set(
            re.findall(r'value="([^"]+)"[^>]*name="profile"', form)
        )
        assert {"jupyterlab", "vscode-small"} <= offered, form[-3000:]
        assert "processing-large" not in offered and "gpu" not in offered
        xsrf = next(c.value for c in http.cookie_jar if c.key == "_xsrf" and c["path"].startswith("/hub"))
        async with http.post(
            f"{hub.url}/hub/spawn", data={"profile": "vscode-small", "_xsrf": xsrf}, allow_redirects=False
        ) as r:
            assert r.status in (302, 303), await r.text()
        await hub.wait_ready("alice")
        # her server, through the proxy: JupyterLab in her browser session (the hub's OAuth to the server) ...
        async with http.get(f"{hub.url}/user/alice/lab") as r:
            assert r.status == 200 and r.url.path == "/user/alice/lab", (
                f"{r.url} {r.status}\n{await server_log(env, 'alice')}"
            )
        # ... and the server's API with a token of hers
        status, token = await hub.api("POST", "/users/alice/tokens", json={"note": "z2jh test"})
        assert status == 201, token
        async with aiohttp.ClientSession(headers={"Authorization": f"token {token['token']}"}) as s:
            async with s.get(f"{hub.url}/user/alice/api/status") as r:
                assert r.status == 200, f"{await r.text()}\n{await server_log(env, 'alice')}"
                assert "started" in await r.json()
        # the usage page and the culler's upcoming stops, through the hub's OAuth to each service
        async with http.get(f"{hub.url}/services/apex-accounting/") as r:
            assert r.status == 200, (r.url, await r.text())
            assert "alice" in await r.text()
        async with http.get(
            f"{hub.url}/services/apex-culler/api/upcoming", headers={"Accept": "text/html"}
        ) as r:
            assert r.status == 200, (r.url, await r.text())
            assert isinstance(await r.json(), (dict, list))
    # the pod: the profile's, and nothing privileged or root in it
    async with env.sim.api_client() as api:
        from kubernetes_asyncio import client

        pods = (
            await client.CoreV1Api(api).list_pod_for_all_namespaces(
                label_selector="component=singleuser-server"
            )
        ).items
    [pod] = [p for p in pods if p.metadata.annotations.get("hub.jupyter.org/username") == "alice"]
    spec = pod.spec
    assert pod.metadata.labels["apex.esa.int/profile"] == "vscode-small"
    assert spec.scheduler_name in (None, "default-scheduler")  # the chart's user scheduler is off
    containers = list(spec.containers) + list(spec.init_containers or [])
    assert "block-cloud-metadata" not in [c.name for c in containers]
    for container in containers:
        sc = container.security_context
        assert sc is not None and not sc.privileged and sc.run_as_user != 0, (container.name, sc)
        assert not (sc.capabilities and sc.capabilities.add), (container.name, sc)
        assert sc.allow_privilege_escalation is False, container.name
    assert spec.security_context.run_as_non_root is True
    [main] = [c for c in spec.containers if c.name == "notebook"]
    assert main.resources.requests.get("memory") != "1G"  # not the chart's singleuser.memory.guarantee


async def test_the_probe_reports_ok(env):
    hub = env.hub

    async def probe_done():
        status, body = await hub.get("/services/apex-monitoring/status.json")
        if status != 200:
            return None
        result = json.loads(body)
        return (
            result if result.get("probe", result).get("status") not in (None, "UNKNOWN", "PENDING") else None
        )

    result = await until("a probe result", probe_done, hub)
    probe = result.get("probe", result)
    assert probe["status"] == "OK", json.dumps(result, indent=1)[-3000:]
    status, group = await hub.api("GET", "/groups/apex-probe")
    assert status == 200 and "apex-probe" in group["users"]  # made by the service, not by load_groups
