"""End to end: the monitoring service started BY THE HUB (``configure(c, monitoring=...)``) probes a
real JupyterHub + configurable-http-proxy with APExSpawner on kubesim (process kubelet: every probe
server is a real ``jupyterhub-singleuser``), through the proxy, with a kernel.

One hub for the module. The probe runs every 2 s while the pause file is absent; each test changes
the probe's profile in the catalogue (APExSpawner re-reads it), lets one probe run and pauses again.

The service's clock is a test clock (``APEX_MONITORING_CLOCK_FILE``): where a probe would wait out a
timeout (a server that never gets ready, a kernel that died, a dead proxy route) or a result would age,
the test first sees that it is so (the pod stalled, the kernel restarted, the route failed), then moves
the service's time past the limit instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import yaml

from apex_hub.kubesim import KubeSim
from apex_hub.naming import user_namespace
from apex_hub.services.common.clock import advance
from tests.helpers.hub import SERVICES_POLLED_EVERY_SECOND, HubProcess, apex_hub_config, free_port
from tests.helpers.wait import until

pytestmark = [pytest.mark.process, pytest.mark.asyncio(loop_scope="module")]

IMAGE = "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0"
SERVICE = "apex-monitoring"
PROBE = "apex-probe"
READY_TIMEOUT = 40
PROXY_TIMEOUT = 5
KERNEL_TIMEOUT = 30
STALE_AFTER = 20
#: the hub's log line of a spawn request of the probe's that it accepted (the server is pending)
SPAWN_ACCEPTED = f"202 POST /hub/api/users/{PROBE}/server ({SERVICE}@"
# pods' loopback addresses: away from the default range of other suites running on this machine
FIRST_IP = 100 + secrets.randbelow(120)
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "monitoring"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# a profile whose kernels die at start: its PYTHONPATH shadows ipykernel_launcher
DEAD_KERNEL = {
    "env": {"PYTHONPATH": "/home/jovyan/.dead-kernel"},
    "config_maps": [
        {
            "name": "dead-kernel",
            "key": "ipykernel_launcher.py",
            "mount_path": "/home/jovyan/.dead-kernel/ipykernel_launcher.py",
            "content": "raise SystemExit('this kernel is broken')\n",
        }
    ],
}


def catalogue(probe: dict | None = None) -> dict:
    return {
        "profiles": [
            {"slug": "lab", "display_name": "JupyterLab", "default": True},
            {"slug": "probe", "display_name": "Monitoring probe", **(probe or {})},
        ]
    }


CONFIG = (
    SERVICES_POLLED_EVERY_SECOND
    + """
