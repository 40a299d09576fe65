"""The ledger's threads: every database call of the service runs here, never on the event loop.

* **one writer thread** — every write (and the reads a write decides on, such as "is this pod's
  session known yet?") runs on it, in the order the service submitted them: the pod watch, the
  re-lists, the hub rounds and the APEL export never interleave inside the database, and SQLite
  has a single writer, as it wants;
* **reader threads** (two) — the short reads: the pre-spawn quota check, the usage page, metrics,
  the hub round's quota checks. A long re-list on the writer never makes the spawner's quota check
  wait; SQLite in WAL mode lets them read while the writer writes, PostgreSQL as well;
* **report threads** (two) — the long scans (``api/sessions``, ``api/usage``, ``api/events``, the
  admins' table of every user): a report over a year of sessions never holds up a quota check.

The threads share the interpreter's lock with the event loop: a thread that gave it up for the
database (SQLite releases it for every row) waits for it up to the switch interval while another
thread computes. The first thread started lowers the process's interval from Python's 5 ms to
:data:`SWITCH_INTERVAL` (never raises it), so that a quota check's read and the loop itself do not
wait behind the writer's Python work for long.

An in-memory SQLite database (``sqlite://``) is one connection per thread to SQLAlchemy, hence one
database per thread: there, reads run on the writer too.

``inline=True`` runs everything on the calling thread — the event loop — as the service did before
(the benchmark's baseline; never in production).
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
SWITCH_INTERVAL = 0.0005  # seconds


class LedgerWorker:
    def __init__(self, url: str = "", *, readers: int = 2, inline: bool = False):
        self.inline = inline
        memory = ":memory:" in url or url.rstrip("/") in ("sqlite:", "sqlite:/")
        self._sizes = {"writer": 1, "reader": 0 if memory else readers, "report": 0 if memory else readers}
        self._pools: dict[str, ThreadPoolExecutor] = {}

    def _pool(self, kind: str) -> ThreadPoolExecutor:
        if not self._sizes[kind]:
            kind = "writer"
        if kind not in self._pools:  # made on first use: a service that never runs starts no thread
            if sys.getswitchinterval() > SWITCH_INTERVAL:
                sys.setswitchinterval(SWITCH_INTERVAL)
            self._pools[kind] = ThreadPoolExecutor(self._sizes[kind], thread_name_prefix=f"ledger-{kind}")
        return self._pools[kind]

    async def _run(self, kind: str, fn: Callable[..., T], args: tuple, kw: dict) -> T:
        if self.inline:
            return fn(*args, **kw)
        return await asyncio.get_running_loop().run_in_executor(
            self._pool(kind), functools.partial(fn, *args, **kw)
        )

    async def write(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)`` on the writer thread, after everything submitted before it."""
        return await self._run("writer", fn, args, kw)

    async def read(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)`` on a reader thread (a short read; it must not write)."""
        return await self._run("reader", fn, args, kw)

    async def report(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)`` on a report thread (a long scan; it must not write)."""
        return await self._run("report", fn, args, kw)

    def close(self) -> None:
        """Finish what was submitted, then end the threads (the ledger can be closed after this)."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.shutdown(wait=True)
