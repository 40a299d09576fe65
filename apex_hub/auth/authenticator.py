"""``APExOIDCAuthenticator``: OpenID Connect login for the APEx workspaces.

Built on oauthenticator 17's ``GenericOAuthenticator`` (authorization code + PKCE,
``auth_state``, ``manage_groups``, ``allowed_groups``/``admin_groups``,
``refresh_user``) and adding what it lacks:

* **discovery** from the issuer URL (endpoints, scopes, keys; refetched on rotation);
* **verified ID tokens** (signature, ``iss``, ``aud``/``azp``, ``exp``, ``nonce``);
* **groups in the IdP's order** from several claims, EGI entitlement URNs included,
  and a **primary group** for accounting;
* **refresh before expiry**, one refresh per user at a time (a rotated refresh token
  is never spent twice), a failed refresh means a new login rather than an error;
* **the access token in the workspace**: each refresh rewrites the token Secret of
  the user's running servers (see ``APExSpawner.publish_oidc_token``);
* **logout** at the provider (RP-initiated) and refresh-token revocation (RFC 7009).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
import time
import weakref
from typing import Any
from urllib.parse import urlencode

from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import _deserialize_state
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import Bool, Enum, Float, List, Unicode, default

from .claims import collect_groups, primary_group
from .handlers import APExCallbackHandler, APExLoginHandler, APExLogoutHandler, token_api_handlers
from .idtoken import TokenRejected, login_nonce, unverified_claims, verify_id_token
from .presets import PRESETS
from .provider import DiscoveryError, Provider

#: The nonce expected by the login being completed in this task (unset on refresh).
_expected_nonce: contextvars.ContextVar[str | None] = contextvars.ContextVar("apex_nonce", default=None)
#: The claims of the login being refreshed (set by refresh_user): its subject must not change, and
#: they stand in when a refresh answer carries no new ID token.
_previous_claims: contextvars.ContextVar[dict | None] = contextvars.ContextVar("apex_claims", default=None)


class APExOIDCAuthenticator(GenericOAuthenticator):
    """OpenID Connect with verified ID tokens, ordered groups and safe refresh."""

    login_handler = APExLoginHandler
    callback_handler = APExCallbackHandler
    logout_handler = APExLogoutHandler

    # -- the provider -----------------------------------------------------------------------

    provider_preset = Enum(
        list(PRESETS),
        "generic",
        config=True,
        help="""Defaults for a kind of provider: `keycloak` (groups from `groups`, realm and
        client roles), `egi-checkin` (issuer https://aai.egi.eu/auth/realms/egi, user name from
        `voperson_id`, groups from `eduperson_entitlement`) or `generic`. Options you set
        yourself always win over the preset.""",
    )

    def _preset(self, name: str, fallback: Any = None) -> Any:
        return PRESETS[self.provider_preset].get(name, fallback)

    oidc_issuer = Unicode(
        config=True,
        help="""The OpenID provider's issuer URL, e.g. `https://keycloak.example.org/realms/apex`.
        Everything else (endpoints, keys, scopes) is read from
        `<issuer>/.well-known/openid-configuration`. Explicitly configured `authorize_url`,
        `token_url` or `userdata_url` are kept.""",
    )

    @default("oidc_issuer")
    def _oidc_issuer_default(self):
        return self._preset("oidc_issuer", "")

    discovery_ttl = Float(
        3600,
        config=True,
        help="Seconds the provider's discovery document is cached (keys are refetched at once on an unknown key id).",
    )
    id_token_leeway = Float(
        30, config=True, help="Seconds of clock skew tolerated when checking `exp`/`iat` of ID tokens."
    )

    # -- claims -----------------------------------------------------------------------------

    @default("username_claim")
    def _username_claim_default(self):
        return self._preset("username_claim", "preferred_username")

    @default("scope")
    def _scope_default(self):
        return list(self._preset("scope", ["openid", "profile", "email", "offline_access"]))

    @default("login_service")
    def _login_service_default(self):
        return self._preset("login_service", "OpenID Connect")

    @default("manage_groups")
    def _manage_groups_default(self):
        return True

    @default("enable_auth_state")
    def _enable_auth_state_default(self):
        return True

    group_claims = List(
        Unicode(),
        config=True,
        help="""Claims holding group names, in order (dotted paths into the ID token and
        userinfo: `groups`, `realm_access.roles`, `resource_access.{client_id}.roles`).
        A leading `/` (Keycloak group paths) is dropped. Default: from `provider_preset`.""",
    )

    @default("group_claims")
    def _group_claims_default(self):
        return list(self._preset("group_claims", ["groups"]))

    entitlement_claims = List(
        Unicode(),
        config=True,
        help="""Claims holding AARC-G002 entitlement URNs (EGI: `eduperson_entitlement`), e.g.
        `urn:mace:egi.eu:group:vo.example.org:role=member#aai.egi.eu`.""",
    )

    @default("entitlement_claims")
    def _entitlement_claims_default(self):
        return list(self._preset("entitlement_claims", []))

    entitlement_roles = List(
        Unicode(),
        ["member"],
        config=True,
        help="Entitlement roles that make a group membership (`*`: any role).",
    )
    entitlement_group_template = Unicode(
        "{group}",
        config=True,
        help="""JupyterHub group name made from an entitlement: `{group}` is the full group path
        (`vo.example.org:sub`), `{vo}` the VO, `{role}` the role, e.g. `{group}:{role}`.""",
    )
    primary_groups = List(
        Unicode(),
        config=True,
        help="""Groups that may be a user's primary group (billed by accounting): the first of
        the user's groups, in the provider's order, that is listed here. Empty: `allowed_groups`,
        or any group when that is empty too.""",
    )
    service_account_pattern = Unicode(
        r"^service-account-",
        config=True,
        help="""User names matching this regular expression are service accounts (Keycloak names
        client-credentials users `service-account-<client>`) and cannot log in. Empty: no check.""",
    )

    # -- refresh ----------------------------------------------------------------------------

    refresh_leeway = Float(
        60,
        config=True,
        help="""Refresh the access token when it expires within this many seconds (checked
        locally, without calling the provider, on every hub request older than
        `auth_refresh_age`). The workspace's token file is rewritten after each refresh.""",
    )

    assumed_token_lifetime = Float(
        300,
        config=True,
        help="""Lifetime assumed for an access token whose provider gives neither `expires_in`
        nor a JWT `exp` (both are usual): it is refreshed after this many seconds.""",
    )

    # -- logout -----------------------------------------------------------------------------

    end_session_on_logout = Bool(
        True,
        config=True,
        help="Send the user to the provider's `end_session_endpoint` on logout (RP-initiated logout).",
    )
    revoke_on_logout = Bool(
        True,
        config=True,
        help="Revoke the refresh token at the provider's `revocation_endpoint` (RFC 7009) on logout.",
    )
    post_logout_redirect_url = Unicode(
        config=True,
        help="""Where the provider sends the browser after logout (must be registered with the
        client). Default: the hub's login page, as an absolute URL of the current request.""",
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._provider: Provider | None = None
        # one lock per user while someone holds or waits for it: weak values, so the map does not grow
        # with every user who ever refreshed (a hub runs for months)
        self._refresh_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # -- discovery ----------------------------------------------------------------------------

    @property
    def provider(self) -> Provider:
        if self._provider is None:
            if not self.oidc_issuer:
                raise DiscoveryError("APExOIDCAuthenticator.oidc_issuer is not set")
            self._provider = Provider(self.oidc_issuer, self._fetch_json, ttl=self.discovery_ttl)
        return self._provider

    async def _fetch_json(self, url: str) -> dict:
        return await self.httpfetch(
            url,
            "OIDC discovery",
            method="GET",
            headers={"Accept": "application/json"},
            validate_cert=self.validate_server_cert,
        )

    async def discover(self) -> None:
        """Fill the endpoints from the issuer's metadata (kept when set explicitly)."""
        if not self.oidc_issuer:
            self.log.error("APExOIDCAuthenticator.oidc_issuer is not set: nobody can log in")
            raise web.HTTPError(
                500,
                "The hub's login is not configured yet (no OpenID provider); the"
                " administrators have been told.",
            )
        try:
            meta = await self.provider.metadata()
        except DiscoveryError as exc:
            self.log.error("OpenID provider discovery failed: %s", exc)
            raise web.HTTPError(
                503, "The login service is unreachable; please try again in a minute."
            ) from None
        if not self.authorize_url:
            self.authorize_url = meta.authorization_endpoint
        if not self.token_url:
            self.token_url = meta.token_endpoint
        if not self.userdata_url and meta.userinfo_endpoint:
            self.userdata_url = meta.userinfo_endpoint
        if meta.scopes_supported:
            missing = [s for s in self.scope if s not in meta.scopes_supported]
            if missing and not getattr(self, "_warned_scopes", False):
                self._warned_scopes = True
                self.log.warning("the provider does not list scope(s) %s as supported", ", ".join(missing))

    # -- login ------------------------------------------------------------------------------

    async def authenticate(self, handler, data=None, **kwargs):
        await self.discover()
        state = handler.get_state_cookie()
        state_id = _deserialize_state(state).get("state_id") if state else None
        if not state_id:
            raise web.HTTPError(400, "OAuth state missing from cookies")
        token = _expected_nonce.set(login_nonce(self.nonce_secret(handler), state_id))
        try:
            return await super().authenticate(handler, data, **kwargs)
        except HTTPClientError as exc:
            # the provider refused the code (spent, expired, for another client): the user's login
            # is what failed, not the hub; neither the page nor the log carries the code
            self.log.warning(
                "login refused: the provider did not accept the authorization code (%s)", _reason(exc)
            )
            raise web.HTTPError(
                400,
                "The login could not be completed: the identity provider did not"
                " accept this sign-in (it may have been used already or expired)."
                " Please sign in again.",
            ) from None
        finally:
            _expected_nonce.reset(token)

    def nonce_secret(self, handler) -> bytes:
        secret = handler.settings.get("cookie_secret") or b""
        return secret if isinstance(secret, bytes) else str(secret).encode()

    async def token_to_user(self, token_info):
        """Verified ID-token claims, completed by the userinfo endpoint."""
        previous = _previous_claims.get()
        if previous and not token_info.get("id_token"):
            claims = dict(previous)  # a refresh answer need not carry a new ID token
        else:
            try:
                claims = await verify_id_token(
                    token_info.get("id_token"),
                    self.provider,
                    self.client_id,
                    nonce=_expected_nonce.get(),
                    leeway=self.id_token_leeway,
                )
            except TokenRejected as exc:
                self.log.warning("login refused: %s", exc)
                raise web.HTTPError(403, f"Login refused: {exc}.") from None
        if previous and claims.get("sub") != previous.get("sub"):
            raise web.HTTPError(403, "Login refused: the refreshed tokens belong to another subject.")
        info = dict(claims)
        if self.userdata_url:
            userinfo = await super().token_to_user(token_info)
            if userinfo.get("sub") != claims.get("sub"):
                self.log.warning("login refused: userinfo subject differs from the ID token's")
                raise web.HTTPError(
                    403, "Login refused: the provider's user information does not match the ID token."
                )
            info.update(userinfo)
        return info

    def user_info_to_username(self, user_info):
        name = super().user_info_to_username(user_info)
        if self.service_account_pattern and re.search(self.service_account_pattern, str(name)):
            self.log.warning("login refused for service account %r", name)
            raise web.HTTPError(
                403,
                f"{name!r} is a service account; service accounts cannot log in"
                " to the workspaces. Use a personal account.",
            )
        return name

    def group_claim_paths(self) -> list[str]:
        return [p.replace("{client_id}", self.client_id) for p in self.group_claims]

    def build_auth_state_dict(self, token_info, user_info):
        state = super().build_auth_state_dict(token_info, user_info)
        state["expires_at"] = self.access_token_expiry(token_info)
        groups = collect_groups(
            user_info,
            self.group_claim_paths(),
            self.entitlement_claims,
            self.entitlement_roles,
            self.entitlement_group_template,
        )
        state["groups"] = groups
        state["primary_group"] = primary_group(groups, self.primary_groups or self.allowed_groups)
        return state

    def access_token_expiry(self, token_info: dict) -> float:
        """When the access token expires (epoch seconds): ``expires_in``, or its own ``exp``."""
        candidates = []
        if token_info.get("expires_in") is not None:
            try:
                candidates.append(time.time() + float(token_info["expires_in"]))
            except (TypeError, ValueError):
                pass
        exp = unverified_claims(token_info.get("access_token", "")).get("exp")
        if isinstance(exp, (int, float)):
            candidates.append(float(exp))
        # neither: assume a short life, so that the token is renewed rather than left to expire
        return min(candidates) if candidates else time.time() + self.assumed_token_lifetime

    async def get_user_groups(self, auth_state: dict):
        return set(auth_state.get("groups") or [])

    # -- refresh ------------------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        """The refresh lock of user ``name`` (the same object for everyone holding or awaiting it)."""
        lock = self._refresh_locks.get(name)
        if lock is None:
            lock = self._refresh_locks[name] = asyncio.Lock()
        return lock

    async def refresh_user(self, user, handler=None, force: bool = False, **kwargs):
        """Refresh the tokens when the access token is about to expire (or ``force``).

        One refresh per user at a time: waiters re-read the auth state after the lock,
        so they see the tokens the first refresh stored and never spend a rotated
        refresh token again. ``False`` (a new login) when the refresh fails.
        """
        if not self.enable_auth_state:
            return True
        async with self._lock(user.name):
            auth_state = await user.get_auth_state()
            if not auth_state or not auth_state.get("access_token"):
                # never logged in here (e.g. made through the API, as the monitoring probe is)
                return self._refresh_failed(user, handler)
            expires_at = auth_state.get("expires_at")
            if not force and expires_at is not None and expires_at - time.time() > self.refresh_leeway:
                return True
            refresh_token = auth_state.get("refresh_token")
            if not refresh_token:
                self.log.info(
                    "access token of %s expired and there is no refresh token: new login needed", user.name
                )
                return self._refresh_failed(user, handler)
            await self.discover()
            token = _previous_claims.set(auth_state.get(self.user_auth_state_key) or {"sub": None})
            try:
                token_info = await self.get_token_info(
                    handler, self.build_refresh_token_request_params(refresh_token)
                )
                token_info.setdefault("refresh_token", refresh_token)
                auth_model = await self._token_to_auth_model(token_info)
            except (web.HTTPError, HTTPClientError, OSError, ValueError) as exc:
                self.log.warning(
                    "refreshing the tokens of %s failed (%s): new login needed", user.name, _reason(exc)
                )
                return self._refresh_failed(user, handler)
            finally:
                _previous_claims.reset(token)
            if auth_model["name"] != user.name:
                self.log.warning(
                    "refresh for %s returned user %s: new login needed", user.name, auth_model["name"]
                )
                return False
            await user.save_auth_state(auth_model["auth_state"])  # before the lock is released
            self.log.info(
                "refreshed the tokens of %s (expires in %.0f s)",
                user.name,
                auth_model["auth_state"]["expires_at"] - time.time(),
            )
            # still under the lock: two refreshes in a row write the Secret in the order they refreshed,
            # so the workspace never ends with the older token
            await self.publish_token(user, auth_model["auth_state"])
        return auth_model

    def _refresh_failed(self, user, handler) -> bool:
        """What a failed refresh means for this request: a new login, unless none can be asked for.

        A request made with an API token (the user's server reporting activity, a script) or by someone
        else (an admin, a service) cannot be sent to the login page. JupyterHub 6 keeps such requests
        working itself; JupyterHub 5.5 would refuse them (403 "stale auth info"), so a busy server's
        activity would stop counting and the culler could stop it. There the stale login is kept for
        that request, and the next browser request asks for a new login.
        """
        if _hub_keeps_token_requests():
            return False
        by_token = bool(getattr(handler, "_token_authenticated", False))
        requester = getattr(handler, "_jupyterhub_user", None)
        by_other = requester is not None and requester is not user
        if by_token or by_other:
            self.log.warning(
                "%s's login could not be refreshed; the %s request keeps the stale login"
                " (JupyterHub < 6 cannot ask for a new login there)",
                user.name,
                "API token" if by_token else "cross-user",
            )
            return True
        return False

    async def publish_token(self, user, auth_state: dict) -> None:
        """Rewrite the token Secret of each running server of ``user``."""
        for spawner in list(getattr(user, "spawners", {}).values()):
            publish = getattr(spawner, "publish_oidc_token", None)
            if publish is None or not (spawner.ready or spawner.pending == "spawn"):
                continue
            try:
                await publish(auth_state)
            except Exception as exc:  # the refresh itself succeeded; the next one retries
                self.log.warning(
                    "could not update the token of %s's server %r: %s", user.name, spawner.name, exc
                )

    # -- logout -------------------------------------------------------------------------------

    async def revoke_refresh_token(self, auth_state: dict) -> bool:
        """RFC 7009 revocation of the refresh token, where the provider supports it."""
        refresh_token = (auth_state or {}).get("refresh_token")
        if not (self.revoke_on_logout and refresh_token):
            return False
        meta = await self.provider.metadata()
        if not meta.revocation_endpoint:
            return False
        body = {"token": refresh_token, "token_type_hint": "refresh_token"}
        if not self.basic_auth:
            body.update(client_id=self.client_id, client_secret=self.client_secret)
        try:
            await self.httpfetch(
                meta.revocation_endpoint,
                "revoking the refresh token",
                method="POST",
                parse_json=False,
                body=urlencode(body),
                headers=self.build_token_info_request_headers(),
                validate_cert=self.validate_server_cert,
            )
        except Exception as exc:
            self.log.warning("revoking a refresh token failed: %s", exc)
            return False
        return True

    async def end_session_url(self, auth_state: dict | None, post_logout_redirect_uri: str) -> str | None:
        """The provider's logout URL for this session, or ``None``."""
        if not self.end_session_on_logout:
            return None
        meta = await self.provider.metadata()
        if not meta.end_session_endpoint:
            return None
        params = {"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        if auth_state and auth_state.get("id_token"):
            params["id_token_hint"] = auth_state["id_token"]
        sep = "&" if "?" in meta.end_session_endpoint else "?"
        return meta.end_session_endpoint + sep + urlencode(params)

    def get_handlers(self, app):
        return super().get_handlers(app) + token_api_handlers()


def _hub_keeps_token_requests() -> bool:
    """JupyterHub >= 6 decides itself what a failed refresh means for token-authenticated requests."""
    from ..hubconfig import jupyterhub_version

    return jupyterhub_version() >= (6, 0)


def _reason(exc: Exception) -> str:
    """A log line's worth of why a provider call failed (the OAuth ``error``, never a token)."""
    response = getattr(exc, "response", None)
    if response is not None and response.body:
        try:
            body = json.loads(response.body)
            return f"{exc}: {body.get('error')} {body.get('error_description', '')}".strip()
        except (ValueError, AttributeError):
            pass
    return str(getattr(exc, "log_message", None) or exc)
