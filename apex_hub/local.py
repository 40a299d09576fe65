"""Local mode: the whole APEx hub on a laptop, no cluster (``apex-hub local``).

Starts kubesim (process kubelet) in this process, writes a ``jupyterhub_config.py`` into
the work directory and runs a real ``python -m jupyterhub`` (with its
configurable-http-proxy) on 127.0.0.1, using the production classes
(``spawner_class = "apex"``), a profiles catalogue (``apex_hub/localdata/profiles.yml``,
shipped in the wheel, by default), SQLite, the three hub-managed services (culler,
accounting, monitoring) with demo policies, the APEx branding, and a clearly labelled demo
login: a shared password and three demo users with groups. Every user server is a real
``jupyterhub-singleuser`` process on its pod's own 127.0.0.N address, started through
``apex_hub.localpod`` (a workspace's PATH and shell).

Login goes through the production ``APExOIDCAuthenticator`` against a real local OpenID
provider (``apex_hub.localidp``: oidc-provider on Node.js) holding the demo users and their
groups; with ``--login password``, or when Node.js or oidc-provider is missing, JupyterHub's
shared-password login stands in (clearly labelled).

SIGINT/SIGTERM stop the hub (which stops the user servers and its proxy), then kubesim
(which ends any pod process left), then anything still in the hub's process group.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import textwrap
from pathlib import Path

import aiohttp

from .localsetup import NPM_COMMAND, check_node_modules, check_python, oidc_hint, proxy_or_exit

DATA = Path(__file__).resolve().parent / "localdata"
DEFAULT_PROFILES = DATA / "profiles.yml"
CULLING_POLICY = DATA / "culling.yaml"
QUOTAS = DATA / "quotas.yaml"
DEMO_GROUPS = {"apex-small": {"users": ["alice"]}, "apex-large": {"users": ["bob"]}}
DEMO_USERS = {"alice": "apex-small", "bob": "apex-large", "carol": "no group"}
CLIENT_ID = "apex-hub-local"
LOGIN_SERVICE = "APEx local identity provider"
IMAGE = "ghcr.io/esa-apex/apex-jupyterlab:2025.1"  # a label only: kubesim runs local processes
HUB_NAMESPACE = "jhub"
LAB_OFFLINE_ARGS = [
    "--LabApp.news_url=None",
    "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
]
STOP_GRACE = 15.0  # seconds the hub gets to stop its servers and proxy
PROBE_INTERVAL = 300  # seconds between the monitoring probe's spawns
SERVICE_LINKS = [("Usage", "/services/apex-accounting/"), ("Status", "/services/apex-monitoring/")]
LOGIN_HINT = (
    "<strong>Local demo.</strong> Sign in as <code>alice</code> (group apex-small), <code>bob</code>"
    " (apex-large) or <code>carol</code> (no group), with the demo password printed where"
    " <code>apex-hub local</code> runs."
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "local",
        help="run the whole hub locally: kubesim + JupyterHub + APExSpawner",
        description="Run a real JupyterHub with APExSpawner on kubesim (process kubelet) "
        "on 127.0.0.1, with a local demo login. Ctrl-C stops everything.",
    )
    p.add_argument(
        "--port", type=int, default=8000, help="the hub's public port on 127.0.0.1 (default %(default)s)"
    )
    p.add_argument(
        "--workdir",
        default=None,
        help="where the hub config, SQLite database, logs, pods and volumes live "
        "(default: a temporary directory, deleted on exit with every workspace in it)",
    )
    p.add_argument(
        "--profiles",
        default=None,
        help="profiles catalogue (default: the demo catalogue shipped with apex-hub, "
        "apex_hub/localdata/profiles.yml)",
    )
    p.add_argument(
        "--password",
        default=None,
        help="the shared demo password (default: a random one, printed at start-up)",
    )
    p.add_argument(
        "--login",
        choices=("oidc", "password"),
        default="oidc",
        help="oidc (default): the APEx OIDC authenticator against a local OpenID provider "
        "(needs Node.js and the npm package oidc-provider, see --node-modules); password: "
        "JupyterHub's shared-password login",
    )
    p.add_argument(
        "--node-modules",
        default=None,
        metavar="DIR",
        help="the node_modules directory holding configurable-http-proxy and oidc-provider "
        "(default: $APEX_HUB_NODE_MODULES, ./node_modules, the source checkout's; "
        f"install them with: {NPM_COMMAND})",
    )
    p.add_argument(
        "--branding",
        default="apex",
        metavar="apex|none|DIR",
        help="the hub pages' look: apex (default), none (JupyterHub's own) or a directory with "
        "templates/ and a logo (see apex_hub.branding)",
    )


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_start() -> int:
    """The first port the kernel gives outgoing connections (net.ipv4.ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


#: The hub's, the proxy's and the services' ports come from below the kernel's ephemeral range, each once
#: per process (from an offset of the process's own): a port the kernel picks (bind to 0) is free when
#: picked, but any process's outgoing connection may take it as its local port before the server binds it
#: (configurable-http-proxy then fails with EADDRINUSE). Below that range only servers bind.
_PORTS_LOW = 10000
_PORTS_HIGH = min(_ephemeral_start(), 32768)
_next_port = _PORTS_LOW + (os.getpid() * 97) % max(_PORTS_HIGH - _PORTS_LOW, 1)


def free_port() -> int:
    """A loopback port no other server of this process was given, outside the ephemeral range."""
    global _next_port
    span = _PORTS_HIGH - _PORTS_LOW
    if span < 1000:  # an unusual ephemeral range: let the kernel choose
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for _ in range(span):
        port = _next_port
        _next_port = _PORTS_LOW + (_next_port + 1 - _PORTS_LOW) % span
        if _port_free(port):
            return port
    raise RuntimeError(f"no free loopback port in {_PORTS_LOW}-{_PORTS_HIGH}")


def _authenticator_config(password: str) -> str:
    """JupyterHub's shared-password login (DummyAuthenticator.password before JupyterHub 5.3)."""
    eps = importlib.metadata.entry_points(group="jupyterhub.authenticators")
    if any(ep.name == "shared-password" for ep in eps):
        return (
            f'c.JupyterHub.authenticator_class = "shared-password"\n'
            f"c.SharedPasswordAuthenticator.user_password = {password!r}\n"
        )
    return f'c.JupyterHub.authenticator_class = "dummy"\nc.DummyAuthenticator.password = {password!r}\n'


def _oidc_config(issuer: str, client_secret: str, port: int) -> str:
    """The production authenticator, pointed at the local provider."""
    return (
        f"from apex_hub.auth import configure\n"
        f"configure(c, oidc_issuer={issuer!r}, client_id={CLIENT_ID!r}, client_secret={client_secret!r},\n"
        f"          oauth_callback_url='http://127.0.0.1:{port}/hub/oauth_callback',\n"
        f"          login_service={LOGIN_SERVICE!r}, allowed_users={set(DEMO_USERS)!r})\n"
    )


def demo_idp_users(password: str) -> list[dict]:
    """The demo users as the local provider knows them: groups come from the ``groups`` claim."""
    groups = {user: [g for g, spec in DEMO_GROUPS.items() if user in spec["users"]] for user in DEMO_USERS}
    return [
        {
            "username": user,
            "password": password,
            "claims": {
                "preferred_username": user,
                "name": user.title(),
                "email": f"{user}@example.org",
                "groups": groups[user],
            },
        }
        for user in DEMO_USERS
    ]


def services_config(workdir: Path, ports: dict[str, int], kubeconfig: Path) -> str:
    """The culler, accounting and monitoring, as the Helm values have them, with demo policies."""
    state = workdir / "services"
    culler = {
        "policy": str(CULLING_POLICY),
        "state_dir": str(state / "culler"),
        "interval": 20,
        "warn_before": "4h",
        "url": f"http://127.0.0.1:{ports['culler']}",
    }  # conda's 4h max-age: warned at once
    accounting = {
        "url": f"http://127.0.0.1:{ports['accounting']}",
        "state_dir": str(state / "accounting"),
        "culler_state_dir": str(state / "culler"),
        "quotas": str(QUOTAS),
        "quota_stop": True,
        "interval": 10,
    }  # the usage page knows a user's groups from the last round: keep it fresh
    monitoring = {
        "profile": "jupyterlab",
        "url": f"http://127.0.0.1:{ports['monitoring']}",
        "interval": PROBE_INTERVAL,
        "state_dir": str(state / "monitoring"),
        "kubernetes": str(kubeconfig),
    }
    for d in ("culler", "accounting", "monitoring"):
        (state / d).mkdir(parents=True, exist_ok=True)
    return (
        f"from apex_hub.services import configure as configure_services\n"
        f"configure_services(c, culler={culler!r},\n"
        f"                   accounting={accounting!r},\n"
        f"                   monitoring={monitoring!r})\n"
    )


def hub_config(
    *,
    workdir: Path,
    port: int,
    hub_port: int,
    proxy_api_port: int,
    k8s_url: str,
    profiles: Path,
    password: str,
    oidc: tuple[str, str] | None = None,
    proxy: str = "configurable-http-proxy",
    service_ports: dict[str, int] | None = None,
    branding: str = "apex",
) -> str:
    """The ``jupyterhub_config.py`` of local mode (``oidc``: issuer and client secret).

    ``service_ports`` (culler, accounting, monitoring): run the three services; ``branding``: see
    :func:`apex_hub.branding.configure`.
    """
    if oidc:
        login = _oidc_config(*oidc, port=port)
    else:
        login = (
            _authenticator_config(password) + f"c.Authenticator.allowed_users = {set(DEMO_USERS)!r}\n"
            f"c.JupyterHub.load_groups = {DEMO_GROUPS!r}\n"
        )
    root_args = ["--allow-root"] if os.geteuid() == 0 else []
    services = (
        (
            "\n# -- the hub-managed services, with demo policies --\n"
            + services_config(workdir, service_ports, workdir / "kubeconfig")
        )
        if service_ports
        else ""
    )
    brand = (
        f"\n# -- the hub's look (apex_hub.branding) --\n"
        f"from apex_hub.branding import configure as configure_branding\n"
        f"configure_branding(c, {branding!r}, login_hint={LOGIN_HINT!r},\n"
        f"                   links={SERVICE_LINKS if service_ports else []!r})\n"
    )
    return (
        textwrap.dedent(f"""\
        # Written by `apex-hub local`: LOCAL DEMO ONLY, not for production.
        c = get_config()  # noqa

        # -- the hub and its proxy, on loopback only --
        c.JupyterHub.ip = "127.0.0.1"
        c.JupyterHub.port = {port}
        c.JupyterHub.hub_ip = "127.0.0.1"
        c.JupyterHub.hub_port = {hub_port}
        c.JupyterHub.hub_connect_ip = "127.0.0.1"
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
        c.ConfigurableHTTPProxy.command = [{proxy!r}]
        c.ConfigurableHTTPProxy.pid_file = {str(workdir / "proxy.pid")!r}
        c.JupyterHub.db_url = {"sqlite:///" + str(workdir / "jupyterhub.sqlite")!r}
        c.JupyterHub.cookie_secret_file = {str(workdir / "jupyterhub_cookie_secret")!r}
        c.JupyterHub.cleanup_servers = True
        c.JupyterHub.cleanup_proxy = True
        # always show the progress page (the spawner's own messages), even for a fast start; a
        # tornado setting of the hub's handlers, not a JupyterHub option
        c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}

        # -- LOCAL DEMO LOGIN: demo users with one password; not for production --
        {login.replace(chr(10), chr(10) + " " * 8).rstrip()}

        # -- the production spawner, on kubesim --
        c.JupyterHub.spawner_class = "apex"
        c.APExSpawner.k8s_api_host = {k8s_url!r}
        c.APExSpawner.image = {IMAGE!r}
        # a workspace's PATH (its environments, this venv) and shell, then jupyterhub-singleuser; run by
        # this very Python (a bare "python" would be whatever the PATH finds first, maybe without apex-hub)
        c.APExSpawner.cmd = [{sys.executable!r}, "-m", "apex_hub.localpod"]
        # kubesim runs pods as its own user; when that is root, Jupyter must be told it is fine.
        # No calls home from JupyterLab (news feed, update check): local mode stays on loopback.
        c.APExSpawner.args = {root_args + LAB_OFFLINE_ARGS!r}
        c.APExSpawner.profiles_file = {str(profiles)!r}
        c.APExSpawner.conda_builder = "venv"  # no Conda channel needed
        c.APExSpawner.hub_namespace = {HUB_NAMESPACE!r}
        c.APExSpawner.workspace_volume = {{"name": "workspace", "size": "1Gi", "mount_path": "/home/jovyan"}}
        c.APExSpawner.start_timeout = 120
        c.APExSpawner.http_timeout = 120
        c.APExSpawner.server_ready_poll = 0.1  # found listening within 0.1 s, not JupyterHub's 1-5 s
        """)
        + _fast_start_config()
        + services
        + brand
    )


def _fast_start_config() -> str:
    """``APEX_LOCAL_FAST_START=0`` here: servers start and are found as before the speed-ups (the pods
    exec the server, :mod:`apex_hub.localpod`; no port polling, ``APExSpawner.server_ready_poll``)."""
    from .localpod import FAST_START_ENV

    if os.environ.get(FAST_START_ENV, "1") != "0":
        return ""
    return (
        f"c.APExSpawner.environment = {{{FAST_START_ENV!r}: '0'}}  # the servers start as before\n"
        "c.APExSpawner.server_ready_poll = 0  # and are found by JupyterHub's own check alone\n"
    )


def _say(message: str = "") -> None:
    print(message, flush=True)


class LocalHub:
    """kubesim + a JupyterHub subprocess; ``await run()`` until SIGINT/SIGTERM."""

    def __init__(
        self,
        *,
        port: int = 8000,
        workdir: str | os.PathLike | None = None,
        profiles: str | os.PathLike | None = None,
        password: str | None = None,
        login: str = "oidc",
        node_modules: str | os.PathLike | None = None,
        branding: str = "apex",
        services: bool = True,
    ):
        self.port = port
        self.login = login
        self.node_modules = node_modules
        self.branding = branding
        self.services = services
        self.proxy: str | None = None
        self.service_ports: dict[str, int] | None = None
        self.idp = None
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="apex-hub-local-")).resolve()
        self.profiles = Path(profiles or DEFAULT_PROFILES).resolve()
        self.password = password or secrets.token_urlsafe(9)
        self.sim = None
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = self.workdir / "jupyterhub.log"
        self._log = None
        self._crypt_key = secrets.token_hex(32)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _env(self) -> dict:
        node_bin = Path(self.proxy).parent
        path = os.pathsep.join(
            [str(node_bin), str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]
        )
        return {
            **os.environ,
            "PATH": path,
            "KUBECONFIG": str(self.sim.kubeconfig_path),
            "JUPYTERHUB_CRYPT_KEY": self._crypt_key,
        }

    def check(self) -> None:
        """Refuse to start (SystemExit with the fix) when a piece is missing or the port is taken."""
        check_python()
        check_node_modules(self.node_modules)
        self.proxy = proxy_or_exit(self.node_modules)
        from .branding import BrandingError, branding_dir

        try:
            branding_dir(self.branding)
        except BrandingError as exc:
            raise SystemExit(f"apex-hub local: --branding: {exc}") from None
        if not self.profiles.is_file():
            raise SystemExit(
                f"apex-hub local: no profiles catalogue at {self.profiles} (use --profiles FILE)"
            )
        if not _port_free(self.port):
            raise SystemExit(f"apex-hub local: port {self.port} on 127.0.0.1 is in use (use --port N)")

    async def start(self, timeout: float = 60) -> None:
        from .kubesim import KubeSim

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sim = KubeSim(
            kubelet="process", workdir=self.workdir / "kubesim", kubeconfig_path=self.workdir / "kubeconfig"
        )
        await self.sim.start()
        if self.proxy is None:
            self.proxy = proxy_or_exit(self.node_modules)
        env = self._env()
        oidc = await self._start_idp() if self.login == "oidc" else None
        config = self.workdir / "jupyterhub_config.py"
        self.service_ports = (
            {name: free_port() for name in ("culler", "accounting", "monitoring")} if self.services else None
        )
        config.write_text(
            hub_config(
                workdir=self.workdir,
                port=self.port,
                hub_port=free_port(),
                proxy_api_port=free_port(),
                k8s_url=self.sim.url,
                profiles=self.profiles,
                password=self.password,
                oidc=oidc,
                proxy=self.proxy,
                service_ports=self.service_ports,
                branding=self.branding,
            )
        )
        self._log = open(self.log_path, "ab")  # noqa: ASYNC230 - append-only local log, kept open for the hub
        # its own session: Ctrl-C reaches us only, and we stop the hub in order
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jupyterhub",
            "-f",
            str(config),
            cwd=self.workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as session:
            while loop.time() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"jupyterhub exited with {self.proc.returncode}:\n{self._tail()}")
                try:
                    async with session.get(
                        f"{self.url}hub/api/", timeout=aiohttp.ClientTimeout(total=2)
                    ) as r:
                        if r.status == 200:
                            return
                except (TimeoutError, aiohttp.ClientError):
                    pass
                await asyncio.sleep(0.25)
        raise RuntimeError(f"jupyterhub did not start in {timeout:.0f}s:\n{self._tail()}")

    async def _start_idp(self) -> tuple[str, str] | None:
        """The local OpenID provider with the demo users; ``None`` (password login) if it cannot run."""
        from .localidp import LocalIdP

        reason = LocalIdP.available(self.node_modules)
        if reason:
            _say(
                f"apex-hub local: no local OpenID provider ({reason}); using the shared-password login. "
                f"For the OIDC login, {oidc_hint()}"
            )
            self.login = "password"
            return None
        secret = secrets.token_urlsafe(24)
        base = f"http://127.0.0.1:{self.port}"
        client = {
            "client_id": CLIENT_ID,
            "client_secret": secret,
            "redirect_uris": [f"{base}/hub/oauth_callback"],
            "post_logout_redirect_uris": [f"{base}/hub/login"],
            "grant_types": ["authorization_code", "refresh_token"],
        }
        self.idp = LocalIdP(
            users=demo_idp_users(self.password),
            clients=[client],
            workdir=self.workdir / "idp",
            node_modules=self.node_modules,
        )
        await self.idp.start()
        return self.idp.issuer, secret

    def _tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def banner(self) -> None:
        _say("")
        _say("=" * 72)
        _say("  APEx hub, local mode: JupyterHub + APExSpawner on kubesim (no cluster)")
        _say(f"  Open: {self.url}")
        _say("")
        _say("  LOCAL DEMO LOGIN — not for production")
        if self.idp is not None:
            _say(f"  Login: APEx OIDC authenticator → local OpenID provider {self.idp.issuer}")
        else:
            _say("  Login: JupyterHub's shared-password login")
        _say(f"  Demo password (all users): {self.password}")
        for user, group in DEMO_USERS.items():
            _say(f"    {user:<6} ({group})")
        _say("")
        _say(f"  Profiles:   {self.profiles}")
        if self.services:
            _say(
                f"  Services:   usage {self.url}services/apex-accounting/ · status {self.url}services/apex-monitoring/"
            )
            _say(
                f"              culler: {CULLING_POLICY.name} (small: 10 idle minutes;"
                " conda: stopped after 4 h, warned on the hub's pages) · quota: "
                f"{QUOTAS.name} (apex-small: 2 CPU-hours a month) · probe every {PROBE_INTERVAL // 60} min"
            )
        if self._own_workdir:
            _say(f"  Work dir:   {self.workdir}")
            _say(
                "              TEMPORARY: deleted on exit, with every workspace in it (use --workdir DIR to keep them)"
            )
        else:
            _say(f"  Work dir:   {self.workdir}   (kept on exit: workspaces survive a restart)")
        _say(f"  Hub log:    {self.log_path}")
        _say(f"  KUBECONFIG: {self.workdir / 'kubeconfig'}   (kubectl works against kubesim)")
        _say("  Ctrl-C stops the hub, the proxy, kubesim and every server.")
        _say("=" * 72)

    async def stop(self) -> None:
        """The hub first (it stops the servers through kubesim, then its proxy), then kubesim."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            _say("apex-hub local: stopping JupyterHub (and the user servers) …")
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                _say("apex-hub local: JupyterHub did not stop in time; killing it")
                proc.kill()
                await proc.wait()
        if proc is not None:  # anything left in the hub's process group (its proxy)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        pidfile = self.workdir / "proxy.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
            except (ValueError, ProcessLookupError, PermissionError):
                pass
        if self.idp is not None:
            await self.idp.stop()
            self.idp = None
        if self.sim is not None:
            _say("apex-hub local: stopping kubesim (and any pod process left) …")
            await self.sim.stop()
            self.sim = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        _say("apex-hub local: stopped")

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            self.banner()
            hub_exit = asyncio.ensure_future(self.proc.wait())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait([hub_exit, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if hub_exit.done() and not stop.is_set():
                _say(f"apex-hub local: JupyterHub exited with {self.proc.returncode}:\n{self._tail()}")
                return 1
            return 0
        except RuntimeError as exc:
            _say(f"apex-hub local: {exc}")
            return 1
        finally:
            await self.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def run(args) -> int:
    hub = LocalHub(
        port=args.port,
        workdir=args.workdir,
        profiles=args.profiles,
        password=args.password,
        login=args.login,
        node_modules=args.node_modules,
        branding=args.branding,
    )
    try:
        hub.check()
    except SystemExit:
        if hub._own_workdir:
            shutil.rmtree(hub.workdir, ignore_errors=True)
        raise
    return asyncio.run(hub.run())
