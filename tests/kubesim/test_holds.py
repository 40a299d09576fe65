"""kubesim's holds: a request waits until another one arrives, so that tests can show what a client
sends before it has an answer, without a margin of time."""

from __future__ import annotations

import asyncio

import aiohttp

CM = "/api/v1/namespaces/default/configmaps"


def configmap(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}


async def test_a_held_request_is_answered_only_after_the_awaited_one_arrives(sim):
    hold = sim.hold(
        holds=lambda r: r.verb == "create" and r.name is None and r.resource == "configmaps",
        until=lambda r: r.verb == "get" and r.resource == "configmaps",
    )
    async with aiohttp.ClientSession() as s:
        held = asyncio.ensure_future(s.post(sim.url + CM, json=configmap("a")))
        while not hold.held:  # the create has reached the server and waits
            await asyncio.sleep(0)
        assert not held.done()
        async with s.get(sim.url + CM + "/nothing") as r:  # the awaited request releases it
            assert r.status == 404
        async with await held as r:
            assert r.status == 201
    assert not hold.timed_out
    [create] = [q for q in sim.requests if q.verb == "create"]
    [get] = [q for q in sim.requests if q.verb == "get"]
    assert get.started < create.started + create.duration  # answered after the get had arrived


async def test_a_hold_that_is_never_released_times_out_and_says_so(sim):
    hold = sim.hold(holds=lambda r: r.verb == "create", until=lambda r: False, timeout=0)
    async with aiohttp.ClientSession() as s:
        async with s.post(sim.url + CM, json=configmap("b")) as r:
            assert r.status == 201  # served once the hold gave up
    assert hold.timed_out and hold.held == 1


async def test_clearing_the_faults_releases_every_hold(sim):
    hold = sim.hold(holds=lambda r: r.verb == "create", until=lambda r: False)
    async with aiohttp.ClientSession() as s:
        held = asyncio.ensure_future(s.post(sim.url + CM, json=configmap("c")))
        while not hold.held:
            await asyncio.sleep(0)
        sim.faults.clear()
        async with await held as r:
            assert r.status == 201
    assert not hold.timed_out and sim.faults.holds == []
