"""The synthetic probe: spawn the probe user's server, wait for it, talk to it through the proxy,
run ``1+1`` in a kernel, stop it — always stopping it, whatever failed.

Every request to the user server goes through the proxy (the hub's public URL) with a token of
the probe user that can only reach the probe's own server (``access:servers!user=<probe>``). The
token is made for one probe (short expiry) and deleted afterwards; the service's own token (which
holds the monitoring role) is only ever sent to the hub.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from ..common.hub import HubClient
from .status import CRITICAL, OK, WARNING, ProbeResult

log = logging.getLogger("apex_hub.monitoring")

TOKEN_NOTE = "apex-monitoring probe (short-lived)"
# progress messages that end a spawn at once (an image that cannot be pulled does not heal in a probe)
DEFAULT_FAIL_FAST = r"Failed to pull image|ErrImagePull|ImagePullBackOff|Back-off pulling image"
#: how often a phase's wait looks at its deadline (besides at the deadline itself)
UNTIL_STEP = 0.25


class PhaseFailed(Exception):
    def __init__(self, phase: str, message: str, code: int = CRITICAL):
        super().__init__(message)
        self.phase, self.message, self.code = phase, message, code


class Hub(HubClient):
    """Deprecated: the monitoring service's hub client is :class:`apex_hub.services.common.hub.HubClient`
    (``await hub.call("GET", "/users/x")`` → (status, body), as here)."""

    def __init__(self, api_url: str, token: str, timeout: float = 30):
        warnings.warn(
            "apex_hub.services.monitoring.probe.Hub is deprecated: use apex_hub.services.common.HubClient",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(api_url, token, timeout=timeout)


def hub_message(body: Any) -> str:
    return body.get("message", "") if isinstance(body, dict) else str(body or "")[:300]


@dataclass
class ProbeSettings:
    user: str = "apex-probe"
    group: str = "apex-probe"
    user_options: dict | None = None  # e.g. {"profile": "probe"}
    ready_timeout: float = 300.0
    proxy_timeout: float = 15.0
    kernel: bool = True
    kernel_name: str = "python3"
    kernel_timeout: float = 60.0
    kernel_failure: int = WARNING  # code when only the kernel phase fails
    stop_timeout: float = 120.0
    fail_fast: str = DEFAULT_FAIL_FAST

    @property
    def profile(self) -> str:
        return str((self.user_options or {}).get("profile", ""))


class Probe:
    """``clock`` stamps the results; the phases' timeouts run on ``monotonic`` (both injectable, e.g. a
    test's :class:`~apex_hub.services.common.clock.FileOffsetClock`); phase durations are measured
    on the real monotonic clock."""

    def __init__(
        self,
        hub: HubClient,
        public_url: str,
        settings: ProbeSettings,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.hub, self.s, self.clock, self.monotonic = hub, settings, clock, monotonic
        self.public_url = public_url.rstrip("/")
        self.user_path = f"/users/{quote(settings.user)}"
        self.server_prefix = f"/user/{quote(settings.user)}"

    # ---- the probe user, its token, its server --------------------------------------------

    async def ensure_user(self) -> None:
        """Create the probe user if missing and put it in the probe group (what accounting excludes)."""
        status, model = await self.hub.call("GET", self.user_path)
        if status == 404:
            status, model = await self.hub.call("POST", self.user_path)
            if status not in (200, 201):
                raise PhaseFailed(
                    "spawn_request",
                    f"cannot create probe user {self.s.user!r}: HTTP {status} {hub_message(model)}",
                )
            log.info("created probe user %s", self.s.user)
        elif status != 200:
            raise PhaseFailed(
                "spawn_request", f"cannot read probe user {self.s.user!r}: HTTP {status} {hub_message(model)}"
            )
        if self.s.group and self.s.group not in (model.get("groups") or []):
            group_path = f"/groups/{quote(self.s.group)}"
            status, body = await self.hub.call("POST", f"{group_path}/users", {"users": [self.s.user]})
            if status == 404:  # no such group yet: make it with the probe user in it
                status, body = await self.hub.call("POST", group_path, {"users": [self.s.user]})
                status = 200 if status == 201 else status
            if status != 200:
                log.warning(
                    "cannot add %s to group %s: HTTP %s %s",
                    self.s.user,
                    self.s.group,
                    status,
                    hub_message(body),
                )

    async def server(self) -> dict | None:
        """The probe's server model, or None when it has none."""
        status, model = await self.hub.call("GET", self.user_path)
        if status != 200:
            return None
        srv = (model.get("servers") or {}).get("")
        return None if not srv or srv.get("stopped") else srv

    async def stop_server(self) -> bool:
        """Stop the probe's server (pending or running) and wait until it is gone. True if one was there."""
        srv = await self.server()
        if srv is None:
            return False
        deadline = self.monotonic() + self.s.stop_timeout
        while self.monotonic() < deadline:
            status, body = await self.hub.call("DELETE", f"{self.user_path}/server")
            if status not in (202, 204, 400):  # 400: a transition in progress; ask again
                raise RuntimeError(f"DELETE {self.user_path}/server: HTTP {status} {hub_message(body)}")
            srv = await self.server()
            while srv is not None and srv.get("pending") == "stop" and self.monotonic() < deadline:
                await asyncio.sleep(0.5)
                srv = await self.server()
            if srv is None:
                return True
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the probe server did not stop in {self.s.stop_timeout:g}s")

    async def new_token(self) -> tuple[str, str]:
        body = {
            "scopes": [f"access:servers!user={self.s.user}"],
            "note": TOKEN_NOTE,
            "expires_in": int(
                self.s.ready_timeout
                + self.s.proxy_timeout
                + self.s.kernel_timeout
                + self.s.stop_timeout
                + 300
            ),
        }
        status, model = await self.hub.call("POST", f"{self.user_path}/tokens", body)
        if status not in (200, 201):
            raise PhaseFailed(
                "spawn_request", f"cannot make a token for {self.s.user}: HTTP {status} {hub_message(model)}"
            )
        return model["id"], model["token"]

    async def delete_tokens(self, only: str | None = None) -> int:
        """Delete the probe tokens (``only`` one id, else every one this service made)."""
        if only:
            ids = [only]
        else:
            status, body = await self.hub.call("GET", f"{self.user_path}/tokens")
            ids = (
                [t["id"] for t in (body or {}).get("api_tokens", []) if t.get("note") == TOKEN_NOTE]
                if status == 200
                else []
            )
        for token_id in ids:
            await self.hub.call("DELETE", f"{self.user_path}/tokens/{token_id}")
        return len(ids)

    async def cleanup(self) -> str:
        """Stop a probe server and delete probe tokens left behind (e.g. by a killed service)."""
        done = []
        if await self.stop_server():
            done.append(f"stopped the probe server of {self.s.user} left running")
        if n := await self.delete_tokens():
            done.append(f"deleted {n} probe token(s)")
        return "; ".join(done)

    # ---- one probe ------------------------------------------------------------------------

    async def run(self, probe_id: int) -> ProbeResult:
        result = ProbeResult(id=probe_id, started=self.clock(), profile=self.s.profile)
        token_id = None
        try:
            await self.ensure_user()
            if await self.stop_server():
                log.warning("stopped a probe server that was still there before probe %d", probe_id)
            token_id, token = await self.new_token()
            await self._spawn(result)
            await self._via_proxy(result, token)
            if self.s.kernel:
                await self._kernel(result, token)
            result.code, result.message = OK, self._summary(result)
        except PhaseFailed as exc:
            result.code, result.message, result.failed_phase = (
                exc.code,
                f"{exc.phase}: {exc.message}",
                exc.phase,
            )
        except Exception as exc:
            log.exception("probe %d failed", probe_id)
            result.code, result.message = CRITICAL, f"probe error: {type(exc).__name__}: {exc}"
        finally:
            await self._stop(result, token_id)
        result.finished = self.clock()
        log.info("probe %d: %s %s", probe_id, result.status, result.message)
        return result

    def _summary(self, result: ProbeResult) -> str:
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in result.phases.items())
        return f"probe server of {self.s.user} (profile {self.s.profile or 'default'}) OK: {timings}"

    async def _stop(self, result: ProbeResult, token_id: str | None) -> None:
        t = time.monotonic()
        try:
            await asyncio.shield(self.stop_server())
            result.phases["stop"] = time.monotonic() - t
        except Exception as exc:
            note = f"stop: {exc}"
            result.message = f"{result.message}; {note}" if result.message else note
            if result.code == OK:
                result.code, result.failed_phase = CRITICAL, "stop"
        try:
            await self.delete_tokens(token_id) if token_id else None
        except Exception as exc:
            log.warning("cannot delete the probe token: %s", exc)

    async def _spawn(self, result: ProbeResult) -> None:
        t = time.monotonic()
        status, body = await self.hub.call("POST", f"{self.user_path}/server", self.s.user_options or {})
        result.phases["spawn_request"] = time.monotonic() - t
        if status not in (201, 202):
            raise PhaseFailed(
                "spawn_request", f"POST {self.user_path}/server answered HTTP {status}: {hub_message(body)}"
            )
        try:
            await self._until(self.monotonic() + self.s.ready_timeout, self._wait_ready(result))
        except TimeoutError:
            last = result.events[-1] if result.events else "none"
            raise PhaseFailed(
                "server_ready", f"server not ready after {self.s.ready_timeout:g}s (last event: {last})"
            ) from None
        result.phases["server_ready"] = time.monotonic() - t

    async def _wait_ready(self, result: ProbeResult) -> None:
        """Follow the spawn's progress events; fail fast on a failed spawn or an image pull error."""
        fail_fast = re.compile(self.s.fail_fast) if self.s.fail_fast else None
        url = f"{self.hub.api_url}{self.user_path}/server/progress"
        headers = {"Authorization": f"token {self.hub.token}", "Accept": "text/event-stream"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self.hub.session.get(url, headers=headers, timeout=timeout) as r:
            if r.status == 200:
                async for raw in r.content:
                    line = raw.decode(errors="replace").strip()
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    message = str(event.get("message") or "")
                    if message:
                        result.events = (result.events + [message])[-10:]
                    if event.get("ready"):
                        return
                    if event.get("failed"):
                        raise PhaseFailed("server_ready", f"spawn failed: {message}")
                    if fail_fast and message and fail_fast.search(message):
                        raise PhaseFailed("server_ready", f"spawn failed: {message}")
        while True:  # no (more) progress stream: poll the server model
            srv = await self.server()
            if srv is None:
                raise PhaseFailed(
                    "server_ready",
                    "spawn failed: the server went away "
                    f"(last event: {result.events[-1] if result.events else 'none'})",
                )
            if srv.get("ready"):
                return
            await asyncio.sleep(0.5)

    async def _via_proxy(self, result: ProbeResult, token: str) -> None:
        """GET /user/<probe>/api/status through the proxy, retried briefly (routes may lag)."""
        url = f"{self.public_url}{self.server_prefix}/api/status"
        t = time.monotonic()
        deadline = self.monotonic() + self.s.proxy_timeout
        problem, first = "no answer", None
        while True:
            try:
                async with self.hub.session.get(
                    url,
                    headers={"Authorization": f"token {token}"},
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.s.proxy_timeout),
                ) as r:
                    text = await r.text()
                    problem = self._proxy_problem(r.status, r.headers.get("Location", ""), text)
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"cannot reach the proxy at {self.public_url}: {type(exc).__name__}: {exc}"
            if problem is None:
                result.phases["proxy"] = time.monotonic() - t
                return
            first = first or problem
            if self.monotonic() >= deadline:
                also = f" (first answer: {first})" if first != problem else ""
                raise PhaseFailed("proxy", f"{problem}{also}")
            await asyncio.sleep(1)

    def _proxy_problem(self, status: int, location: str, text: str) -> str | None:
        path = f"{self.server_prefix}/api/status"
        if status == 200:
            try:
                if "last_activity" in json.loads(text):
                    return None
            except (ValueError, TypeError):
                pass
        text = _error(text)
        if status == 200:
            return f"GET {path} through the proxy answered 200 but not the server's status: {text!r}"
        if 300 <= status < 400 and "/hub/" in location:
            return (
                f"no proxy route to the probe's server: GET {path} reached the hub "
                f"(HTTP {status} to {location})"
            )
        if status == 424:
            return f"GET {path}: the hub says the probe's server is not running (HTTP 424)"
        if status in (401, 403):
            return f"GET {path}: the probe's token was refused (HTTP {status})"
        if status in (502, 503, 504):
            return (
                f"dead proxy route: GET {path} answered HTTP {status} from the proxy "
                f"(the route's target does not answer){': ' + text if text else ''}"
            )
        return f"GET {path} through the proxy answered HTTP {status}{': ' + text if text else ''}"

    async def _kernel(self, result: ProbeResult, token: str) -> None:
        t = time.monotonic()
        await self._run_code(token, deadline=self.monotonic() + self.s.kernel_timeout)
        result.phases["kernel"] = time.monotonic() - t

    async def _run_code(self, token: str, deadline: float) -> None:
        """Start a kernel, run ``1+1`` over its websocket, expect ``2``, delete the kernel."""
        headers = {"Authorization": f"token {token}"}
        base = f"{self.public_url}{self.server_prefix}/api/kernels"
        name, fail = self.s.kernel_name, self.s.kernel_failure
        try:
            r, text = await self._until(deadline, self._post(base, {"name": name}, headers, deadline))
        except TimeoutError:
            raise PhaseFailed(
                "kernel", f"kernel {name!r} did not start in {self.s.kernel_timeout:g}s", fail
            ) from None
        if r.status != 201:
            raise PhaseFailed(
                "kernel",
                f"kernel {name!r} cannot start: POST /api/kernels answered HTTP {r.status}: {_error(text)}",
                fail,
            )
        kernel_id = json.loads(text)["id"]
        try:
            value, reply = await self._until(deadline, self._execute(f"{base}/{kernel_id}/channels", headers))
        except TimeoutError:
            value, reply = None, "no reply"
        except aiohttp.ClientError as exc:
            value, reply = None, f"websocket error {exc}"
        finally:
            state = await self._kernel_state(f"{base}/{kernel_id}", headers)
            try:
                async with self.hub.session.delete(f"{base}/{kernel_id}", headers=headers):
                    pass
            except aiohttp.ClientError as exc:
                log.warning("cannot delete probe kernel %s: %s", kernel_id, exc)
        if value != "2":
            what = (
                f"1+1 gave {value!r}"
                if value is not None
                else f"no result from 1+1 in {self.s.kernel_timeout:g}s ({reply})"
            )
            raise PhaseFailed("kernel", f"kernel {name!r}: {what}; kernel state: {state}", fail)

    async def _post(
        self, url: str, body: dict, headers: dict, deadline: float
    ) -> tuple[aiohttp.ClientResponse, str]:
        timeout = aiohttp.ClientTimeout(total=max(0.1, deadline - self.monotonic()))
        async with self.hub.session.post(url, json=body, headers=headers, timeout=timeout) as r:
            return r, await r.text()

    async def _until(self, deadline: float, awaitable):
        """``awaitable``'s result, or TimeoutError once ``self.monotonic()`` reaches ``deadline``: looked at
        at least every 0.25 s, so that a clock moved ahead (tests) ends the wait too."""
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                left = deadline - self.monotonic()
                if left <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({task}, timeout=min(left, UNTIL_STEP))
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _execute(self, ws_url: str, headers: dict) -> tuple[str | None, str | None]:
        """(the text/plain result of 1+1, the execute_reply status) over the kernel's websocket."""
        value = reply = None
        async with self.hub.session.ws_connect("ws" + ws_url[4:], headers=headers) as ws:
            msg_id = uuid.uuid4().hex
            await ws.send_json(_execute_request(msg_id, "1+1"))
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                if data.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = data.get("msg_type") or data["header"]["msg_type"], data.get("content", {})
                if kind == "execute_result":
                    value = content.get("data", {}).get("text/plain")
                elif kind == "error":
                    return None, f"1+1 raised {content.get('ename')}: {content.get('evalue')}"
                elif kind == "execute_reply":
                    reply = content.get("status")
                if reply is not None and value is not None:
                    break
            if reply is None:
                reply = f"websocket closed ({ws.close_code})"
        return value, reply

    async def _kernel_state(self, url: str, headers: dict) -> str:
        try:
            async with self.hub.session.get(url, headers=headers) as r:
                if r.status == 404:
                    return "gone (it died and the server removed it)"
                return (
                    (await r.json(content_type=None)).get("execution_state", "?")
                    if r.status == 200
                    else f"HTTP {r.status}"
                )
        except (aiohttp.ClientError, ValueError) as exc:
            return f"unknown ({exc})"


def _error(text: str) -> str:
    """The gist of an error body: a JSON message, a page's <title>, else the text (short)."""
    try:
        body = json.loads(text)
        return (
            str(body.get("message") or body.get("reason") or body)[:300]
            if isinstance(body, dict)
            else text[:300]
        )
    except ValueError:
        pass
    if text.lstrip().startswith("<"):
        title = re.search(r"<title>(.*?)</title>", text, re.S | re.I)
        return f"an HTML page ({title.group(1).strip()[:100]})" if title else "an HTML page"
    return text.strip()[:300]


def _execute_request(msg_id: str, code: str) -> dict:
    """A Jupyter ``execute_request`` in the websocket's JSON form (no subprotocol)."""
    return {
        "header": {
            "msg_id": msg_id,
            "username": "apex-monitoring",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "buffers": [],
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
    }
