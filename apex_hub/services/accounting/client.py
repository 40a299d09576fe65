"""Quota check before spawn, for ``c.Spawner.pre_spawn_hook`` (runs in the hub).

``configure(c, accounting={"quotas": ...})`` installs :func:`pre_spawn_hook` itself; by hand::

    from apex_hub.services.accounting.client import check_quota
    async def hook(spawner):
        await check_quota("http://127.0.0.1:10101/services/apex-accounting", spawner.user.name, token)
    c.Spawner.pre_spawn_hook = hook
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from tornado import web

log = logging.getLogger("apex_hub.accounting.client")


class QuotaExceeded(web.HTTPError):
    """403 with the budget, the usage and the reset time (JupyterHub shows the message on the spawn page)."""

    def __init__(self, status: dict):
        super().__init__(403, status.get("message") or "usage budget exhausted")
        self.status = status
        self.reason = "Forbidden"


async def check_quota(
    url: str, user: str, token: str, *, timeout: float = 10.0, fail_open: bool = True
) -> dict:
    """Ask the accounting service about ``user``; raise :class:`QuotaExceeded` (403) when over budget.

    ``url``: the service's base URL including its prefix. ``fail_open``: when the service cannot be
    reached, log and allow the spawn (``False``: refuse with 503).
    """
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get(
                f"{url.rstrip('/')}/api/quota/{quote(user, safe='')}",
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                body = await r.json(content_type=None)
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {body}")
    except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as exc:
        if fail_open:
            log.warning("quota check for %s failed (%s): allowing the spawn", user, exc)
            return {"user": user, "allowed": True, "error": str(exc)}
        raise web.HTTPError(
            503, f"the usage quota cannot be checked right now ({exc}); try again later"
        ) from None
    if not body.get("allowed", True):
        raise QuotaExceeded(body)
    return body


def pre_spawn_hook(
    url: str, token: str, *, fail_open: bool = True, then: Callable[[Any], Any] | None = None
) -> Callable[[Any], Any]:
    """A ``pre_spawn_hook`` that checks the quota, then calls ``then(spawner)`` (an existing hook)."""

    async def hook(spawner):
        await check_quota(url, spawner.user.name, token, fail_open=fail_open)
        if then is not None:
            result = then(spawner)
            if hasattr(result, "__await__"):
                await result

    return hook
