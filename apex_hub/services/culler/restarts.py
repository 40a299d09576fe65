"""A rate limit on always-on restarts: at most ``limit`` restarts of one server per ``window``, and an
exponential backoff after each failed restart.

A restart *fails* when the hub refuses it (an HTTP error) or when the server is found stopped again
without having been seen running since the restart (the spawn failed). Seeing the server running
resets the backoff; the restarts still count towards ``limit`` until they leave the window, so a
server that crashes right after every start is restarted at most ``limit`` times per ``window``.
When the limit is reached the culler gives up on that server until the oldest restart leaves the
window, logs an error and writes one ``restart-limit`` line to the ledger.

Pure bookkeeping: the caller passes ``now`` (the culler's injectable clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class _State:
    attempts: list[datetime] = field(default_factory=list)  # restarts within the window
    failures: int = 0  # consecutive failed restarts
    unconfirmed: bool = False  # restarted, not seen running since
    next_try: datetime | None = None
    gave_up_until: datetime | None = None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    detail: str = ""
    gave_up: bool = False  # True once per exhaustion of the limit: log it and record it


class RestartLimiter:
    def __init__(
        self, limit: int = 3, window: float = 3600.0, backoff: float = 60.0, backoff_cap: float = 3600.0
    ):
        if limit < 1:
            raise ValueError(f"restart limit must be at least 1, not {limit}")
        self.limit, self.window = limit, timedelta(seconds=window)
        self.backoff, self.backoff_cap = backoff, backoff_cap
        self._states: dict[tuple, _State] = {}

    def _fail(self, st: _State, now: datetime) -> None:
        st.failures += 1
        st.unconfirmed = False
        delay = min(self.backoff_cap, self.backoff * 2 ** (st.failures - 1))
        st.next_try = (st.attempts[-1] if st.attempts else now) + timedelta(seconds=delay)

    def seen_running(self, key: tuple) -> None:
        st = self._states.get(key)
        if st is not None:
            st.failures, st.unconfirmed, st.next_try = 0, False, None

    def check(self, key: tuple, now: datetime) -> Verdict:
        """May ``key`` be restarted now?"""
        st = self._states.setdefault(key, _State())
        if st.unconfirmed:  # restarted last time and stopped again without running: the spawn failed
            self._fail(st, now)
        st.attempts = [t for t in st.attempts if now - t < self.window]
        if len(st.attempts) >= self.limit:
            until = st.attempts[0] + self.window
            newly = st.gave_up_until != until
            st.gave_up_until = until
            return Verdict(
                False,
                f"{len(st.attempts)} restarts within {self.window}, the limit is {self.limit}:"
                f" giving up until {until.isoformat()}",
                newly,
            )
        st.gave_up_until = None
        if st.next_try is not None and now < st.next_try:
            return Verdict(
                False, f"backing off after {st.failures} failed restart(s) until {st.next_try.isoformat()}"
            )
        return Verdict(True)

    def prune(self, now: datetime) -> int:
        """Forget servers whose bookkeeping says nothing any more (no restart in the window, no
        failure, nothing pending): the culler runs for months over every user. How many went."""
        idle = [
            key
            for key, st in self._states.items()
            if not st.unconfirmed
            and not st.failures
            and st.next_try is None
            and not [t for t in st.attempts if now - t < self.window]
        ]
        for key in idle:
            del self._states[key]
        return len(idle)

    def __len__(self) -> int:
        return len(self._states)

    def attempted(self, key: tuple, now: datetime) -> None:
        st = self._states.setdefault(key, _State())
        st.attempts.append(now)
        st.unconfirmed = True

    def failed(self, key: tuple, now: datetime) -> None:
        """The hub refused the restart."""
        self._fail(self._states.setdefault(key, _State()), now)

    def failures(self, key: tuple) -> int:
        st = self._states.get(key)
        return st.failures if st else 0
