"""APExOIDCAuthenticator in process against the real provider: presets, claims to groups,
refusals with their log lines, and the access token's expiry."""

from __future__ import annotations

import logging
import time

import jwt
import pytest
from tornado import web
from traitlets import TraitError

from apex_hub.auth import APExOIDCAuthenticator
from apex_hub.auth.authenticator import _expected_nonce, _previous_claims
from tests.helpers.oidc import CLIENT_ID, CLIENT_SECRET, code_flow_tokens, idp  # noqa: F401 - idp is a fixture

pytestmark = [pytest.mark.process, pytest.mark.asyncio(loop_scope="module")]


def authenticator(idp, **options) -> APExOIDCAuthenticator:
    return APExOIDCAuthenticator(
        oidc_issuer=idp.issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, userdata_url="", **options
    )


async def test_presets_fill_what_is_not_configured():
    egi = APExOIDCAuthenticator(provider_preset="egi-checkin")
    assert egi.oidc_issuer == "https://aai.egi.eu/auth/realms/egi"
    assert egi.username_claim == "voperson_id" and egi.entitlement_claims == ["eduperson_entitlement"]
    assert "eduperson_entitlement" in egi.scope and egi.login_service == "EGI Check-in"
    mine = APExOIDCAuthenticator(provider_preset="egi-checkin", username_claim="sub", oidc_issuer="https://x")
    assert mine.username_claim == "sub" and mine.oidc_issuer == "https://x"  # configured wins
    kc = APExOIDCAuthenticator(provider_preset="keycloak", client_id="hub")
    assert kc.group_claim_paths() == ["groups", "realm_access.roles", "resource_access.hub.roles"]
    assert kc.enable_auth_state and kc.manage_groups
    with pytest.raises(TraitError, match=r"provider_preset.*expected any of"):
        APExOIDCAuthenticator(provider_preset="okta")


async def test_a_real_login_becomes_an_auth_model_with_ordered_groups(idp):
    tokens = await code_flow_tokens(idp, "alice", "alice-pw", nonce="n-1")
    auth = authenticator(
        idp,
        provider_preset="egi-checkin",
        username_claim="preferred_username",
        group_claims=["groups"],
        allowed_groups={"students", "vo.apex.esa.int"},
    )
    nonce = _expected_nonce.set("n-1")
    try:
        model = await auth._token_to_auth_model(tokens)
    finally:
        _expected_nonce.reset(nonce)
    state = model["auth_state"]
    assert model["name"] == "alice"
    assert state["groups"] == ["apex-small", "students", "vo.apex.esa.int"]  # claims, then entitlements
    assert model["groups"] == sorted(state["groups"])
    assert state["primary_group"] == "students"  # the first *allowed* group
    assert abs(state["expires_at"] - (time.time() + int(tokens["expires_in"]))) < 30


@pytest.mark.parametrize(
    "tamper, message",
    [
        (
            lambda t, idp: {**t, "id_token": _resigned(t["id_token"], idp, aud="another-client")},
            "Login refused: the ID token is not meant for this hub",
        ),
        (
            lambda t, idp: {**t, "id_token": _resigned(t["id_token"], idp, exp=int(time.time()) - 600)},
            "Login refused: the ID token has expired",
        ),
        (
            lambda t, idp: {**t, "id_token": t["id_token"][:-8] + "AAAAAAAA"},
            "Login refused: the ID token's signature does not verify",
        ),
        (
            lambda t, idp: {k: v for k, v in t.items() if k != "id_token"},
            "Login refused: the provider returned no ID token",
        ),
    ],
)
async def test_bad_id_tokens_refuse_the_login_with_a_log_line(idp, caplog, tamper, message):
    tokens = await code_flow_tokens(idp, "bob", "bob-pw", nonce="n-2")
    auth = authenticator(idp)
    nonce = _expected_nonce.set("n-2")
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(web.HTTPError) as refused:
            await auth._token_to_auth_model(tamper(tokens, idp))
    finally:
        _expected_nonce.reset(nonce)
    assert refused.value.status_code == 403 and message in refused.value.log_message
    assert any("login refused" in r.getMessage() for r in caplog.records)
    assert tokens["access_token"] not in caplog.text  # never a token in the log


