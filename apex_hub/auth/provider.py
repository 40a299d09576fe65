"""The OpenID provider as the hub sees it: discovery metadata and signing keys.

Why: operators configure an issuer URL only.  Endpoints, supported scopes and the
JWKS come from ``/.well-known/openid-configuration``; the metadata is cached for
``ttl`` seconds and the key set is fetched again when a token names a key id we do
not know (the provider rotated its keys), at most once per ``min_refetch`` seconds
so that a flood of forged tokens cannot make us hammer the provider.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import jwt

#: Asymmetric JWS algorithms accepted for ID tokens (never ``none``, never HMAC).
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)

Fetch = Callable[[str], Awaitable[dict]]


class DiscoveryError(Exception):
    """The issuer's metadata or keys could not be read or make no sense."""


@dataclass
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str = ""
    end_session_endpoint: str = ""
    revocation_endpoint: str = ""
    scopes_supported: list[str] = field(default_factory=list)
    id_token_signing_alg_values_supported: list[str] = field(default_factory=lambda: ["RS256"])
    code_challenge_methods_supported: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_document(cls, doc: dict, expected_issuer: str) -> ProviderMetadata:
        missing = [
            k for k in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri") if not doc.get(k)
        ]
        if missing:
            raise DiscoveryError(f"the discovery document of {expected_issuer} lacks {', '.join(missing)}")
        if doc["issuer"].rstrip("/") != expected_issuer.rstrip("/"):
            # OpenID Connect Discovery 1.0 §4.3: the issuer must be exactly the one asked for.
            raise DiscoveryError(
                f"the discovery document names issuer {doc['issuer']!r}, not the"
                f" configured {expected_issuer!r}; check oidc_issuer"
            )
        known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc and k != "raw"}
        return cls(**known, raw=doc)

    def algorithms(self) -> list[str]:
        offered = self.id_token_signing_alg_values_supported or ["RS256"]
        return [a for a in offered if a in ASYMMETRIC_ALGORITHMS] or ["RS256"]


class Provider:
    """Cached metadata and key set of one issuer, fetched with ``fetch(url) -> json``."""

    def __init__(
        self,
        issuer: str,
        fetch: Fetch,
        ttl: float = 3600,
        min_refetch: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.issuer = issuer.rstrip("/")
        self._fetch, self.ttl, self.min_refetch, self._clock = fetch, ttl, min_refetch, clock
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = float("-inf")
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_at = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def discovery_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"

    def _fresh(self) -> bool:
        return self._metadata is not None and self._clock() - self._metadata_at < self.ttl

    async def metadata(self) -> ProviderMetadata:
        if self._fresh():
            return self._metadata
        async with self._lock:
            if not self._fresh():
                try:
                    doc = await self._fetch(self.discovery_url)
                except Exception as exc:
                    if self._metadata:  # keep serving logins with what we know
                        return self._metadata
                    raise DiscoveryError(f"cannot read {self.discovery_url}: {exc}") from exc
                self._metadata = ProviderMetadata.from_document(doc, self.issuer)
                self._metadata_at = self._clock()
        return self._metadata

    async def key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """The signing key ``kid`` (fetched again once if unknown: key rotation)."""
        found = self._find(kid, alg)
        if found is None and self._clock() - self._keys_at >= self.min_refetch:
            await self._load_keys()
            found = self._find(kid, alg)
        if found is None:
            raise DiscoveryError(f"no signing key {kid!r} ({alg}) in the provider's JWKS")
        return found

    def _find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        usable = [k for k in self._keys.values() if k.algorithm_name in (alg, None)]
        return usable[0] if len(usable) == 1 else None

    async def _load_keys(self) -> None:
        meta = await self.metadata()
        async with self._lock:
            try:
                doc = await self._fetch(meta.jwks_uri)
            except Exception as exc:
                raise DiscoveryError(f"cannot read the provider's keys at {meta.jwks_uri}: {exc}") from exc
            keys: dict[str, jwt.PyJWK] = {}
            for i, data in enumerate(doc.get("keys", [])):
                if data.get("use", "sig") != "sig":
                    continue
                try:
                    key = jwt.PyJWK(data)
                except jwt.PyJWTError:
                    continue  # an algorithm we cannot use; others may do
                keys[data.get("kid") or f"#{i}"] = key
            self._keys, self._keys_at = keys, self._clock()
