"""The quota check's usage, kept in memory: each user's and each group's sums this period, exactly
as :meth:`.db.Ledger.usage_total` computes them from the ledger, so the pre-spawn check needs neither
a database read nor a thread.

:meth:`.db.Ledger.usage_total` adds the sessions' usage one by one in the order of :func:`order`
(start first). Floating-point addition depends on that order, so the cache keeps it: per user and
per group, the sessions that overlap the period, sorted the same way. Its front — the closed
sessions before the first running one — is *folded*: added into running sums, once, and forgotten
(their usage no longer changes), so what stays per key is a few floats plus the sessions from the
oldest running one on. Memory is bounded by the users and groups with a session this period and
their running sessions, not by how many sessions they had.

Every write that changes a session's usage columns (opened, stopped, group set) tells the cache,
on the writer thread, right after its commit (:attr:`.db.Ledger.on_usage_change`), with the row as
written (the values the database gives back), and the cache puts it in place, one key at a time
(a check waits for one key's changes, never for a whole listing's). The rare session that belongs
*inside* a key's folded front (its start is earlier, e.g. a pod that started while the service was
down and is listed late) makes that key re-read from the ledger; until then — and whenever the cache cannot answer
exactly (another period, a clock before a folded stop) — :meth:`UsageCache.usage_total` raises
:class:`Miss` and the caller reads the ledger instead.

:meth:`UsageCache.fill` (on the writer, in order with the writes) reads the period's sessions once:
at start-up and when a new period begins.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from .reports import GIB

#: a session as the sums see it: (start, stop or None, cpu, memory_bytes, gpu), times naive UTC
Row = tuple
_LATEST = datetime.max
USAGE_EVENTS = frozenset({"opened", "stopped", "group"})


class Miss(Exception):
    """The cache cannot answer this exactly: read the ledger."""


def naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t


def order(row: Row) -> tuple:
    """The order the sums are taken in: sessions equal in every field add the same amounts, so the
    result does not depend on how ties are broken."""
    start, stop, cpu, mem, gpu = row
    return (start, _LATEST if stop is None else stop, cpu, mem, gpu)


def accumulate(rows: Iterable[Row], lo: datetime, hi: datetime, acc: list) -> list:
    """Add each row's usage inside ``[lo, hi)`` (naive UTC) to ``acc`` = [sessions, wall_hours,
    cpu_hours, memory_gib_hours, gpu_hours], in the order given; rows starting at ``hi`` or later
    are not counted (as the ledger's query leaves them out)."""
    n, wall, cpu, mem, gpu = acc
    for start, stop, c, m, g in rows:
        if start >= hi:
            continue
        end = min(stop if stop is not None else hi, hi)
        hours = max((end - max(start, lo)).total_seconds(), 0.0) / 3600.0
        n += 1
        wall += hours
        cpu += c * hours
        mem += m / GIB * hours
        gpu += g * hours
    acc[:] = [n, wall, cpu, mem, gpu]
    return acc


def as_usage(acc: Sequence) -> dict[str, float]:
    n, wall, cpu, mem, gpu = acc
    return {"sessions": n, "wall_hours": wall, "cpu_hours": cpu, "memory_gib_hours": mem, "gpu_hours": gpu}


class _Entry:
    """One user's or group's sessions this period: the folded front's sums, and the rest in order."""

    __slots__ = ("acc", "boundary", "ids", "keys", "max_stop", "rows")

    def __init__(self) -> None:
        self.acc: list = [0, 0.0, 0.0, 0.0, 0.0]
        self.boundary: tuple | None = None  # order() of the last folded session
        self.max_stop: datetime | None = None  # the latest stop folded
        self.keys: list[tuple] = []  # order() of each row, sorted
        self.rows: list[Row] = []
        self.ids: list[str] = []

    def put(self, sid: str, row: Row | None) -> bool:
        """Set (or, with None, remove) session ``sid``'s row; False when it belongs in the folded front."""
        if sid in self.ids:
            i = self.ids.index(sid)
            del self.keys[i], self.rows[i], self.ids[i]
        if row is None:
            return True
        key = order(row)
        if self.boundary is not None and key < self.boundary:
            return False
        i = bisect.bisect_right(self.keys, key)
        self.keys.insert(i, key)
        self.rows.insert(i, row)
        self.ids.insert(i, sid)
        return True

    def fold(self, lo: datetime, now: datetime) -> None:
        """Fold the front's sessions that stopped before ``now``: their usage is final."""
        k = 0
        while k < len(self.rows) and self.rows[k][1] is not None and self.rows[k][1] < now:
            k += 1
        if not k:
            return
        accumulate(self.rows[:k], lo, _LATEST, self.acc)
        self.boundary = self.keys[k - 1]
        stop = max(r[1] for r in self.rows[:k])
        self.max_stop = stop if self.max_stop is None else max(self.max_stop, stop)
        del self.keys[:k], self.rows[:k], self.ids[:k]

    def total(self, lo: datetime, hi: datetime) -> dict[str, float]:
        self.fold(lo, hi)  # what stopped since the last write of this key
        if self.max_stop is not None and hi <= self.max_stop:
            raise Miss("the clock is before a folded session's stop")
        return as_usage(accumulate(self.rows, lo, hi, list(self.acc)))


class UsageCache:
    """Per user and per group, the usage of the sessions overlapping one period (see the module)."""

    def __init__(self, ledger: Any, clock: Any = None):
        self.ledger = ledger
        self.clock = clock
        self.since: datetime | None = None  # naive UTC start of the period held; None: not filled
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._stale: set[tuple[str, str]] = set()  # keys being re-read from the ledger
        self._lock = threading.Lock()

    # ---- the writer's side -----------------------------------------------------------------

    def fill(self, since: datetime, now: datetime) -> None:
        """(writer thread) Read the period's sessions from the ledger and hold them."""
        lo = naive(since)
        rows = self.ledger.usage_rows(since)
        entries: dict[tuple[str, str], _Entry] = {}
        for sid, user, group, row in sorted(rows, key=lambda r: order(r[3])):
            for key in (("user", user), ("group", group)) if group is not None else (("user", user),):
                entry = entries.get(key)
                if entry is None:
                    entry = entries[key] = _Entry()
                entry.keys.append(order(row))
                entry.rows.append(row)
                entry.ids.append(sid)
        now = naive(now)
        for entry in entries.values():
            entry.fold(lo, now)
        with self._lock:
            self._entries, self._stale, self.since = entries, set(), lo

    def changed(self, writes: Iterable[tuple[str, list[str], Any]]) -> None:
        """(writer thread, after a commit) Sessions written: (id, events, (user, group, row) or None)."""
        if self.since is None:
            return
        writes = [(sid, set(events) & USAGE_EVENTS, known) for sid, events, known in writes]
        writes = [w for w in writes if w[1]]
        if not writes:
            return
        rows = {sid: known for sid, _, known in writes if known is not None}
        unknown = [sid for sid, _, known in writes if known is None]
        if unknown:
            rows.update((sid, (u, g, row)) for sid, u, g, row in self.ledger.usage_rows(ids=unknown))
        now = naive(self.clock()) if self.clock else _LATEST
        lo = self.since
        by_key: dict[tuple[str, str], list[tuple[str, Row | None]]] = {}
        for sid, events, _ in writes:
            if sid not in rows:
                continue
            user, group, row = rows[sid]
            put = row if row[1] is None or row[1] > lo else None  # None: not in the period (any more)
            # the user's sums change when a session opens or stops; a group's also when it gains one
            if events & {"opened", "stopped"}:
                by_key.setdefault(("user", user), []).append((sid, put))
            if group is not None:
                by_key.setdefault(("group", group), []).append((sid, put))
        reread: list[tuple[str, str]] = []
        for key, puts in by_key.items():
            # one key at a time: its changes of this commit together, and a check on the event loop
            # never waits for a whole listing's
            with self._lock:
                if self.since != lo or key in self._stale:
                    continue
                entry = self._entries.get(key)
                if entry is None:
                    if all(row is None for _, row in puts):
                        continue
                    entry = self._entries[key] = _Entry()
                if not all(entry.put(sid, row) for sid, row in puts):  # else: read again
                    self._stale.add(key)
                    reread.append(key)
                    continue
                entry.fold(lo, now)
        for key in reread:
            self._reread(key)

    def _reread(self, key: tuple[str, str]) -> None:
        """(writer thread) One key's sessions again from the ledger (one that went in its folded front)."""
        since = self.since
        assert since is not None
        scope, name = key
        rows = self.ledger.usage_rows(since.replace(tzinfo=UTC), **{scope: name})
        entry = _Entry()
        for sid, _user, _group, row in sorted(rows, key=lambda r: order(r[3])):
            entry.keys.append(order(row))
            entry.rows.append(row)
            entry.ids.append(sid)
        entry.fold(since, naive(self.clock()) if self.clock else _LATEST)
        with self._lock:
            if self.since == since:
                self._entries[key] = entry
                self._stale.discard(key)

    # ---- the readers' side ------------------------------------------------------------------

    def usage_total(
        self, since: datetime, until: datetime, *, user: str | None = None, group: str | None = None
    ) -> dict[str, float]:
        """:meth:`.db.Ledger.usage_total` from memory, the same numbers; :class:`Miss` when it cannot."""
        key = ("user", user) if user is not None else ("group", group)
        lo, hi = naive(since), naive(until)
        with self._lock:
            if self.since is None or lo != self.since:
                raise Miss("another period")
            if key in self._stale:
                raise Miss("being re-read")
            entry = self._entries.get(key)
            if entry is None:
                return as_usage([0, 0.0, 0.0, 0.0, 0.0])
            return entry.total(lo, hi)

    def size(self) -> tuple[int, int]:
        """(keys, sessions held unfolded): what the cache holds."""
        with self._lock:
            return len(self._entries), sum(len(e.rows) for e in self._entries.values())


class CachedUsage:
    """A ledger for :meth:`.quota.Quotas.check`: the usage from the cache, else (``fallback``, a
    :class:`.db.Ledger`) from the ledger; without a fallback a miss raises :class:`Miss`."""

    def __init__(self, cache: UsageCache, fallback: Any = None):
        self.cache, self.fallback = cache, fallback

    def usage_total(self, since, until, *, user=None, group=None) -> dict[str, float]:
        try:
            return self.cache.usage_total(since, until, user=user, group=group)
        except Miss:
            if self.fallback is None:
                raise
            return self.fallback.usage_total(since, until, user=user, group=group)
