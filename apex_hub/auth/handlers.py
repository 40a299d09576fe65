"""Hub handlers of the APEx authenticator: login with a nonce, logout at the provider,
and the token API for running servers.

The token API (``/hub/api/apex/users/<name>/oidc-token``) lets a workspace ask for a
fresh access token with its own server token: it needs the custom scope
``custom:apex:oidc-token`` filtered to that user (``apex_hub.auth.configure`` grants it
to each user for their own servers), so a server can only ever read its own user's token.
"""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl

from jupyterhub import scopes
from jupyterhub.apihandlers.base import APIHandler
from oauthenticator.oauth2 import (
    OAuthCallbackHandler,
    OAuthLoginHandler,
    OAuthLogoutHandler,
    _deserialize_state,
)
from tornado import web

from .idtoken import login_nonce

TOKEN_SCOPE = "custom:apex:oidc-token"
CUSTOM_SCOPES = {
    TOKEN_SCOPE: {
        "description": "Read the user's current OpenID Connect access token (refreshed when needed).",
    },
}


def define_scopes() -> None:
    """Make the custom scope known to JupyterHub (idempotent)."""
    scopes.define_custom_scopes(CUSTOM_SCOPES)


class APExLoginHandler(OAuthLoginHandler):
    """oauthenticator's login redirect, after discovery, with an OIDC ``nonce``."""

    async def get(self):
        await self.authenticator.discover()
        return super().get()

    def authorize_redirect(self, *args, **kwargs):
        extra = dict(kwargs.get("extra_params") or {})
        state_id = _deserialize_state(extra.get("state", "")).get("state_id")
        if state_id:
            extra["nonce"] = login_nonce(self.authenticator.nonce_secret(self), state_id)
        kwargs["extra_params"] = extra
        return super().authorize_redirect(*args, **kwargs)


class APExCallbackHandler(OAuthCallbackHandler):
    """The OAuth callback, whose URL carries the authorization code and state.

    Tornado logs a refused request (``HTTPError`` with a message) with its full URI; the code of a
    login that failed must not end up in the hub's log, so the summary is scrubbed as JupyterHub's
    access log is.
    """

    def _request_summary(self) -> str:
        path, _, query = (self.request.uri or "").partition("?")
        if query:
            path += "?" + "&".join(f"{k}=[secret]" for k, _ in parse_qsl(query, keep_blank_values=True))
        return f"{self.request.method} {path} ({self.request.remote_ip})"


class APExLogoutHandler(OAuthLogoutHandler):
    """Log out of the hub, revoke the refresh token, then log out at the provider."""

    async def get(self):
        user = self.current_user
        self._apex_auth_state = await user.get_auth_state() if user else None
        return await super().get()

    async def handle_logout(self):
        await super().handle_logout()
        user, state = self._jupyterhub_user, self._apex_auth_state
        if state:
            await self.authenticator.revoke_refresh_token(state)
        if user is not None and state:
            # nothing may use these tokens again: the next login brings new ones
            kept = {
                k: v
                for k, v in state.items()
                if k not in ("access_token", "refresh_token", "id_token", "token_response")
            }
            await user.save_auth_state(kept)

    async def render_logout_page(self):
        redirect = (
            self.authenticator.post_logout_redirect_url
            or f"{self.request.protocol}://{self.request.host}{self.settings['login_url']}"
        )
        try:
            url = await self.authenticator.end_session_url(self._apex_auth_state, redirect)
        except Exception as exc:
            self.log.warning("provider logout unavailable: %s", exc)
            url = None
        if url:
            self.redirect(url)
            return
        return await super().render_logout_page()


class _TokenAPIHandler(APIHandler):
    def _user_or_404(self, user_name: str):
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404, f"No such user: {user_name}")
        return user

    def _require(self, scope: str, user_name: str) -> None:
        if not self.has_scope(f"{scope}!user={user_name}"):
            raise web.HTTPError(403, f"Action is not authorized with current scopes; requires {scope}")

    async def _refreshed(self, user, force: bool):
        model = await self.authenticator.refresh_user(user, self, force=force)
        if not model:
            raise web.HTTPError(
                401,
                f"The login of {user.name} has expired or was revoked; the user"
                " must log in to the hub again.",
            )
        if isinstance(model, dict):
            # groups and admin flag as JupyterHub's own refresh applies them, with the auth state as
            # stored now: another refresh may have finished meanwhile, and its (rotated) tokens win
            async with self.authenticator._lock(user.name):
                model["auth_state"] = await user.get_auth_state() or model["auth_state"]
                await self.auth_to_user(model, user)
        return await user.get_auth_state() or {}

    def _answer(self, state: dict, with_token: bool = True) -> None:
        self.set_header("Cache-Control", "no-store")
        expires_at = state.get("expires_at")
        answer = {
            "expires_at": expires_at,
            "expires_in": int(expires_at - time.time()) if expires_at else None,
        }
        if with_token:
            answer.update(
                access_token=state.get("access_token"),
                token_type=(state.get("token_response") or {}).get("token_type", "Bearer"),
            )
        self.finish(json.dumps(answer))


class OIDCTokenHandler(_TokenAPIHandler):
    """``GET``: the user's access token, refreshed first when it is about to expire."""

    async def get(self, user_name):
        self._require(TOKEN_SCOPE, user_name)
        self._answer(await self._refreshed(self._user_or_404(user_name), force=False))


class OIDCTokenRefreshHandler(_TokenAPIHandler):
    """``POST`` (admins, ``admin:auth_state``): refresh the user's tokens now."""

    async def post(self, user_name):
        self._require("admin:auth_state", user_name)
        self._answer(await self._refreshed(self._user_or_404(user_name), force=True), with_token=False)


def token_api_handlers() -> list:
    define_scopes()
    return [
        (r"/api/apex/users/([^/]+)/oidc-token", OIDCTokenHandler),
        (r"/api/apex/users/([^/]+)/oidc-token/refresh", OIDCTokenRefreshHandler),
    ]
