"""Start, restart and stop the local OpenID Connect provider (``provider.mjs`` on Node.js).

The provider is the certified npm package ``oidc-provider`` (8.x) running as a separate ``node``
process on a loopback address; nothing about it is mocked. :class:`LocalIdP` writes its config file,
starts the process, waits until the discovery document answers and stops it again. State (sessions,
grants, refresh tokens) lives in the process memory: :meth:`LocalIdP.restart` keeps the port, the
issuer, the users and the clients but loses every session and grant.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import aiohttp

#: The oidc-provider release that scripts/setup.sh installs (8.x is the newest major supporting Node 20).
OIDC_PROVIDER_VERSION = "8.8.1"
#: Environment variable naming a ``node_modules`` directory that holds ``oidc-provider``.
NODE_MODULES_ENV = "APEX_HUB_NODE_MODULES"
#: Environment variable naming the ``node`` executable (default: ``node`` on PATH).
NODE_ENV = "APEX_HUB_NODE"

PROVIDER_SCRIPT = Path(__file__).with_name("provider.mjs")
LOGIN_TITLE = "APEx local identity provider"
LOGIN_ERROR = "Invalid user name or password."


class LocalIdPError(RuntimeError):
    """The local OpenID Connect provider could not be started (the message says why)."""


def generate_jwks(kid: str | None = None) -> dict:
    """A private JWKS with one new RSA-2048 signing key (``RS256``, ``use: sig``, ``kid`` set)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    jwk.pop("key_ops", None)  # ["sign"] would keep oidc-provider from verifying its own id_token_hint
    jwk.update(kid=kid or f"apex-local-{secrets.token_hex(4)}", alg="RS256", use="sig")
    return {"keys": [jwk]}


def public_jwks(private: dict) -> dict:
    """The public half of a private RSA/EC JWKS (private members dropped)."""
    private_members = {"d", "p", "q", "dp", "dq", "qi", "oth", "k", "key_ops"}
    return {"keys": [{k: v for k, v in key.items() if k not in private_members} for key in private["keys"]]}


def find_node() -> str | None:
    """The ``node`` executable: ``$APEX_HUB_NODE`` or ``node`` on PATH."""
    configured = os.environ.get(NODE_ENV)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("node")


def find_oidc_provider(node_modules: str | os.PathLike | None = None) -> Path | None:
    """The installed ``oidc-provider`` package directory.

    Looked up in ``node_modules`` (argument), then ``$APEX_HUB_NODE_MODULES``, then in every
    ``node_modules`` from this package's directory upwards (the repository checkout), then ./node_modules.
    """
    candidates: list[Path] = []
    for configured in (node_modules, os.environ.get(NODE_MODULES_ENV)):
        if configured:
            candidates.append(Path(configured))
    here = Path(__file__).resolve().parent
    candidates += [d / "node_modules" for d in (here, *here.parents)]
    candidates.append(Path.cwd() / "node_modules")
    for candidate in candidates:
        package = candidate / "oidc-provider"
        if (package / "package.json").is_file():
            return package
    return None


_available_cache: dict[tuple, str | None] = {}


def _package_entry(package: Path) -> tuple[str, Path]:
    """(version, ESM entry file) of an npm package, resolved like provider.mjs does."""
    meta = json.loads((package / "package.json").read_text())
    entry = meta.get("main") or "index.js"
    exports = meta.get("exports")
    dot = exports if isinstance(exports, str) else (exports or {}).get(".")
    if isinstance(dot, str):
        entry = dot
    elif isinstance(dot, dict):
        entry = dot.get("import") or dot.get("default") or entry
    return str(meta.get("version", "")), package / entry


