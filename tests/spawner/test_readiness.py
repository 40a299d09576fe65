"""apex_hub.spawner.readiness: the spawner's wait for a started server's port (real sockets on loopback)."""

from __future__ import annotations

import asyncio
import socket

from apex_hub.spawner.readiness import until_listening


def _bound_not_listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # the port is taken, connections are refused until listen()
    return sock


async def test_returns_once_the_port_opens_and_not_before():
    sock = _bound_not_listening()
    port = sock.getsockname()[1]
    attempts: list[int] = []
    refused_twice = asyncio.Event()

    def seen(n: int) -> None:
        attempts.append(n)
        if n == 3:
            refused_twice.set()

    waiting = asyncio.ensure_future(
        until_listening(f"http://127.0.0.1:{port}/user/ada/", interval=0.001, timeout=3600, on_attempt=seen)
    )
    await refused_twice.wait()
    assert not waiting.done()  # two refused connections, still waiting
    sock.listen()
    try:
        assert await waiting is True
    finally:
        sock.close()
    assert attempts[:3] == [1, 2, 3]


async def test_gives_up_at_the_timeout_on_its_clock():
    sock = _bound_not_listening()
    port = sock.getsockname()[1]
    now = [0.0]

    def tick(n: int) -> None:
        now[0] += 10.0  # every attempt "takes" 10 s of the fake clock

    try:
        ok = await until_listening(
            f"http://127.0.0.1:{port}/", interval=0, timeout=25, clock=lambda: now[0], on_attempt=tick
        )
    finally:
        sock.close()
    assert ok is False
    assert now[0] == 30.0  # attempts at 10, 20 and 30: past the deadline (25) it stops


async def test_an_open_port_is_found_at_the_first_attempt():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    attempts: list[int] = []
    try:
        assert await until_listening(
            f"http://127.0.0.1:{port}", interval=60, timeout=60, on_attempt=attempts.append
        )
    finally:
        server.close()
        await server.wait_closed()
    assert attempts == [1]
