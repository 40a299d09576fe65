"""The hub's REST API as the services call it: one client, with retries, pagination and errors.

Why one client: the culler, the accounting service and the monitoring service all talk to
``JUPYTERHUB_API_URL`` with their service token. :meth:`HubClient.request` raises
:class:`HubAPIError` on 4xx/5xx and retries transient failures (:mod:`.retry`);
:meth:`HubClient.call` is the raw form the monitoring probe needs (every status is an answer to
judge, nothing is retried) and :attr:`HubClient.session` the HTTP session for requests through the
proxy (the probe's token, not the service's).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp

from .retry import with_retries

#: the Accept header that makes JupyterHub answer ``GET /users`` with ``{"items", "_pagination"}``
PAGINATION_ACCEPT = "application/jupyterhub-pagination+json"


class HubAPIError(Exception):
    def __init__(self, status: int, method: str, path: str, body: Any):
        super().__init__(f"{method} {path}: HTTP {status}: {body}")
        self.status, self.body = status, body


def server_path(user: str, server: str) -> str:
    """The API path of a user's default (``server == ""``) or named server."""
    return f"/users/{quote(user)}/servers/{quote(server)}" if server else f"/users/{quote(user)}/server"


def _decode(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


class HubClient:
    """The hub REST calls of a service, with retries (5xx / 429 / connection errors)."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        tries: int = 5,
        backoff: float = 1.0,
        backoff_cap: float = 60.0,
        sleep=asyncio.sleep,
        page_size: int = 0,
        timeout: float = 60.0,
        logger: logging.Logger | None = None,
    ):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.tries, self.backoff, self.backoff_cap, self.sleep = tries, backoff, backoff_cap, sleep
        self.page_size = page_size
        self.timeout = timeout
        self.log = logger
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session (made on first use, inside the running event loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, extra: dict | None = None) -> dict:
        return {"Authorization": f"token {self.token}", **(extra or {})}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request, no retry and no error raised: ``(status, decoded body)``."""
        async with self.session.request(method, self.api_url + path, json=body, headers=self._headers()) as r:
            text = await r.text()
        return r.status, _decode(text)

    async def _once(
        self, method: str, path: str, params=None, json_body=None, headers=None
    ) -> tuple[int, Any]:
        async with self.session.request(
            method, f"{self.api_url}{path}", params=params, json=json_body, headers=self._headers(headers)
        ) as r:
            body = _decode(await r.text())
            if r.status >= 400:
                raise HubAPIError(r.status, method, path, body)
            return r.status, body

    async def request(self, method: str, path: str, **kw) -> tuple[int, Any]:
        """One call, retried on transient failures; :class:`HubAPIError` for any other 4xx/5xx."""
        return await with_retries(
            lambda: self._once(method, path, **kw),
            what=f"{method} {path}",
            tries=self.tries,
            base=self.backoff,
            cap=self.backoff_cap,
            sleep=self.sleep,
            logger=self.log,
        )

    async def user_pages(self, **params) -> AsyncIterator[list[dict]]:
        """The users a page at a time (JupyterHub's paginated ``GET /users``), each page retried on
        its own: a transient failure repeats one page, not the listing."""
        params = {k: str(v) for k, v in params.items()}
        if self.page_size:
            params["limit"] = str(self.page_size)
        offset = 0
        while True:
            _, body = await self.request(
                "GET",
                "/users",
                params={**params, "offset": str(offset)},
                headers={"Accept": PAGINATION_ACCEPT},
            )
            if isinstance(body, list):  # unpaginated hub
                yield body
                return
            yield body["items"]
            nxt = (body.get("_pagination") or {}).get("next")
            if not nxt:
                return
            offset = int(nxt["offset"])

    async def users(self, **params) -> list[dict]:
        """All users (paginated), with servers and groups."""
        users: list[dict] = []
        async for page in self.user_pages(**params):
            users += page
        return users

    async def user(self, name: str) -> dict | None:
        try:
            return (await self.request("GET", f"/users/{quote(name)}"))[1]
        except HubAPIError as exc:
            if exc.status == 404:
                return None
            raise


__all__ = ["PAGINATION_ACCEPT", "HubAPIError", "HubClient", "server_path"]
