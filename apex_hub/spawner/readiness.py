"""Wait for a started server's port to open, at a steady short interval.

Once the pod runs, JupyterHub checks that the server answers with an exponential backoff whose waits
grow (with full jitter) up to 5 s: a server that needs 3 s to import and bind its port is typically
found 1–5 s after it could have been. APExSpawner waits here first, knocking on the port at
``interval`` (a TCP connect; a refused connection costs the pod nothing), so that JupyterHub's first
HTTP check, made at once, finds it answering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit


async def until_listening(
    url: str,
    *,
    interval: float,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    on_attempt: Callable[[int], None] | None = None,
) -> bool:
    """True once a TCP connection to ``url``'s host and port succeeds; False after ``timeout`` s."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = clock() + timeout
    attempt = 0
    while True:
        attempt += 1
        if on_attempt is not None:
            on_attempt(attempt)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), max(interval, 1.0))
        except OSError:  # refused, reset, unreachable, timed out: not listening yet
            pass
        else:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
            return True
        if clock() >= deadline:
            return False
        await asyncio.sleep(interval)
