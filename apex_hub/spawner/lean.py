"""Keeping the hub's event loop free: cheap reflector watches and frozen import-time objects.

Why: with many spawns at once the hub's loop stalled for hundreds of milliseconds
(``benchmarks/spawner_latency.py``), and two things did most of it:

* **KubeSpawner's reflectors** open a new ``kubernetes_asyncio.watch.Watch`` every few
  seconds (each watch ends after ``timeout_seconds``). ``Watch()`` builds an ``ApiClient``
  of its own (an SSL context loading the system's CA bundle: 30-100 ms on the loop) only to
  turn every event into a typed model (``V1Pod``, ``CoreV1Event``: a few ms each, with
  date parsing) that the reflectors never read: they keep ``raw_object``. :class:`LeanWatch`
  is the same watch without that client and without the models.
* **Full garbage collections** walk every object the hub imported (kubernetes_asyncio's
  models alone are ~190k objects) and block the loop for their whole length.
  :func:`freeze_once` moves the objects alive at that moment out of the collector's sight
  (``gc.freeze()``), so later full collections only walk what the hub made since.

Both are applied by ``APExSpawner`` (traits ``lean_reflectors`` and ``gc_freeze``, on by
default). And when many spawns start (or stops begin) at once, their bursts of CPU work take
turns (:func:`take_turn`), one per loop iteration, instead of running back to back.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections import deque
from types import SimpleNamespace

from kubernetes_asyncio import watch as _watch

log = logging.getLogger(__name__)


class _NoClient:
    """Stands in for the ``ApiClient`` that ``Watch`` would build: nothing to deserialize with,
    nothing to close."""

    async def close(self) -> None:
        return None


class LeanWatch(_watch.Watch):
    """``kubernetes_asyncio``'s ``Watch`` handing out the events' raw objects only.

    ``event["object"]`` is the raw dict (as for a kind without a model); ``raw_object``,
    ``type`` and the resource version are as usual.
    """

    def __init__(self, return_type: str | None = None) -> None:
        # Not super().__init__(): that builds an ApiClient (see the module docstring).
        self._raw_return_type = return_type
        self._stop = False
        self._api_client = _NoClient()
        self.resource_version = None
        self.resp = None

    def get_return_type(self, func: object) -> str | None:
        return self._raw_return_type  # None: events are not turned into models


#: What ``kubespawner.reflector`` finds under its name ``watch`` when the lean watch is on.
_LEAN_MODULE = SimpleNamespace(Watch=LeanWatch)


def use_lean_watch(enabled: bool = True) -> None:
    """Make KubeSpawner's reflectors open :class:`LeanWatch` es (or, ``False``, the original)."""
    from kubespawner import reflector

    reflector.watch = _LEAN_MODULE if enabled else _watch


def lean_watch_in_use() -> bool:
    from kubespawner import reflector

    return reflector.watch is _LEAN_MODULE


_frozen = False


def freeze_once(logger: logging.Logger | None = None) -> bool:
    """``gc.freeze()`` once per process (True when this call froze); logged to ``logger``.

    No collection first: a full one would be the very pause this avoids. Whatever garbage
    exists at that moment stays (bounded: once); objects made afterwards are collected as
    usual. One collection right after, over the few objects left outside (well under a
    millisecond), resets the collector's count of long-lived objects: the next full
    collections then come after a quarter of what is outside, not of everything frozen,
    so they stay small instead of one walking tens of thousands of objects mid-burst.
    """
    global _frozen
    if _frozen:
        return False
    _frozen = True
    gc.freeze()
    gc.collect()
    (logger or log).info(
        "gc.freeze(): %d objects kept out of garbage collections (APExSpawner.gc_freeze)",
        gc.get_freeze_count(),
    )
    return True


def forget_freeze() -> None:
    """Undo :func:`freeze_once` (``gc.unfreeze()``), so the next call freezes again (benchmarks)."""
    global _frozen
    _frozen = False
    gc.unfreeze()


class _Turns:
    """Hands out turns, at most one per event-loop iteration, first come first served."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.busy = False
        self.waiters: deque[asyncio.Future] = deque()

    async def take(self) -> None:
        if self.busy:
            turn = self.loop.create_future()
            self.waiters.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._next()  # given the turn, then cancelled: pass it on
                raise
        else:
            self.busy = True
        self.loop.call_soon(self._next)

    def _next(self) -> None:
        while self.waiters:
            turn = self.waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.busy = False


_TURNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def take_turn() -> None:
    """Wait for this task's turn to do a burst of CPU work (a spawn's planning, a pod
    manifest, a stop's requests).

    Free when nobody else asks; when a hundred spawns start at once, their bursts run one
    per loop iteration instead of all in one (which would stall the hub for the sum of them),
    and timers and I/O are served between any two.
    """
    loop = asyncio.get_running_loop()
    turns = _TURNS.get(loop)
    if turns is None:
        turns = _TURNS[loop] = _Turns(loop)
    await turns.take()
