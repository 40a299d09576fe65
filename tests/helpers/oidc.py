"""A real OpenID provider (apex_hub.localidp: oidc-provider on Node.js) for the auth tests."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlencode, urlparse

import aiohttp
import pytest
import pytest_asyncio

from apex_hub.localidp import LocalIdP, login

CLIENT_ID, CLIENT_SECRET = "apex-hub", "s3cret-for-tests"

USERS = [
    {
        "username": "alice",
        "password": "alice-pw",
        "claims": {
            "preferred_username": "alice",
            "email": "alice@example.org",
            "name": "Alice",
            "groups": ["/apex-small", "students"],
            "realm_access": {"roles": ["offline_access", "apex-users"]},
            "eduperson_entitlement": ["urn:mace:egi.eu:group:vo.apex.esa.int:role=member#aai.egi.eu"],
        },
    },
    {
        "username": "bob",
        "password": "bob-pw",
        "claims": {"preferred_username": "bob", "groups": ["apex-admins", "apex-large"]},
    },
    {
        "username": "carol",
        "password": "carol-pw",
        "claims": {"preferred_username": "carol", "groups": ["apex-small"]},
    },
    {
        "username": "dave",
        "password": "dave-pw",
        "claims": {"preferred_username": "dave", "groups": ["apex-small"]},
    },
    {
        "username": "eve",
        "password": "eve-pw",
        "claims": {"preferred_username": "eve", "groups": ["outsiders"]},
    },
    {
        "username": "service-account-robot",
        "password": "service-account-robot-pw",
        "claims": {"preferred_username": "service-account-robot", "groups": ["apex-small"]},
    },
]


def skip_without_idp() -> None:
    reason = LocalIdP.available()
    if reason:
        pytest.skip(reason)


def make_idp(redirect_base: str = "http://127.0.0.1:9/", **options) -> LocalIdP:
    """A provider with the test users and one confidential client redirecting to ``redirect_base``."""
    client = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [redirect_base.rstrip("/") + "/hub/oauth_callback", "http://127.0.0.1:9/cb"],
        "post_logout_redirect_uris": [redirect_base.rstrip("/") + "/hub/login"],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
    }
    return LocalIdP(users=USERS, clients=[client], **options)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def idp():
    """The provider of one test module (skipped where Node.js or oidc-provider is missing)."""
    skip_without_idp()
    async with make_idp() as provider:
        yield provider


def grant_lines(idp: LocalIdP, grant_type: str, sub: str | None = None) -> list[str]:
    """The provider's log lines for token-endpoint grants of one type (and subject)."""
    lines = idp.log_path.read_text(errors="replace").splitlines() if idp.log_path.exists() else []
    return [
        line
        for line in lines
        if f" token grant_type={grant_type} " in line
        and (sub is None or f"sub={sub} " in line or "error=" in line)
    ]


async def code_flow_tokens(idp: LocalIdP, username: str, password: str, nonce: str = "n-0") -> dict:
    """A full authorization code + PKCE login at ``idp``, as a plain HTTP client: the token response."""
    meta_url = idp.discovery_url
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect = "http://127.0.0.1:9/cb"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(meta_url) as r:
            meta = await r.json()
        query = urlencode(
            {
                "client_id": CLIENT_ID,
                "response_type": "code",
                "redirect_uri": redirect,
                "scope": "openid profile email offline_access",
                "state": "s-1",
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        url, resp = await login(
            http, f"{meta['authorization_endpoint']}?{query}", username, password, redirect
        )
        assert resp is None, f"login did not come back to the client: {url}"
        code = parse_qs(urlparse(url).query)["code"][0]
        async with http.post(
            meta["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "code_verifier": verifier,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        ) as r:
            assert r.status == 200, await r.text()
            return await r.json()
