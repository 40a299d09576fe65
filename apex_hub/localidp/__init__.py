"""A real local OpenID Connect provider for tests and local mode.

The npm package ``oidc-provider`` runs in a ``node`` process on loopback (``provider.mjs``);
:class:`LocalIdP` starts and stops it. See the README section "Authentication".
"""

from .launcher import (
    LOGIN_ERROR,
    LOGIN_TITLE,
    OIDC_PROVIDER_VERSION,
    LocalIdP,
    LocalIdPError,
    find_oidc_provider,
    follow_until,
    generate_jwks,
    login,
    parse_forms,
    public_jwks,
    submit_form,
)

__all__ = [
    "LOGIN_ERROR",
    "LOGIN_TITLE",
    "OIDC_PROVIDER_VERSION",
    "LocalIdP",
    "LocalIdPError",
    "find_oidc_provider",
    "follow_until",
    "generate_jwks",
    "login",
    "parse_forms",
    "public_jwks",
    "submit_form",
]
