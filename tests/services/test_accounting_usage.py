"""The quota check's usage in memory (accounting/usage.py): after any sequence of writes it gives
exactly the numbers a fresh read of the ledger gives (``==`` on floats, not approximately), and what
it holds stays bounded by the users and their running sessions — on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from apex_hub.services.accounting.db import Ledger
from apex_hub.services.accounting.quota import Quotas
from apex_hub.services.accounting.service import AccountingService
from apex_hub.services.accounting.usage import CachedUsage, Miss, UsageCache
from tests.services.test_accounting_ledger import (  # noqa: F401 - fixtures
    GIB,
    db_url,
    ledger,
    obs,
    postgres,
    postgres_database,
)

MONTH = datetime(2026, 12, 1, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def keys(users: int, groups: list) -> list[dict]:
    return [{"user": f"u{i}"} for i in range(users)] + [{"group": g} for g in groups if g]


def assert_same(cache: UsageCache, ledger: Ledger, since, now, queries) -> None:
    for q in queries:
        assert cache.usage_total(since, now, **q) == ledger.usage_total(since, now, **q), q


def test_cache_equals_a_fresh_read_after_every_write(ledger):
    rng = random.Random(5)
    groups = ["g1", "g2", "g3", None]
    clock = Clock(MONTH + timedelta(days=3))
    # last month's history, some of it reaching into this month, and sessions still running
    history = []
    for i in range(300):
        start = MONTH - timedelta(days=20) + timedelta(seconds=rng.randrange(23 * 86400), microseconds=i)
        stop = (
            None if i % 17 == 0 else min(start + timedelta(seconds=rng.randrange(60, 2 * 86400)), clock.now)
        )
        history.append(
            obs(
                f"h{i}",
                user=f"u{i % 6}",
                group=rng.choice(groups),
                cpu=rng.choice([0.25, 1.0, 1 / 3, 0.1]),
                memory_bytes=rng.randrange(1, 8 * GIB),
                gpu=rng.choice([0.0, 1.0]),
                start=start,
                stop=stop,
            )
        )
    ledger.observe_many(history, source="backfill", now=clock.now)
    cache = UsageCache(ledger, clock)
    ledger.on_usage_change = cache.changed
    cache.fill(MONTH, clock.now)
    queries = keys(6, groups)
    assert_same(cache, ledger, MONTH, clock.now, queries)

    # the history's servers stop: their users' and groups' sessions fold, and a server seen late (one
    # that started before the folded ones) is one the cache must read again
    clock.now += timedelta(minutes=5)
    closing = [o for o in history if o.stop is None]
    for o in closing:
        o.stop = clock.now
    ledger.observe_many(closing, source="relist", now=clock.now)
    assert_same(cache, ledger, MONTH, clock.now, queries)
    running: dict = {}
    n = 0
    for step in range(200):
        clock.now += timedelta(seconds=rng.randrange(1, 3600), microseconds=rng.randrange(10**6))
        what = rng.random()
        if what < 0.35 or not running:  # a server starts (seen live, or late by up to two days)
            late = timedelta(seconds=rng.randrange(2 * 86400)) if rng.random() < 0.2 else timedelta(0)
            o = obs(
                f"n{n}",
                user=f"u{rng.randrange(6)}",
                group=rng.choice(groups),
                cpu=rng.choice([0.5, 1 / 3, 2.0]),
                memory_bytes=rng.randrange(1, 4 * GIB),
                start=clock.now - late,
            )
            n += 1
            if rng.random() < 0.2:  # its group not known yet: set by a later observation
                o.group = None
            ledger.observe(o, source="pod-watch", now=clock.now)
            running[o.id] = o
        elif what < 0.7:  # one stops
            o = running.pop(rng.choice(sorted(running)))
            o.stop = clock.now
            o.group = o.group or rng.choice(groups)
            ledger.observe(o, source="pod-watch", now=clock.now)
        elif what < 0.8:  # a re-list: many at once, some new and already closed
            items = [running[k] for k in sorted(running)[:5]]
            start = clock.now - timedelta(hours=rng.randrange(1, 40))
            items.append(
                obs(
                    f"b{step}",
                    user=f"u{rng.randrange(6)}",
                    group=rng.choice(groups),
                    start=start,
                    stop=clock.now,
                )
            )
            ledger.observe_many(items, source="relist", now=clock.now)
        elif what < 0.9:  # the group of a running session becomes known
            o = rng.choice(list(running.values()))
            o.group = rng.choice(groups[:3])
            ledger.observe(o, source="deferred", now=clock.now)
        else:  # nothing new: a replay
            o = rng.choice(list(running.values()))
            ledger.observe(o, source="relist", now=clock.now)
        assert_same(cache, ledger, MONTH, clock.now, queries)
    assert cache.size()[1] > 0  # the running sessions, and the closed ones after the oldest of them
    # every server stops: all of it folds into a few sums per user and group
    clock.now += timedelta(minutes=1)
    items = []
    for o in running.values():
        o.stop = clock.now
        items.append(o)
    ledger.observe_many(items, source="relist", now=clock.now)
    clock.now += timedelta(minutes=1)
    assert_same(cache, ledger, MONTH, clock.now, queries)
    assert cache.size() == (len(queries), 0), cache.size()


def test_what_the_cache_cannot_answer_goes_to_the_ledger(ledger):
    clock = Clock(MONTH + timedelta(days=2))
    cache = UsageCache(ledger, clock)
    ledger.on_usage_change = cache.changed
    with pytest.raises(Miss):  # not filled yet
        cache.usage_total(MONTH, clock.now, user="alice")
    cache.fill(MONTH, clock.now)
    assert cache.usage_total(MONTH, clock.now, user="alice")["sessions"] == 0
    # a stop in the future (a deletionTimestamp's grace period, a fake clock) is folded only once past
    ledger.observe(
        obs("a", start=clock.now - timedelta(hours=2), stop=clock.now + timedelta(minutes=1)), source="t"
    )
    ledger.observe(obs("b", start=clock.now - timedelta(hours=1)), source="t")
    assert_same(cache, ledger, MONTH, clock.now, [{"user": "alice"}, {"group": "apex-small"}])
    clock.now += timedelta(minutes=5)
    ledger.observe(obs("b", start=clock.now - timedelta(hours=1), stop=clock.now), source="t")
    clock.now += timedelta(seconds=1)
    assert_same(cache, ledger, MONTH, clock.now, [{"user": "alice"}, {"group": "apex-small"}])
    assert cache.size() == (2, 0)  # both folded
    with pytest.raises(Miss):  # a clock before a folded stop
        cache.usage_total(MONTH, clock.now - timedelta(minutes=10), user="alice")
    with pytest.raises(Miss):  # another period
        cache.usage_total(MONTH + timedelta(days=31), clock.now + timedelta(days=31), user="alice")
    fresh = CachedUsage(cache, ledger)  # with a fallback: the ledger's answer
    then = clock.now - timedelta(minutes=10)
    assert fresh.usage_total(MONTH, then, user="alice") == ledger.usage_total(MONTH, then, user="alice")


async def test_the_services_quota_check_is_served_from_memory_and_equals_a_fresh_check(db_url, tmp_path):
    reads: list[str] = []

    class Counting(Ledger):
        def usage_total(self, since, until, *, user=None, group=None):
            reads.append(user or group)
            return super().usage_total(since, until, user=user, group=group)

    ledger = Counting(db_url)
    clock = Clock(MONTH + timedelta(days=9, hours=8))
    quotas = Quotas.from_dict({"groups": {"g1": {"cpu_hours": 50}}, "default": {"cpu_hours": 10}})
    svc = AccountingService(ledger, hub=None, kube=None, quotas=quotas, clock=clock, state_dir=tmp_path)
    try:
        svc.groups = {"ann": ["g1"], "ben": ["g1"]}
        await svc.fill_usage()
        for i in range(6):
            user = ("ann", "ben")[i % 2]
            start = clock.now - timedelta(hours=3)
            await svc._write([obs(f"s{i}", user=user, group="g1", cpu=1 / 3, start=start)], "pod-watch")
            clock.now += timedelta(minutes=17)
            if i % 3 == 2:
                stop = obs(
                    f"s{i - 1}", user=("ann", "ben")[(i - 1) % 2], group="g1", start=start, stop=clock.now
                )
                await svc._write([stop], "pod-watch")
            for user in ("ann", "ben", "cid"):
                reads.clear()
                got = await svc.quota_check(user, svc.groups.get(user, []))
                assert reads == []  # no database read
                fresh = quotas.check(ledger, user, svc.groups.get(user, []), now=clock.now)
                assert got.as_dict() == fresh.as_dict()
        # the quota round uses it too, and its statuses are the fresh ones
        reads.clear()
        await svc.enforce_quotas()
        assert reads == []
    finally:
        svc.db.close()
        ledger.close()


async def test_a_stop_matches_only_its_users_culler_records(tmp_path):
    """A session's stop attaches the culler's reason from its user's records; the day's records of
    every other user (thousands on a busy hub) are not each a ledger query per stop."""
    from apex_hub.services.accounting.ingest import StopRecord

    queries: list[str | None] = []

    class Counting(Ledger):
        def sessions(self, *, user=None, **kw):
            queries.append(user)
            return super().sessions(user=user, **kw)

    ledger = Counting(f"sqlite:///{tmp_path}/ledger.sqlite")
    clock = Clock(MONTH + timedelta(days=3, hours=12))
    svc = AccountingService(ledger, hub=None, kube=None, clock=clock, state_dir=tmp_path)
    try:
        start = clock.now - timedelta(hours=3)
        await svc._write([obs("p1", user="ann", start=start)], "pod-watch")
        others = [
            StopRecord(f"user{i}", "", clock.now - timedelta(minutes=i % 600), "idle", None)
            for i in range(500)
        ]
        mine = StopRecord("ann", "", clock.now, "idle", start, "idle for 2h")
        svc._culler_records = [*others, mine]
        queries.clear()
        await svc._write(
            [obs("p1", user="ann", start=start, stop=clock.now, stop_reason="user")], "pod-watch"
        )
        assert queries == ["ann"]
        assert ledger.session("p1")["stop_reason"] == "idle" and svc.stats.reasons_attached == 1
    finally:
        svc.db.close()
        ledger.close()
