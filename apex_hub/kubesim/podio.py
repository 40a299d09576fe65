"""``pods/log`` and ``pods/exec`` as a real API server serves them (found by KubeSpawner's own tests).

Why: kubectl and KubeSpawner's checks exec into pods and follow logs. A real server answers a
log request for a container that does not exist or has not started with 400, honours
``tailLines`` and ``follow=true`` (the answer streams until the container stops), and serves
exec over the websocket channel protocol (``v5.channel.k8s.io``/``v4.channel.k8s.io``: one
byte of channel then the data; 0 stdin, 1 stdout, 2 stderr, 3 the final Status with the exit
code, 4 resize, and in v5 255 to close a channel). Exec runs the command as a process of the
pod in process mode (its environment, working directory and mounts).
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import WSMsgType, web

from .errors import ApiError

log = logging.getLogger("apex_hub.kubesim.podio")
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
FOLLOW_POLL = 0.1
TRUE = ("true", "True", "1")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def pick_container(pod: dict, requested: str | None) -> dict:
    """The container a log/exec request means, or the 400 a real server gives."""
    spec, name = pod.get("spec") or {}, pod["metadata"]["name"]
    containers, inits = spec.get("containers") or [], spec.get("initContainers") or []
    if not requested:
        default = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
        if default:
            requested = default
        elif len(containers) == 1:
            return containers[0]
        else:
            message = (
                f"a container name must be specified for pod {name}, choose one of: "
                f"[{' '.join(c['name'] for c in containers)}]"
            )
            if inits:
                message += f" or one of the init containers: [{' '.join(c['name'] for c in inits)}]"
            raise bad_request(message)
    found = next((c for c in containers + inits if c["name"] == requested), None)
    if found is None:
        raise bad_request(f"container {requested} is not valid for pod {name}")
    return found


def container_status(pod: dict, container: str) -> dict | None:
    status = pod.get("status") or {}
    return next(
        (
            cs
            for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
            if cs["name"] == container
        ),
        None,
    )


def check_started(pod: dict, container: str) -> None:
    """400 for a container that never ran (waiting, with no earlier run to show)."""
    cs = container_status(pod, container)
    waiting = (cs or {}).get("state", {}).get("waiting")
    if cs is None or (waiting is not None and not cs.get("lastState") and not cs.get("restartCount")):
        reason = (waiting or {}).get("reason") or "ContainerCreating"
        raise bad_request(
            f'container "{container}" in pod "{pod["metadata"]["name"]}" is waiting to start: {reason}'
        )


def tail(text: str, lines: int | None) -> str:
    if lines is None:
        return text
    if lines <= 0:
        return ""
    kept = text.splitlines(keepends=True)
    return "".join(kept[-lines:])


class PodIO:
    """The log and exec handlers of kubesim's API server."""

    def __init__(self, store, kubelet_of):
        self.store = store
        self._kubelet_of = kubelet_of  # () -> the process Kubelet, or None

    def _pod(self, rtype, namespace: str, name: str) -> dict:
        if rtype.kind != "Pod":
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        return self.store.get(rtype, namespace, name)

    # -- logs -------------------------------------------------------------------------------

    async def log(
        self, request: web.Request, rtype, namespace: str, name: str, read_logs
    ) -> web.StreamResponse:
        q = request.query
        pod = self._pod(rtype, namespace, name)
        container = pick_container(pod, q.get("container"))["name"]
        check_started(pod, container)
        try:
            lines = int(q["tailLines"]) if "tailLines" in q else None
        except ValueError:
            raise bad_request(f"invalid tailLines {q['tailLines']!r}") from None
        text = tail(read_logs(namespace, name, container) if read_logs else "", lines)
        if q.get("follow") not in TRUE:
            return web.Response(text=text, content_type="text/plain")
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": "text/plain", "Transfer-Encoding": "chunked"}
        )
        await resp.prepare(request)
        await resp.write(text.encode())
        kubelet = self._kubelet_of()
        path = kubelet.log_path(namespace, name, container) if kubelet is not None else None
        offset = path.stat().st_size if path is not None and path.exists() else 0
        uid = pod["metadata"]["uid"]
        try:
            while True:
                chunk = await asyncio.to_thread(_read_from, path, offset) if path is not None else b""
                if chunk:
                    offset += len(chunk)
                    await resp.write(chunk)
                current = self.store._raw(rtype, namespace, name)
                if current is None or current["metadata"]["uid"] != uid:
                    break  # the pod is gone
                state = (container_status(current, container) or {}).get("state", {})
                if "terminated" in state and (
                    path is None or not path.exists() or path.stat().st_size == offset
                ):
                    break  # the container stopped and everything it wrote was sent
                if _client_gone(request):
                    raise ConnectionResetError  # gone while the container wrote nothing new
                await asyncio.sleep(FOLLOW_POLL)
            await resp.write_eof()
        except ConnectionResetError:
            # the client went away (kubectl logs -f interrupted), noticed here or by a write that
            # failed: stop following, as the API server does
            log.debug("log follower of %s/%s went away", namespace, name)
        return resp

    # -- exec -------------------------------------------------------------------------------

    async def exec(self, request: web.Request, rtype, namespace: str, name: str) -> web.StreamResponse:
        q = request.query
        pod = self._pod(rtype, namespace, name)
        container = pick_container(pod, q.get("container"))["name"]
        command = q.getall("command", [])
        if not command:
            raise bad_request("you must specify at least 1 command")
        offered = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        if request.headers.get("Upgrade", "").lower() != "websocket" or not set(offered) & set(
            EXEC_PROTOCOLS
        ):
            raise bad_request(
                "kubesim serves exec over websockets with the v5.channel.k8s.io or v4.channel.k8s.io"
                f" protocol only (offered: {', '.join(offered) or request.headers.get('Upgrade') or 'none'})"
            )
        kubelet = self._kubelet_of()
        prepared = kubelet.exec_command(namespace, name, container, command) if kubelet is not None else None
        if prepared is None:
            raise bad_request(
                f'unable to upgrade connection: container not found ("{container}")'
                + ("" if kubelet is not None else " (exec needs kubesim's process kubelet)")
            )
        argv, env, cwd = prepared
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS)
        await ws.prepare(request)
        use_stdin, tty = q.get("stdin") in TRUE, q.get("tty") in TRUE
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=cwd,
                stdin=asyncio.subprocess.PIPE if use_stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT if tty else asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            await ws.send_bytes(
                bytes([ERROR])
                + json.dumps(_failure(f"failed to exec in container: {e}", "InternalError")).encode()
            )
            await ws.close()
            return ws
        pumps = [asyncio.ensure_future(_pump(proc.stdout, ws, STDOUT))]
        if not tty:
            pumps.append(asyncio.ensure_future(_pump(proc.stderr, ws, STDERR)))
        reader = asyncio.ensure_future(_read_stdin(ws, proc.stdin if use_stdin else None))
        try:
            code = await proc.wait()
            await asyncio.gather(*pumps)
            status = (
                {"metadata": {}, "status": "Success"}
                if code == 0
                else _failure(
                    f"command terminated with non-zero exit code: error executing command {command}, exit code {code}",
                    "NonZeroExitCode",
                    [{"reason": "ExitCode", "message": str(code)}],
                )
            )
            await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
        finally:
            reader.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await ws.close()
        return ws


def _failure(message: str, reason: str, causes=None) -> dict:
    status = {"metadata": {}, "status": "Failure", "message": message, "reason": reason}
    if causes:
        status["details"] = {"causes": causes}
    return status


async def _pump(stream, ws: web.WebSocketResponse, channel: int) -> None:
    while chunk := await stream.read(65536):
        if ws.closed:
            return
        await ws.send_bytes(bytes([channel]) + chunk)


async def _read_stdin(ws: web.WebSocketResponse, stdin) -> None:
    """Channel 0 to the process's stdin; v5's close of channel 0 (or the socket's end) is EOF."""
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
            if not data:
                continue
            if data[0] == STDIN and stdin is not None and len(data) > 1:
                stdin.write(data[1:])
                await stdin.drain()
            elif data[0] == CLOSE and data[1:2] == bytes([STDIN]) and stdin is not None:
                stdin.close()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        if stdin is not None and not stdin.is_closing():
            stdin.close()


def _client_gone(request: web.Request) -> bool:
    """Whether the client of a streamed answer has closed its connection."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _read_from(path, offset: int) -> bytes:
    """What a container log file holds past ``offset`` (nothing while it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""
