"""Fault injection and the request log: what the tests break and what the benchmarks count.

A :class:`Fault` answers matching requests with an error status (with ``Retry-After`` for
429), a dropped connection (status 0) or a slow response, once, N times, at a rate, or
following a script such as ``[500, 429, None]`` (None lets that request through).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class RequestRecord:
    method: str
    path: str
    verb: str
    resource: str  # plural, with "/subresource" when there is one
    namespace: str | None
    name: str | None
    status: int = 0
    started: float = 0.0
    duration: float = 0.0
    fault: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Fault:
    status: int | None = 500  # None: pass the request through (after ``delay``); 0: drop the connection
    verb: str | None = None  # get, list, watch, create, update, patch, delete, deletecollection
    resource: str | None = None  # "pods", "pods/status", ...
    namespace: str | None = None
    name: str | None = None
    times: int | None = 1  # how many requests it hits; None: every matching request
    rate: float = 1.0  # probability that a matching request is hit
    retry_after: int | None = None
    delay: float = 0.0  # seconds to wait before answering (after the work is done)
    message: str | None = None
    script: list | None = None  # statuses for successive matching requests, overrides status/times
    hits: int = field(default=0)

    def __post_init__(self):
        if self.script is not None:
            self.script = list(self.script)
            self.times = len(self.script)

    def matches(self, rec: RequestRecord) -> bool:
        return all(
            want is None or want == have
            for want, have in (
                (self.verb, rec.verb),
                (self.resource, rec.resource),
                (self.namespace, rec.namespace),
                (self.name, rec.name),
            )
        )

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def next_status(self) -> int | None:
        status = self.script[self.hits] if self.script is not None else self.status
        self.hits += 1
        return status

    @classmethod
    def from_dict(cls, d: dict) -> Fault:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "hits"}
        return cls(**known)


@dataclass
class Hold:
    """Requests that ``holds`` matches wait until one that ``until`` matches arrives (or ``timeout``).

    Why: to prove that a client sends B *before* it has the answer to A, hold A until B arrives; a
    client that waited for A's answer never sends B, the hold times out (``timed_out``) and the order
    shows it. No margin of time a loaded machine could miss, unlike an injected latency.
    """

    holds: Callable[[RequestRecord], bool]
    until: Callable[[RequestRecord], bool]
    timeout: float = 30.0
    held: int = 0
    timed_out: bool = False
    released: asyncio.Event = field(default_factory=asyncio.Event)


class Faults:
    """The active faults, the injected latency and the request log of one kubesim."""

    def __init__(self, seed: int | None = 0):
        self.rules: list[Fault] = []
        self.latency = 0.0  # seconds added to every API request
        self.latency_by_verb: dict[str, float] = {}
        self.holds: list[Hold] = []
        self.log: list[RequestRecord] = []
        self.log_limit = 200_000
        self._rng = random.Random(seed)

    def add(self, fault: Fault | None = None, **kw) -> Fault:
        fault = fault or Fault(**kw)
        self.rules.append(fault)
        return fault

    def clear(self) -> None:
        self.rules.clear()
        for hold in self.holds:
            hold.released.set()
        self.holds.clear()
        self.latency = 0.0
        self.latency_by_verb.clear()

    def delay_for(self, rec: RequestRecord) -> float:
        return self.latency_by_verb.get(rec.verb, self.latency)

    async def wait_holds(self, rec: RequestRecord) -> None:
        """Release the holds ``rec`` is awaited by, then wait on those that hold it."""
        for hold in self.holds:
            if hold.until(rec):
                hold.released.set()
        for hold in self.holds:
            if hold.released.is_set() or not hold.holds(rec):
                continue
            hold.held += 1
            try:
                await asyncio.wait_for(hold.released.wait(), hold.timeout)
            except TimeoutError:
                hold.timed_out = True
                hold.released.set()  # the others held by it go on too

    def pick(self, rec: RequestRecord) -> Fault | None:
        for fault in self.rules:
            if fault.exhausted or not fault.matches(rec):
                continue
            if fault.rate < 1.0 and self._rng.random() >= fault.rate:
                continue
            return fault
        return None

    def record(self, rec: RequestRecord) -> None:
        if len(self.log) >= self.log_limit:
            del self.log[: self.log_limit // 2]
        self.log.append(rec)

    def reset_log(self) -> None:
        self.log.clear()

    def counts(self, since: float = 0.0) -> Counter:
        """Requests per ``"verb resource"`` (e.g. ``"create pods"``)."""
        return Counter(f"{r.verb} {r.resource}" for r in self.log if r.started >= since)


def now() -> float:
    return time.monotonic()
