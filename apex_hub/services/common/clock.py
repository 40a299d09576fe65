"""The services' clocks: the real one, and a test-only one that runs ahead by what a file says.

A service takes its wall time (timestamps, staleness) and its monotonic time (the deadlines of its
timeouts) from a :class:`Clock`. :class:`FileOffsetClock` adds the seconds written in a file to both,
read at every call, so that an end-to-end test moves a running service's time forward (past a ready
timeout, a staleness limit) by writing a number (:func:`advance`) instead of waiting that long.
Tests only: a service uses it when an environment variable names the file (never an option).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class Clock:
    """The real time: ``time()`` is the wall clock, ``monotonic()`` the clock deadlines are set on."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FileOffsetClock(Clock):
    """TEST ONLY: the real time plus the seconds in ``path`` (read at every call; no file, an empty
    or unreadable one: 0)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def offset(self) -> float:
        try:
            return float(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0.0

    def time(self) -> float:
        return time.time() + self.offset()

    def monotonic(self) -> float:
        return time.monotonic() + self.offset()


def advance(path: str | os.PathLike, seconds: float) -> float:
    """Move a :class:`FileOffsetClock` on ``path`` ahead by ``seconds`` (atomically); the new offset."""
    path = Path(path)
    offset = FileOffsetClock(path).offset() + seconds
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{offset!r}\n")
    os.replace(tmp, path)
    return offset


__all__ = ["Clock", "FileOffsetClock", "advance"]