c.APExSpawner.workspace_volume = {{"name": "workspace", "size": "1Gi", "mount_path": "/home/jovyan"}}
# a spawn request is answered at once (202), as in production where a pod takes longer than the hub's
# slow_spawn_timeout (10 s): the probe follows the spawn's progress
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.ConfigurableHTTPProxy.api_url = "{chp_api}"
c.JupyterHub.load_roles[0]["scopes"] += ["read:services", "read:tokens", "read:groups"]
# two more services for the health check: one with a URL, one without (a managed process)
c.JupyterHub.services += [
    {{"name": "apex-accounting", "url": "http://127.0.0.1:{acc_port}",
      "command": ["{python}", "-m", "http.server", "--bind", "127.0.0.1", "{acc_port}"]}},
    {{"name": "apex-culler", "command": ["{python}", "-c", "import time; time.sleep(3600)"]}},
]
from apex_hub.services import configure
configure(c, monitoring={{
    "profile": "probe", "url": "http://127.0.0.1:{port}", "interval": 2, "check_interval": 1,
    "ready_timeout": {ready}, "proxy_timeout": {proxy}, "kernel_timeout": {kernel}, "stop_timeout": 60,
    "stale_after": {stale}, "pause_file": "{pause}", "state_dir": "{state}",
    "kubernetes": "{kubeconfig}", "proxy_routes": True, "metrics_token": "{metrics_token}",
    "environment": {{"APEX_MONITORING_CLOCK_FILE": "{clock}"}},
}})
"""
)


class Env:
    def __init__(
        self, sim: KubeSim, hub: HubProcess, tmp: Path, chp_api: str, chp_token: str, metrics_token: str
    ):
        self.sim, self.hub, self.tmp = sim, hub, tmp
        self.chp_api, self.chp_token, self.metrics_token = chp_api, chp_token, metrics_token
        self.profiles, self.pause, self.clock = tmp / "profiles.yml", tmp / "pause", tmp / "clock"
        self.base = f"{hub.url}/services/{SERVICE}/"

    def advance(self, seconds: float) -> None:
        """Move the service's clock ahead (its timeouts' deadlines and its results' ages)."""
        advance(self.clock, seconds)

    def log_count(self, text: str) -> int:
        return self.hub.log().count(text)

    def probe_pod(self):
        """kubesim's kubelet's record of the probe's pod (None while there is none)."""
        namespace = user_namespace(PROBE)
        return next((p for p in self.sim.kubelet._pods.values() if p.namespace == namespace), None)

    async def probe_pod_log(self) -> str:
        pod = self.probe_pod()
        if pod is None:
            return ""
        url = f"{self.sim.url}/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/log"
        async with aiohttp.ClientSession() as s:
            async with s.get(url, params={"container": "notebook"}) as r:
                return await r.text() if r.status == 200 else ""

    def set_probe_profile(self, **fields) -> None:
        self.profiles.write_text(yaml.safe_dump(catalogue(fields), sort_keys=False))
        # the spawner notices a change by modification time; make sure it moves
        later = time.time() + 1
        os.utime(self.profiles, (later, later))

    async def status(self) -> dict:
        async with aiohttp.ClientSession() as s:
            async with s.get(self.base + "status.json") as r:
                assert r.status == 200, await r.text()
                return await r.json()

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as s:
            async with s.get(
                self.base + "metrics", headers={"Authorization": f"Bearer {self.metrics_token}"}
            ) as r:
                assert r.status == 200, await r.text()
                return await r.text()

    async def probe_once(self) -> dict:
        """Unpause until one probe has started, pause again, return that probe's result."""

        def probes(st: dict) -> list[dict]:
            return [r for r in [st["probe"]["running"], *st["history"]] if r]

        last = max((r["id"] for r in probes(await self.status())), default=0)  # ids count up
        self.pause.unlink(missing_ok=True)
        try:
            probe_id = await poll(
                lambda st: next((r["id"] for r in probes(st) if r["id"] > last), None), self
            )
        finally:
            self.pause.touch()
        return await poll(lambda st: next((r for r in st["history"] if r["id"] == probe_id), None), self)

    async def probe_and(self, ready, seconds: float) -> tuple[dict, bool]:
        """One probe; once ``ready()`` (sync or async) is true while it runs, the service's clock moves
        ``seconds`` ahead, once. The probe's result, and whether the clock was moved."""
        probe = asyncio.ensure_future(self.probe_once())
        try:
            await until(lambda: probe.done() or ready(), 0.1)
            moved = not probe.done()
            if moved:
                self.advance(seconds)
            return await probe, moved
        finally:
            probe.cancel()

    async def chp(self, method: str, path: str, body=None):
        async with aiohttp.ClientSession() as s:
            async with s.request(
                method,
                f"{self.chp_api}/api/routes{path}",
                json=body,
                headers={"Authorization": f"token {self.chp_token}"},
            ) as r:
                return r.status, await r.text()

    async def probe_server(self) -> dict | None:
        _, model = await self.hub.api("GET", f"/users/{PROBE}")
        return (model.get("servers") or {}).get("") if isinstance(model, dict) else None


async def poll(pick, env: Env):
    """Poll status.json until ``pick(status)`` is truthy; that value (a hang is the hang guard's)."""

    async def picked():
        try:
            st = await env.status()
        except (aiohttp.ClientError, AssertionError):
            return None  # the service may be restarting
        return pick(st)

    return await until(picked, 0.2)


async def wait_no_probe_server(env: Env) -> None:
    await until(lambda: _no_probe_server(env), 0.2)


async def _no_probe_server(env: Env) -> bool:
    return await env.probe_server() is None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring")
    (tmp / "pause").touch()  # no probe until a test asks for one
    chp_api, chp_token, metrics_token = (
        f"http://127.0.0.1:{free_port()}",
        secrets.token_hex(16),
        secrets.token_hex(8),
    )
    async with KubeSim(kubelet="process", workdir=tmp / "sim", kubelet_options={"first_ip": FIRST_IP}) as sim:
        profiles = tmp / "profiles.yml"
        profiles.write_text(yaml.safe_dump(catalogue(), sort_keys=False))
        config = apex_hub_config(sim.url, profiles, IMAGE) + CONFIG.format(
            chp_api=chp_api,
            acc_port=free_port(),
            python=sys.executable,
            port=free_port(),
            ready=READY_TIMEOUT,
            proxy=PROXY_TIMEOUT,
            kernel=KERNEL_TIMEOUT,
            stale=STALE_AFTER,
            clock=tmp / "clock",
            pause=tmp / "pause",
            state=tmp / "state",
            kubeconfig=sim.kubeconfig_path,
            metrics_token=metrics_token,
        )
        async with HubProcess(
            tmp / "hub", config, env={"KUBECONFIG": sim.kubeconfig_path, "CONFIGPROXY_AUTH_TOKEN": chp_token}
        ) as hub:
            yield Env(sim, hub, tmp, chp_api, chp_token, metrics_token)


def metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + want + '}') if want else ''} (\S+)$"
    m = re.search(pattern, text, re.M)
    assert m, f"{name}{labels} not in metrics:\n{text}"
    return float(m.group(1))


async def test_healthy_probe(env):
    result = await env.probe_once()
    # the service made the probe group (no load_groups: an authenticator may manage groups) with the
    # probe user in it (what accounting excludes)
    status, group = await env.hub.api("GET", "/groups/apex-probe")
    assert status == 200 and group["users"] == [PROBE], group
    assert result["status"] == "OK", (result["message"], result["events"], env.hub.log()[-8000:])
    assert result["code"] == 0 and result["failed_phase"] is None
    assert list(result["phases"]) == ["spawn_request", "server_ready", "proxy", "kernel", "stop"], result
    assert all(v >= 0 for v in result["phases"].values())
    assert result["profile"] == "probe"
    await wait_no_probe_server(env)  # cleaned up

    # the pod ran the probe profile, and the probe's token is gone
    namespaces = [r.namespace for r in env.sim.requests if r.verb == "create" and r.resource == "pods"]
    assert namespaces and all("apex-probe" in ns for ns in namespaces), namespaces
    _, tokens = await env.hub.api("GET", f"/users/{PROBE}/tokens")
    assert [t for t in tokens["api_tokens"] if "apex-monitoring" in (t.get("note") or "")] == [], tokens

    st = await poll(
        lambda s: (
            s
            if set(s["components"]) >= {"hub_api", "proxy", "proxy_routes", "kubernetes", "services"}
            else None
        ),
        env,
    )
    assert st["probe"]["status"] == "OK", st["probe"]
    for name, check in st["components"].items():
        assert check["status"] == "OK", (name, check)
    assert "apex-accounting" in st["components"]["services"]["message"]
    assert "apex-culler" in st["components"]["services"]["message"]
    assert st["status"] == "OK" and st["code"] == 0, st
    assert st["history"][0]["id"] == result["id"]

    text = await env.metrics()
    assert metric(text, "apex_monitoring_probe_success") == 1
    assert metric(text, "apex_monitoring_probe_runs_total", result="OK") >= 1
    for phase in ("spawn_request", "server_ready", "proxy", "kernel", "stop"):
        assert metric(text, "apex_monitoring_probe_phase_seconds_count", phase=phase) >= 1
        assert metric(text, "apex_monitoring_probe_last_phase_seconds", phase=phase) >= 0
    assert metric(text, "apex_monitoring_probe_seconds_since_last_success") < STALE_AFTER * 10
    assert metric(text, "apex_monitoring_component_up", component="kubernetes") == 1

    # /metrics wants the bearer token; status.json and the page are open
    async with aiohttp.ClientSession() as s:
        async with s.get(env.base + "metrics") as r:
            assert r.status == 401
        async with s.get(env.base + "metrics", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with s.get(env.base) as r:
            assert r.status == 200 and "Recent probes" in await r.text()


async def test_broken_image_is_critical(env):
    env.set_probe_profile(image=IMAGE.rsplit(":", 1)[0] + ":broken")
    result = await env.probe_once()
    assert result["status"] == "CRITICAL", result
    assert result["failed_phase"] == "server_ready", result
    assert result["message"].startswith("server_ready: spawn failed:"), result["message"]
    # "Failed to pull image ..." or "Back-off pulling image ...", whichever event the spawn reported first
    assert re.search(r"pull(ing)? image \"[^\"]+:broken\"", result["message"], re.I), result["message"]
    assert "stop" in result["phases"]  # and cleaned up
    await wait_no_probe_server(env)
    text = await env.metrics()
    assert metric(text, "apex_monitoring_probe_success") == 0
    assert metric(text, "apex_monitoring_probe_status") == 2
    assert metric(text, "apex_monitoring_probe_runs_total", result="CRITICAL") >= 1


async def test_stuck_pod_is_critical_after_the_ready_timeout(env):
    env.set_probe_profile(image=IMAGE.rsplit(":", 1)[0] + ":stuck")
    accepted = env.log_count(SPAWN_ACCEPTED)

    def stalled() -> bool:  # the probe waits for its server, whose pod never gets past its image pull
        pod = env.probe_pod()
        return (
            env.log_count(SPAWN_ACCEPTED) > accepted
            and pod is not None
            and pod.phase == "Pending"
            and not pod.tasks
            and not pod.stopping
            and all(
                c["state"].get("waiting", {}).get("reason") == "ContainerCreating" for c in pod.main.values()
            )
        )

    result, moved = await env.probe_and(stalled, READY_TIMEOUT)
    assert moved, result
    assert result["status"] == "CRITICAL", result
    assert result["failed_phase"] == "server_ready", result
    assert f"server not ready after {READY_TIMEOUT}s" in result["message"], result["message"]
    assert "server_ready" not in result["phases"] and "stop" in result["phases"]
    await wait_no_probe_server(env)
    st = await env.status()
    assert st["probe"]["status"] == "CRITICAL" and st["status"] == "CRITICAL", st["probe"]


async def test_dead_proxy_route_is_critical(env):
    env.set_probe_profile()
    # a stale route in configurable-http-proxy: the probe's status path goes to an address nobody serves
    status, body = await env.chp(
        "POST", f"/user/{PROBE}/api/status", {"target": f"http://127.0.0.1:{free_port()}"}
    )
    assert status == 201, body
    refused = env.log_count(f"503 GET /user/{PROBE}/api/status")
    try:  # once the proxy has answered the probe 503, its retries run out at once
        result, moved = await env.probe_and(
            lambda: env.log_count(f"503 GET /user/{PROBE}/api/status") > refused, PROXY_TIMEOUT
        )
    finally:
        assert (await env.chp("DELETE", f"/user/{PROBE}/api/status"))[0] == 204
    assert moved, result
    assert result["status"] == "CRITICAL", result
    assert result["failed_phase"] == "proxy", result
    assert "dead proxy route" in result["message"] and "HTTP 503" in result["message"], result["message"]
    assert (
        "server_ready" in result["phases"] and "proxy" not in result["phases"]
    )  # the server itself was fine
    await wait_no_probe_server(env)


async def test_missing_proxy_route_is_critical(env):
    # what configurable-http-proxy does without the probe's route: its default route sends the request
    # to the hub (here only for the status path, so that the hub cannot re-add it under the probe)
    status, body = await env.chp(
        "POST", f"/user/{PROBE}/api/status", {"target": f"http://127.0.0.1:{env.hub.hub_port}"}
    )
    assert status == 201, body
    redirected = env.log_count(f"302 GET /user/{PROBE}/api/status")
    try:  # once the hub has answered the probe's status request, its retries run out at once
        result, moved = await env.probe_and(
            lambda: env.log_count(f"302 GET /user/{PROBE}/api/status") > redirected, PROXY_TIMEOUT
        )
    finally:
        assert (await env.chp("DELETE", f"/user/{PROBE}/api/status"))[0] == 204
    assert moved, result
    assert result["status"] == "CRITICAL" and result["failed_phase"] == "proxy", result
    assert result["message"].startswith(
        "proxy: no proxy route to the probe's server: "
        f"GET /user/{PROBE}/api/status reached the hub (HTTP 302 to /hub/"
    ), result["message"]
    await wait_no_probe_server(env)


async def test_dead_kernel_is_a_warning(env):
    env.set_probe_profile(**DEAD_KERNEL)

    async def kernel_died() -> bool:  # the probe's kernel exited and the server restarts it
        return "KernelRestarter: restarting kernel" in await env.probe_pod_log()

    result, moved = await env.probe_and(kernel_died, KERNEL_TIMEOUT)
    assert moved, result
    assert result["status"] == "WARNING", result
    assert result["failed_phase"] == "kernel", result
    assert result["message"].startswith("kernel: kernel 'python3'"), result["message"]
    assert {"server_ready", "proxy", "stop"} <= set(result["phases"]) and "kernel" not in result["phases"]
    await wait_no_probe_server(env)
    env.set_probe_profile()


async def test_proxy_routes_against_the_hubs_servers(env):
    def routes_check(code: int, text: str):
        return lambda st: (
            st
            if st["components"]["proxy_routes"]["code"] == code
            and text in st["components"]["proxy_routes"]["message"]
            else None
        )

    # a route for a server the hub does not run: WARNING
    ghost = {
        "target": f"http://127.0.0.1:{free_port()}",
        "jupyterhub": True,
        "user": "ghost",
        "server_name": "",
    }
    assert (await env.chp("POST", "/user/ghost", ghost))[0] == 201
    try:
        await poll(routes_check(1, "proxy routes for servers the hub does not run: /user/ghost/"), env)
    finally:
        assert (await env.chp("DELETE", "/user/ghost"))[0] == 204
    # a running server whose route is gone: CRITICAL
    assert (await env.hub.api("POST", "/users/alice"))[0] == 201
    status, body = await env.hub.api("POST", "/users/alice/server", json={"profile": "lab"})
    assert status in (201, 202), body
    await env.hub.wait_ready("alice")
    await poll(routes_check(0, "1 running server(s), all routed"), env)
    assert (await env.chp("DELETE", "/user/alice"))[0] == 204
    st = await poll(routes_check(2, "running servers without a proxy route: alice/"), env)
    assert st["code"] == 2 and "proxy_routes: running servers without a proxy route" in st["message"]
    assert metric(await env.metrics(), "apex_monitoring_component_up", component="proxy_routes") == 0
    assert (await env.hub.api("DELETE", "/users/alice/server"))[0] in (202, 204)
    await poll(routes_check(0, "0 running server(s), all routed"), env)


async def test_a_stale_result_turns_critical(env):
    assert env.pause.exists()  # no probe runs: the last result ages
    env.advance(STALE_AFTER)  # instead of waiting that long
    st = await poll(
        lambda s: s if s["probe"]["code"] == 2 and "stale" in s["probe"]["message"] else None, env
    )
    assert st["code"] == 2 and st["status"] == "CRITICAL"
    assert "last probe result is stale" in st["message"], st["message"]
    assert metric(await env.metrics(), "apex_monitoring_probe_stale") == 1


async def test_a_killed_service_cleans_up_after_restart(env):
    env.set_probe_profile()
    env.pause.unlink()
    try:

        async def serving():  # the probe's server exists and is not being stopped
            srv = await env.probe_server()
            return srv and srv.get("pending") != "stop"

        await until(serving, 0.1)
    finally:
        env.pause.touch()  # the restarted service must clean up, not probe
    status, model = await env.hub.api("GET", f"/services/{SERVICE}")
    assert status == 200 and model["pid"], model
    os.kill(model["pid"], signal.SIGKILL)

    # the hub restarts its managed service; the new process stops the probe server left behind
    st = await poll(lambda s: s if "stopped the probe server" in s["startup_cleanup"] else None, env)
    assert "deleted 1 probe token(s)" in st["startup_cleanup"], st["startup_cleanup"]
    await wait_no_probe_server(env)
    _, new = await env.hub.api("GET", f"/services/{SERVICE}")
    assert new["pid"] != model["pid"]
    assert len(st["history"]) >= 6  # kept across the restart (state_dir)


async def test_status_page_in_chromium(env):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    result = await env.probe_once()
    assert result["status"] == "OK", result
    await poll(lambda s: s if s["status"] == "OK" else None, env)
    SHOTS.mkdir(parents=True, exist_ok=True)

    def browse() -> dict:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                response = page.goto(env.base)
                page.screenshot(path=str(SHOTS / "status-page.png"), full_page=True)
                rows = page.eval_on_selector_all(
                    "#history tr.probe",
                    "rs => rs.map(r => [...r.querySelectorAll('td')].map(td => td.innerText))",
                )
                return {
                    "status": response.status,
                    "title": page.title(),
                    "overall": page.inner_text("#overall .badge"),
                    "components": page.eval_on_selector_all(
                        "#components tr[data-component]", "rs => rs.map(r => r.dataset.component)"
                    ),
                    "rows": rows,
                }
            finally:
                browser.close()

    seen = await asyncio.to_thread(browse)
    assert seen["status"] == 200
    assert seen["overall"] == "OK" and seen["title"].endswith(": OK"), seen
    assert {"hub_api", "proxy", "proxy_routes", "kubernetes", "services"} <= set(seen["components"]), seen
    rows = seen["rows"]
    assert rows[0][0] == str(result["id"]) and rows[0][2] == "OK", rows[0]
    results = {r[2] for r in rows}
    assert {"OK", "CRITICAL", "WARNING"} <= results, rows
    # phase timings in the columns, the failed phase marked, the message last
    assert re.fullmatch(r"\d+\.\d\ds", rows[0][3]), rows[0]
    dead_kernel = next(r for r in rows if r[2] == "WARNING")
    assert dead_kernel[3 + 3] == "failed" and "kernel 'python3'" in dead_kernel[-1], dead_kernel
    assert (SHOTS / "status-page.png").stat().st_size > 10_000
