"""Waiting in tests for something that happens, never for a length of time."""

from __future__ import annotations

import asyncio
import inspect


async def until(check, interval: float = 0.02):
    """Poll ``check()`` (a function, sync or async) until it returns something truthy; that value.

    No deadline: on a loaded machine anything may take long, and a condition that never comes is
    a hang, which the suite's hang guard (pytest-timeout, ``--timeout`` in scripts/test.sh) ends
    with every thread's stack. ``interval`` only sets how often it looks.
    """
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
