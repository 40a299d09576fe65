"""Start a real JupyterHub process (with configurable-http-proxy) for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import textwrap
from pathlib import Path

import aiohttp

from apex_hub.local import free_port
from apex_hub.localpod import SLOW_IMPORT
from tests.helpers.wait import until


class HubProcess:
    """``async with HubProcess(tmp_path, config_text, env) as hub:`` then ``await hub.api(...)``."""

    def __init__(self, workdir: Path, config: str, env: dict | None = None):
        self.workdir = Path(workdir)
        self.port, self.hub_port = free_port(), free_port()
        self.token = secrets.token_hex(16)
        self.config = config
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = self.workdir / "jupyterhub.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config_file(self) -> Path:
        base = f"""
        c = get_config()  # noqa
        c.JupyterHub.ip = "127.0.0.1"
        c.JupyterHub.port = {self.port}
        c.JupyterHub.hub_ip = "127.0.0.1"
        c.JupyterHub.hub_port = {self.hub_port}
        c.JupyterHub.hub_connect_ip = "127.0.0.1"
        c.JupyterHub.db_url = "sqlite:///{self.workdir}/jupyterhub.sqlite"
        c.JupyterHub.cookie_secret_file = "{self.workdir}/cookie_secret"
        c.ConfigurableHTTPProxy.pid_file = "{self.workdir}/proxy.pid"
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
        c.JupyterHub.cleanup_servers = True
        c.JupyterHub.services = [{{"name": "tester", "api_token": "{self.token}"}}]
        c.JupyterHub.load_roles = [{{"name": "tester", "services": ["tester"],
            "scopes": ["admin:users", "admin:servers", "access:servers", "list:users", "read:users"]}}]
        """
        path = self.workdir / "jupyterhub_config.py"
        path.write_text(textwrap.dedent(base) + textwrap.dedent(self.config))
        return path

    async def start(self) -> HubProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._config_file()
        env = {**os.environ, **self.env}
        node_bin = Path(__file__).resolve().parents[2] / "node_modules" / ".bin"
        env["PATH"] = f"{node_bin}:{Path(sys.executable).parent}:{env.get('PATH', '')}"
        if not shutil.which("configurable-http-proxy", path=env["PATH"]):
            raise RuntimeError("configurable-http-proxy not found: run scripts/setup.sh")
        self._log = open(self.log_path, "wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HUB_MAIN,
            "-f",
            str(config),
            cwd=self.workdir,
            env=env,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )

        async def answering() -> bool:
            if self.proc.returncode is not None:
                raise RuntimeError(f"jupyterhub exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return (await self.api("GET", "/"))[0] == 200
            except aiohttp.ClientError:
                return False

        await until(answering, interval=0.2)  # no deadline: the suite's hang guard ends a hang
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def api(self, method: str, path: str, **kw):
        headers = {"Authorization": f"token {self.token}"}
        async with aiohttp.ClientSession() as s:
            async with s.request(method, f"{self.url}/hub/api{path}", headers=headers, **kw) as r:
                body = (
                    await r.json(content_type=None)
                    if r.content_type == "application/json"
                    else await r.text()
                )
                return r.status, body

    async def request(self, method: str, path: str, **kw):
        """A request through the proxy (e.g. ``/user/alice/api/status``) with the tester's token."""
        headers = {"Authorization": f"token {self.token}"}
        async with aiohttp.ClientSession() as s:
            async with s.request(
                method, f"{self.url}{path}", headers=headers, allow_redirects=False, **kw
            ) as r:
                return r.status, await r.text()

    async def get(self, path: str, **kw):
        return await self.request("GET", path, **kw)

    async def login(self, session: aiohttp.ClientSession, user: str, password: str = "x") -> None:
        """Log ``user`` in through the hub's login form in ``session`` (a ``CookieJar(unsafe=True)``
        session); the redirect to their server is not followed."""
        import re

        async with session.get(f"{self.url}/hub/login") as r:
            xsrf = (
                r.cookies["_xsrf"].value
                if "_xsrf" in r.cookies
                else re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)
            )
        async with session.post(
            f"{self.url}/hub/login",
            data={"username": user, "password": password, "_xsrf": xsrf},
            allow_redirects=False,
        ) as r:
            assert r.status == 302, await r.text()  # logged in

    async def wait_ready(self, user: str, server: str = "") -> dict:
        """The model of ``user``'s ``server`` once the hub says it is ready (no deadline: a server that
        never gets ready is a hang, which the suite's hang guard ends; the hub's log is then shown)."""

        async def ready() -> dict | None:
            if self.proc.returncode is not None:
                raise RuntimeError(f"jupyterhub exited with {self.proc.returncode}:\n{self.log()}")
            status, model = await self.api("GET", f"/users/{user}")
            srv = (model.get("servers") or {}).get(server) if status == 200 else None
            return srv if srv and srv.get("ready") else None

        return await until(ready, interval=0.2)

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:  # the hub and what it started (its session): services, proxy
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        pidfile = self.workdir / "proxy.pid"
        if pidfile.exists():  # the hub stops its proxy, but not if it was killed
            try:
                os.kill(int(pidfile.read_text().strip()), 15)
            except (ValueError, ProcessLookupError):
                pass
        if getattr(self, "_log", None):
            self._log.close()

    async def __aenter__(self):
        try:
            return await self.start()
        except BaseException:
            await self.stop()  # never leave a half-started hub (and its proxy) behind
            raise

    async def __aexit__(self, exc_type, exc, tb):
        await self.stop()
        if exc_type is not None:  # the test failed (or hung and was ended): what the hub said, in its report
            print(f"--- the end of {self.log_path}:\n{self.log()[-6000:]}", file=sys.stderr)