async def test_a_replayed_login_is_refused(idp):
    tokens = await code_flow_tokens(idp, "bob", "bob-pw", nonce="n-3")
    nonce = _expected_nonce.set("n-other-login")
    try:
        with pytest.raises(web.HTTPError, match="nonce does not match"):
            await authenticator(idp)._token_to_auth_model(tokens)
    finally:
        _expected_nonce.reset(nonce)


async def test_a_refresh_answer_without_id_token_keeps_the_claims_and_reads_userinfo(idp):
    tokens = await code_flow_tokens(idp, "alice", "alice-pw", nonce="n-4")
    auth = authenticator(idp)
    await auth.discover()  # userinfo endpoint from discovery
    previous = _previous_claims.set({"sub": "alice", "preferred_username": "alice", "groups": ["old"]})
    try:
        info = await auth.token_to_user({k: v for k, v in tokens.items() if k != "id_token"})
    finally:
        _previous_claims.reset(previous)
    assert info["sub"] == "alice" and info["groups"] == ["/apex-small", "students"]  # fresh from userinfo
    other = _previous_claims.set({"sub": "bob"})
    try:
        with pytest.raises(web.HTTPError, match="another subject"):
            await auth.token_to_user(tokens)
    finally:
        _previous_claims.reset(other)


async def test_an_unreachable_or_missing_provider_is_a_clear_error(caplog):
    with caplog.at_level(logging.ERROR), pytest.raises(web.HTTPError) as down:
        await APExOIDCAuthenticator(oidc_issuer="http://127.0.0.1:9").discover()
    assert down.value.status_code == 503 and "unreachable" in down.value.log_message
    assert "cannot read http://127.0.0.1:9/.well-known/openid-configuration" in caplog.text
    with pytest.raises(web.HTTPError) as unset:
        await APExOIDCAuthenticator().discover()
    assert unset.value.status_code == 500 and "not configured" in unset.value.log_message


async def test_access_token_expiry():
    auth = APExOIDCAuthenticator(assumed_token_lifetime=120)
    now = time.time()
    assert abs(auth.access_token_expiry({"access_token": "opaque", "expires_in": 60}) - (now + 60)) < 5
    assert abs(auth.access_token_expiry({"access_token": "opaque"}) - (now + 120)) < 5
    jwt_token = jwt.encode({"exp": int(now) + 30}, "k" * 32, algorithm="HS256")
    assert abs(auth.access_token_expiry({"access_token": jwt_token, "expires_in": 600}) - (now + 30)) < 5


def _resigned(token: str, idp, **changes) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    key = idp.private_jwks["keys"][0]
    return jwt.encode(
        {**claims, **changes}, jwt.PyJWK(key).key, algorithm="RS256", headers={"kid": key["kid"]}
    )


async def test_refresh_locks_are_shared_while_held_and_not_kept_forever():
    """One lock per user while a refresh holds or awaits it; none left behind for the months a hub runs."""
    import asyncio
    import gc

    authenticator = APExOIDCAuthenticator(oidc_issuer="https://idp.invalid", client_id="c", client_secret="s")
    order = []

    async def refresh(user: str, tag: str):
        async with authenticator._lock(user):
            order.append(f"{tag} in")
            await asyncio.sleep(0.01)
            order.append(f"{tag} out")

    await asyncio.gather(refresh("alice", "a1"), refresh("alice", "a2"), refresh("bob", "b"))
    assert order.index("a1 out") < order.index("a2 in")  # alice's two refreshes never overlap
    assert order.index("b in") < order.index("a1 out")  # bob does not wait for alice
    for n in range(1000):
        async with authenticator._lock(f"user-{n}"):
            pass
    gc.collect()
    assert len(authenticator._refresh_locks) == 0
