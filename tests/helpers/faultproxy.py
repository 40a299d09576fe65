"""A TCP proxy in front of a real API server that can cut connections: faults a real server
cannot be asked to make.

Why: kubesim injects HTTP faults itself (apex_hub/kubesim/faults.py); a real kube-apiserver does
not. What a hub really meets between it and the API server (a load balancer resetting
connections, an API server restarting) is a connection closed under it: ``cut()`` closes every
open connection (pooled keep-alive ones included) and ``drop(n)`` accepts and at once closes the
next ``n``. The bytes are passed through untouched, so TLS is end to end (the API server's
certificate names 127.0.0.1, whichever port the client dialled).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse


class FaultProxy:
    """``async with FaultProxy("https://127.0.0.1:6443") as proxy:`` then use ``proxy.url``."""

    def __init__(self, upstream_url: str):
        parsed = urlparse(upstream_url)
        self.scheme, self.upstream = parsed.scheme, (parsed.hostname, parsed.port)
        self.url = ""
        self.accepted = self.dropped = 0
        self._drop = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{self.scheme}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    def drop(self, n: int) -> None:
        """Close the next ``n`` new connections as soon as they are accepted."""
        self._drop += n

    def cut(self) -> int:
        """Close every open connection (both directions); how many there were."""
        writers, self._writers = list(self._writers), set()
        for writer in writers:
            writer.transport.abort()
        return len(writers)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._drop > 0:
            self._drop -= 1
            self.dropped += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