#: ``python -m jupyterhub``, without jsonschema's ``iri`` format checker (rfc3987-syntax: over a second
#: of CPU at import in every hub; no schema of the hub uses those formats, see apex_hub.localpod)
HUB_MAIN = (
    f"import sys; sys.modules.setdefault({SLOW_IMPORT!r}, None); sys.argv[0] = 'jupyterhub'; "
    "from jupyterhub.app import main; main()"
)

#: config lines: the hub looks after its managed services' processes every second instead of every
#: ``Spawner.poll_interval`` (30 s), which JupyterHub gives the spawner it makes for each service whatever
#: the config says: a killed service is restarted at once. A private class of JupyterHub's; without it
#: (another version) the tests only wait longer.
SERVICES_POLLED_EVERY_SECOND = """
import jupyterhub.services.service as _services
from traitlets import Integer as _Integer
if hasattr(_services, "_ServiceSpawner"):
    class _PolledEverySecond(_services._ServiceSpawner):
        poll_interval = _Integer(1)
    _services._ServiceSpawner = _PolledEverySecond
"""

ROOT_ARGS = ["--allow-root"] if os.geteuid() == 0 else []


#: the pods' command with ``fast_start``: local mode's wrapper, which runs ``jupyterhub-singleuser`` in its own
#: process without jsonschema's slow ``rfc3987_syntax`` import (kubesim runs ``python`` as its interpreter)
FAST_START_CMD = ["python", "-m", "apex_hub.localpod"]


def apex_hub_config(
    sim_url: str,
    profiles: str,
    image: str = "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0",
    *,
    fast_start: bool = True,
) -> str:
    """Config lines for a hub with APExSpawner on a process-mode kubesim at ``sim_url``.

    Groups are made through the REST API (the tester gets ``admin:groups``); the kubelet runs pods as
    its own user, so as root (CI) Jupyter is told that is fine; Conda environments use the venv
    builder (no channel is reachable here).

    ``fast_start`` (the default): the servers start as in local mode, about 1-2 s sooner each: the pod
    runs ``jupyterhub-singleuser`` through :mod:`apex_hub.localpod` (in one interpreter, without a
    second's worth of imports no Jupyter schema needs), and ``APExSpawner.server_ready_poll`` finds it
    listening within 0.1 s instead of JupyterHub's check backing off to 5 s between tries. False: the
    pods run ``jupyterhub-singleuser`` itself and JupyterHub's check alone finds them.
    """
    cmd = FAST_START_CMD if fast_start else ["jupyterhub-singleuser"]
    return f"""
c.JupyterHub.spawner_class = "apex"
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.load_roles[0]["scopes"].append("admin:groups")
c.APExSpawner.k8s_api_host = "{sim_url}"
c.APExSpawner.image = "{image}"
c.APExSpawner.cmd = {cmd!r}
c.APExSpawner.args = {ROOT_ARGS!r}
c.APExSpawner.profiles_file = "{profiles}"
c.APExSpawner.conda_builder = "venv"
c.APExSpawner.hub_namespace = "jhub"
c.APExSpawner.start_timeout = 90
c.APExSpawner.http_timeout = 90
c.APExSpawner.server_ready_poll = {0.1 if fast_start else 0}
"""
