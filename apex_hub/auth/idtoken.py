"""ID-token verification (OpenID Connect Core 1.0 §3.1.3.7).

Why not trust the token endpoint's answer as is (oauthenticator's
``userdata_from_id_token`` skips the signature): the hub is the relying party that
admits users to workspaces holding their data, so a token is accepted only when its
signature checks out against the provider's published keys and its ``iss``,
``aud``/``azp``, ``exp``, ``iat`` and (at login) ``nonce`` are right.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import jwt

from .provider import Provider


class TokenRejected(Exception):
    """The ID token is not acceptable; the message says why (no token content in it)."""


async def verify_id_token(
    token: str, provider: Provider, client_id: str, *, nonce: str | None = None, leeway: float = 30
) -> dict:
    """The verified claims of ``token``; :class:`TokenRejected` otherwise."""
    if not token or not isinstance(token, str):
        raise TokenRejected("the provider returned no ID token (is the 'openid' scope requested?)")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"the ID token is malformed: {exc}") from None
    meta = await provider.metadata()
    alg = header.get("alg")
    if alg not in meta.algorithms():
        raise TokenRejected(f"the ID token is signed with {alg!r}; accepted: {', '.join(meta.algorithms())}")
    try:
        key = await provider.key(header.get("kid"), alg)
    except Exception as exc:
        raise TokenRejected(f"the ID token's signing key is unknown to the provider: {exc}") from None
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            audience=client_id,
            issuer=meta.issuer,
            leeway=leeway,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.InvalidSignatureError:
        raise TokenRejected("the ID token's signature does not verify (forged or altered)") from None
    except jwt.ExpiredSignatureError:
        raise TokenRejected("the ID token has expired") from None
    except jwt.InvalidAudienceError:
        raise TokenRejected(
            f"the ID token is not meant for this hub (audience is not {client_id!r})"
        ) from None
    except jwt.InvalidIssuerError:
        raise TokenRejected(f"the ID token was not issued by {meta.issuer}") from None
    except jwt.ImmatureSignatureError:
        raise TokenRejected("the ID token is not valid yet (check the clocks)") from None
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"the ID token is invalid: {exc}") from None
    aud = claims["aud"]
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != client_id:
        raise TokenRejected("the ID token has several audiences and its azp is not this hub")
    if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
        raise TokenRejected("the ID token's nonce does not match this login (replayed token?)")
    return claims


def login_nonce(secret: bytes, state_id: str) -> str:
    """The nonce of one login, derived from its OAuth state id.

    The state id sits in the hub's signed state cookie, so the callback can recompute
    the nonce without storing it anywhere, and nobody without the hub's cookie secret
    can predict it.
    """
    mac = hmac.new(secret, b"apex-oidc-nonce:" + state_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def unverified_claims(token: str) -> dict:
    """Claims of a JWT without checking it (only to read an access token's ``exp``)."""
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