def _check_available(node_modules: str | os.PathLike | None = None) -> str | None:
    node = find_node()
    if not node:
        return f"node (Node.js) not found on PATH (or ${NODE_ENV}); install Node.js 20+"
    package = find_oidc_provider(node_modules)
    if package is None:
        return (
            f"the npm package oidc-provider is not installed (run npm install oidc-provider@{OIDC_PROVIDER_VERSION}"
            f" where you start from, npm ci in a source checkout, or set ${NODE_MODULES_ENV} to the node_modules"
            " directory that holds it)"
        )
    try:
        version, entry = _package_entry(package)
    except (OSError, ValueError) as e:
        return f"cannot read {package / 'package.json'}: {e}"
    if version.split(".")[0] != OIDC_PROVIDER_VERSION.split(".")[0]:
        return (
            f"oidc-provider {version} is installed at {package}; provider.mjs is written for "
            f"{OIDC_PROVIDER_VERSION.split('.')[0]}.x (run npm install oidc-provider@{OIDC_PROVIDER_VERSION})"
        )
    key = (node, str(entry))
    if key not in _available_cache:
        probe = f"await import({json.dumps(entry.as_uri())});"
        try:
            done = subprocess.run(
                [node, "--input-type=module", "-e", probe],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            _available_cache[key] = f"cannot run {node}: {e}"
        else:
            _available_cache[key] = (
                None
                if done.returncode == 0
                else f"{node} cannot load oidc-provider from {package}: {done.stderr.strip()[-500:]}"
            )
    return _available_cache[key]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class LocalIdP:
    """A real OpenID Connect provider process on loopback (see the README, "Authentication").

    ``users``: ``[{"username", "password", "claims": {...}}]``; ``sub`` is the user name, every claim
    comes back in the ID token and from userinfo with scope ``openid``.
    ``clients``: oidc-provider client metadata (``client_id``, ``client_secret``, ``redirect_uris``,
    ``post_logout_redirect_uris``, ``grant_types``, ``token_endpoint_auth_method`` (default
    ``client_secret_basic``), ...), passed through as given.
    """

    def __init__(
        self,
        users: list[dict],
        clients: list[dict],
        host: str = "127.0.0.1",
        port: int = 0,
        access_token_ttl: int = 600,
        id_token_ttl: int = 600,
        refresh_token_ttl: int = 86400,
        rotate_refresh_tokens: bool = True,
        jwks: dict | None = None,
        workdir: str | os.PathLike | None = None,
        *,
        session_ttl: int = 86400,
        interaction_ttl: int = 600,
        node_modules: str | os.PathLike | None = None,
    ):
        self.users = self._check_users(users)
        self.clients = self._check_clients(clients)
        self.host = host
        self.port = int(port)
        self.ttl = {
            "AccessToken": int(access_token_ttl),
            "ClientCredentials": int(access_token_ttl),
            "IdToken": int(id_token_ttl),
            "RefreshToken": int(refresh_token_ttl),
            "Interaction": int(interaction_ttl),
            "Session": int(session_ttl),
            # a grant must outlive its refresh tokens, or refreshing fails with "grant is expired"
            "Grant": max(int(refresh_token_ttl), int(session_ttl)),
        }
        self.rotate_refresh_tokens = bool(rotate_refresh_tokens)
        self.private_jwks: dict = copy.deepcopy(jwks) if jwks else generate_jwks()
        self.node_modules = node_modules
        if workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="apex-localidp-"))
            self._cleanup_workdir = weakref.finalize(self, shutil.rmtree, str(self.workdir), True)
        else:
            self.workdir = Path(workdir)
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._cleanup_workdir = None
        self.log_path = self.workdir / "provider.log"
        self.config_path = self.workdir / "provider.json"
        self._ready_path = self.workdir / "provider.ready.json"
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        self.issuer: str | None = None

    # -- input checks -------------------------------------------------------------------------
    @staticmethod
    def _check_users(users: list[dict]) -> list[dict]:
        checked = []
        for i, user in enumerate(users):
            for field in ("username", "password"):
                if not isinstance(user.get(field), str) or not user[field]:
                    raise ValueError(f"LocalIdP users[{i}].{field} must be a non-empty string")
            claims = user.get("claims") or {}
            if not isinstance(claims, dict):
                raise ValueError(f"LocalIdP users[{i}].claims must be a dict of claim name -> value")
            checked.append(
                {"username": user["username"], "password": user["password"], "claims": dict(claims)}
            )
        return copy.deepcopy(checked)

    @staticmethod
    def _check_clients(clients: list[dict]) -> list[dict]:
        for i, client in enumerate(clients):
            if not isinstance(client.get("client_id"), str) or not client["client_id"]:
                raise ValueError(f"LocalIdP clients[{i}].client_id must be a non-empty string")
        return copy.deepcopy(list(clients))

    # -- derived values -----------------------------------------------------------------------
    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def public_jwks(self) -> dict:
        return public_jwks(self.private_jwks)

    @property
    def pid(self) -> int | None:
        """The node process id while running."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @staticmethod
    def available(node_modules: str | os.PathLike | None = None) -> str | None:
        """None if node and oidc-provider can run here, else the reason (for ``pytest.skip``)."""
        return _check_available(node_modules)

    # -- lifecycle ----------------------------------------------------------------------------
    def _write_config(self, port: int) -> None:
        package = find_oidc_provider(self.node_modules)
        config = {
            "host": self.host,
            "port": port,
            "users": self.users,
            "clients": self.clients,
            "ttl": self.ttl,
            "rotate_refresh_tokens": self.rotate_refresh_tokens,
            # key_ops (e.g. ["sign"] from some JWK exporters) would stop the provider from
            # verifying what it signed (id_token_hint at logout): "use": "sig" says enough
            "jwks": {
                "keys": [
                    {k: v for k, v in key.items() if k != "key_ops"} for key in self.private_jwks["keys"]
                ]
            },
            "cookie_keys": [secrets.token_hex(32)],
            "ready_file": str(self._ready_path),
            "oidc_provider_dir": str(package) if package else None,
        }
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)

    async def start(self, timeout: float = 30) -> LocalIdP:
        """Start the provider and wait until its discovery document answers."""
        if self.running:
            return self
        reason = self.available(self.node_modules)
        if reason:
            raise LocalIdPError(f"cannot start the local OpenID Connect provider: {reason}")
        self._ready_path.unlink(missing_ok=True)
        self._write_config(self.port)
        # a local append-only log and a fork/exec: neither waits on anything the loop serves
        with open(self.log_path, "ab") as log:  # noqa: ASYNC230
            proc = subprocess.Popen(  # noqa: ASYNC220 - a Popen handle, for the synchronous finalizer
                [find_node(), str(PROVIDER_SCRIPT), str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        self._proc = proc
        # never leave a node process behind, even if stop() is not called
        self._finalizer = weakref.finalize(self, _kill, proc)
        try:
            await self._wait_ready(timeout)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"

        def fail(why: str) -> LocalIdPError:
            return LocalIdPError(
                f"the local OpenID Connect provider did not start: {why}\n"
                f"--- {self.log_path} (last lines) ---\n{_tail(self.log_path)}"
            )

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while True:
                if self._proc.poll() is not None:
                    raise fail(f"node exited with status {self._proc.returncode}")
                if self._ready_path.exists():
                    try:
                        ready = json.loads(self._ready_path.read_text())
                    except ValueError:
                        ready = None
                    if ready:
                        self.port = int(ready["port"])
                        self.issuer = ready["issuer"]
                        try:
                            async with http.get(self.discovery_url) as r:
                                if r.status == 200 and (await r.json()).get("issuer") == self.issuer:
                                    return
                                last_error = f"discovery answered HTTP {r.status}"
                        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                            last_error = f"discovery: {e!r}"
                if time.monotonic() > deadline:
                    raise fail(f"not ready after {timeout} s ({last_error})")
                await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 10) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after ``timeout``) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                _kill(proc)
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        # the config file holds passwords and private keys
        self.config_path.unlink(missing_ok=True)
        self._ready_path.unlink(missing_ok=True)

    async def restart(self, jwks: dict | None = None, timeout: float = 30) -> LocalIdP:
        """Stop and start again on the same port and issuer, with ``jwks`` if given.

        Users and clients are kept; sessions, grants, codes and tokens are lost (they live in the
        provider's memory), so refresh tokens issued before the restart answer ``invalid_grant``.
        """
        if self.issuer is None:
            raise LocalIdPError("restart() needs a provider that has been started once")
        await self.stop()
        if jwks is not None:
            self.private_jwks = copy.deepcopy(jwks)
        return await self.start(timeout=timeout)

    def start_sync(self, timeout: float = 30) -> LocalIdP:
        """:meth:`start` for callers without an event loop."""
        return asyncio.run(self.start(timeout))

    def stop_sync(self, timeout: float = 10) -> None:
        """:meth:`stop` for callers without an event loop."""
        asyncio.run(self.stop(timeout))

    async def __aenter__(self) -> LocalIdP:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<LocalIdP issuer={self.issuer!r} pid={self.pid}>"


# -- driving the HTML forms with a plain HTTP client -----------------------------------------------
class _Forms(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self._current: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._current = {
                "action": a.get("action") or "",
                "method": (a.get("method") or "get").lower(),
                "id": a.get("id"),
                "fields": {},
            }
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            self._current["fields"][a["name"]] = a.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


def parse_forms(html: str) -> list[dict]:
    """The forms of a page: ``[{"action", "method", "id", "fields": {name: value}}]``."""
    parser = _Forms()
    parser.feed(html)
    return parser.forms


async def login(
    http: aiohttp.ClientSession, url: str, username: str, password: str, stop_prefix: str | None = None
) -> tuple[str, aiohttp.ClientResponse | None]:
    """Sign in like a browser: GET ``url`` (an authorize URL, or e.g. the hub's ``/hub/oauth_login``),
    following redirects; on the provider's login page POST ``login``/``password`` to the form's
    action and follow redirects until a URL starting with ``stop_prefix`` (e.g. the client's
    redirect_uri), which is returned unrequested as ``(url, None)`` (``stop_prefix=None``: follow
    redirects to the end, e.g. through the hub's callback to its home page). If the page stays put (wrong
    password: the login form again, HTTP 200, with "Invalid user name or password.") the result is
    ``(url, response)``, body already read.

    ``http`` needs a cookie jar that keeps cookies of IP-address hosts:
    ``aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))``.
    """
    url, resp = await follow_until(http, "GET", url, stop_prefix)
    if resp is None:
        return url, None  # already signed in: the provider's session cookie did it
    forms = [f for f in parse_forms(await resp.text()) if "password" in f["fields"]]
    if not forms:
        return url, resp
    action = urljoin(url, forms[0]["action"])
    return await follow_until(http, "POST", action, stop_prefix, {"login": username, "password": password})


async def submit_form(
    http: aiohttp.ClientSession, url: str, stop_prefix: str | None = None
) -> tuple[str, aiohttp.ClientResponse | None]:
    """GET ``url`` (e.g. the end-session URL with ``id_token_hint`` and ``post_logout_redirect_uri``),
    submit the page's first form with its hidden fields as they are (what the page's script does in a
    browser) and follow redirects until ``stop_prefix``; returns like :func:`login`."""
    url, resp = await follow_until(http, "GET", url, stop_prefix)
    if resp is None:
        return url, None
    forms = parse_forms(await resp.text())
    if not forms:
        return url, resp
    form = forms[0]
    action = urljoin(url, form["action"])
    return await follow_until(http, form["method"].upper(), action, stop_prefix, form["fields"])


async def follow_until(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    stop_prefix: str | None = None,
    data: dict | None = None,
    max_hops: int = 20,
) -> tuple[str, aiohttp.ClientResponse | None]:
    """Send a request and follow redirects by hand until the next URL starts with ``stop_prefix``
    (which is not requested; ``None``: never stop). Returns ``(url, None)`` when stopped there, or ``(url, response)`` of
    the first non-redirect response (body already read)."""
    for _ in range(max_hops):
        if stop_prefix and url.startswith(stop_prefix):
            return url, None
        async with http.request(method, url, data=data, allow_redirects=False) as resp:
            await resp.read()
            if resp.status not in (301, 302, 303, 307, 308):
                return url, resp
            url = urljoin(url, resp.headers["Location"])
        if resp.status != 307 and resp.status != 308:
            method, data = "GET", None
    raise LocalIdPError(f"more than {max_hops} redirects, last {url}")
