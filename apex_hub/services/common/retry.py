"""Retry with exponential backoff and jitter, for the services' calls to the hub.

Why one place: the culler's hub calls and its stops share the same notion of a *transient* failure
(5xx, 429, a connection error or a timeout); a second copy would drift in what it retries.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from tornado.httpclient import HTTPClientError

log = logging.getLogger("apex_hub.services")


def retryable(exc: BaseException) -> bool:
    """True for what may heal by itself: HTTP 5xx / 429 (ours or tornado's; 599 is a connection
    error there), aiohttp connection errors, timeouts and OS-level socket errors."""
    from .hub import HubAPIError

    if isinstance(exc, HubAPIError):
        return exc.status >= 500 or exc.status == 429
    if isinstance(exc, HTTPClientError):  # tornado's (jupyterhub-idle-culler); 599 = connection error
        return exc.code >= 500 or exc.code == 429
    return isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError))


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """The wait after failed attempt ``attempt`` (1-based): ``base * 2**(attempt-1)`` capped at ``cap``,
    times a jitter in [0.5, 1) so that many clients do not retry in step."""
    return min(cap, base * 2 ** (attempt - 1)) * (0.5 + rand() / 2)


async def with_retries(
    call: Callable[[], Awaitable[Any]],
    *,
    what: str,
    tries: int,
    base: float,
    cap: float,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    logger: logging.Logger | None = None,
) -> Any:
    """Run ``call`` again on 5xx / 429 / connection errors, with exponential backoff and jitter."""
    logger = logger or log
    for attempt in range(1, tries + 1):
        try:
            return await call()
        except Exception as exc:
            if not retryable(exc) or attempt == tries:
                raise
            delay = backoff_delay(attempt, base, cap)
            logger.warning(
                "%s failed (%s), attempt %d/%d, retrying in %.1fs", what, exc, attempt, tries, delay
            )
            await sleep(delay)
    return None


__all__ = ["backoff_delay", "retryable", "with_retries"]
