"""ID-token verification against a real provider: real tokens pass, altered ones are refused.

Tampered tokens are signed with the provider's own private key (the test holds it) so
that only the one property under test is wrong; a forged one is signed with another key
under the same key id.
"""

from __future__ import annotations

import time

import aiohttp
import jwt
import pytest

from apex_hub.auth.idtoken import TokenRejected, verify_id_token
from apex_hub.auth.provider import DiscoveryError, Provider
from apex_hub.localidp import generate_jwks
from tests.helpers.oidc import CLIENT_ID, code_flow_tokens, idp  # noqa: F401 - idp is a fixture

pytestmark = [pytest.mark.process, pytest.mark.asyncio(loop_scope="module")]


class Counting:
    """``fetch`` for :class:`Provider` over real HTTP, counting requests per URL."""

    def __init__(self):
        self.calls: list[str] = []

    async def __call__(self, url: str) -> dict:
        self.calls.append(url)
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                r.raise_for_status()
                return await r.json()


def mint(idp, claims: dict, key: dict | None = None, kid: str | None = None, **overrides) -> str:
    jwk = key or idp.private_jwks["keys"][0]
    signing = jwt.PyJWK(jwk)
    now = int(time.time())
    body = {
        "iss": idp.issuer,
        "aud": CLIENT_ID,
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "nonce": "n-1",
        **claims,
    }
    body.update(overrides)
    return jwt.encode(body, signing.key, algorithm="RS256", headers={"kid": kid or jwk["kid"]})


async def test_a_real_login_token_verifies_with_its_claims(idp):
    tokens = await code_flow_tokens(idp, "alice", "alice-pw", nonce="n-real")
    assert tokens.get("refresh_token"), "offline_access must give a refresh token"
    fetch = Counting()
    claims = await verify_id_token(tokens["id_token"], Provider(idp.issuer, fetch), CLIENT_ID, nonce="n-real")
    assert claims["sub"] == "alice" and claims["iss"] == idp.issuer
    assert claims["groups"] == ["/apex-small", "students"]
    assert claims["realm_access"]["roles"] == ["offline_access", "apex-users"]
    # discovery once, keys once; a second token needs neither
    await verify_id_token(tokens["id_token"], (p := Provider(idp.issuer, fetch)), CLIENT_ID, nonce="n-real")
    before = len(fetch.calls)
    await verify_id_token(tokens["id_token"], p, CLIENT_ID, nonce="n-real")
    assert len(fetch.calls) == before


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "has expired"),
        ({"aud": "someone-else"}, "not meant for this hub"),
        ({"iss": "http://127.0.0.1:1/evil"}, "was not issued by"),
        ({"nonce": "n-other"}, "nonce does not match"),
        ({"aud": [CLIENT_ID, "other"], "azp": "other"}, "several audiences"),
        ({"iat": int(time.time()) + 3600}, "not valid yet"),
    ],
)
async def test_altered_tokens_are_refused(idp, overrides, message):
    token = mint(idp, {}, **overrides)
    with pytest.raises(TokenRejected, match=message):
        await verify_id_token(token, Provider(idp.issuer, Counting()), CLIENT_ID, nonce="n-1")


async def test_forged_signature_is_refused(idp):
    impostor = generate_jwks(kid=idp.private_jwks["keys"][0]["kid"])["keys"][0]  # same kid, other key
    with pytest.raises(TokenRejected, match="signature does not verify"):
        await verify_id_token(
            mint(idp, {}, key=impostor), Provider(idp.issuer, Counting()), CLIENT_ID, nonce="n-1"
        )


async def test_unsigned_and_symmetric_tokens_are_refused(idp):
    none_token = jwt.encode({"iss": idp.issuer, "aud": CLIENT_ID, "sub": "alice"}, None, algorithm="none")
    hs_token = jwt.encode(
        {"iss": idp.issuer, "aud": CLIENT_ID, "sub": "alice"},
        "s3cret-for-tests-but-long-enough-32b",
        algorithm="HS256",
    )
    for token in (none_token, hs_token, "not-a-jwt", ""):
        with pytest.raises(TokenRejected):
            await verify_id_token(token, Provider(idp.issuer, Counting()), CLIENT_ID)


async def test_unknown_key_id_is_refused_without_hammering_the_provider(idp):
    fetch = Counting()
    provider = Provider(idp.issuer, fetch, min_refetch=3600)
    stranger = generate_jwks(kid="stranger")["keys"][0]
    for _ in range(5):
        with pytest.raises(TokenRejected, match="signing key is unknown"):
            await verify_id_token(mint(idp, {}, key=stranger), provider, CLIENT_ID, nonce="n-1")
    assert sum(u.endswith("/jwks") or "jwks" in u for u in fetch.calls) == 1


async def test_key_rotation_is_followed(idp):
    fetch = Counting()
    provider = Provider(idp.issuer, fetch, min_refetch=0)
    await verify_id_token(mint(idp, {}), provider, CLIENT_ID, nonce="n-1")
    rotated = generate_jwks(kid="rotated-1")
    await idp.restart(jwks=rotated)
    claims = await verify_id_token(mint(idp, {}, key=rotated["keys"][0]), provider, CLIENT_ID, nonce="n-1")
    assert claims["sub"] == "alice"
    with pytest.raises(TokenRejected):  # the old key is gone from the provider's set
        old = generate_jwks(kid="rotated-1")["keys"][0]
        await verify_id_token(mint(idp, {}, key=old), provider, CLIENT_ID, nonce="n-1")


async def test_discovery_must_name_the_configured_issuer(idp):
    async def wrong_issuer(url):
        doc = await Counting()(url)
        return {**doc, "issuer": "http://127.0.0.1:1/other"}

    with pytest.raises(DiscoveryError, match="not the configured"):
        await Provider(idp.issuer, wrong_issuer).metadata()
    with pytest.raises(DiscoveryError, match="cannot read"):
        await Provider("http://127.0.0.1:1", Counting()).metadata()
