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


async def test_the_spawner_returns_once_the_server_listens_and_says_it_waits(ksim):
    from tests.helpers.spawner import make_spawner

    spawner = make_spawner(ksim, "lia", server_ready_poll=0.001, http_timeout=3600)
    starting = asyncio.ensure_future(spawner.start())
    try:
        while not any("start listening" in e["message"] for e in spawner._progress_events):
            assert not starting.done(), starting.exception() if starting.done() else None
            await asyncio.sleep(0.001)
        assert not starting.done()  # the pod runs, nothing listens on its port yet: still waiting
        pod = ksim.store.get(ksim.store._rt("pods"), "apex-lia", spawner.pod_name)
        server = await asyncio.start_server(lambda r, w: w.close(), pod["status"]["podIP"], spawner.port)
        try:
            url = await starting
        finally:
            server.close()
            await server.wait_closed()
        assert url == f"http://{pod['status']['podIP']}:{spawner.port}"
    finally:
        if not starting.done():
            starting.cancel()
        await spawner.stop()


async def test_off_by_default_the_spawner_does_not_wait_for_the_port(ksim):
    from tests.helpers.spawner import make_spawner

    spawner = make_spawner(ksim, "lou")
    assert spawner.server_ready_poll == 0
    try:
        await spawner.start()  # the instant kubelet's pod listens nowhere: returned all the same
        assert not any("start listening" in e["message"] for e in spawner._progress_events)
    finally:
        await spawner.stop()
