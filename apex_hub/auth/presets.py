"""Defaults for the identity providers APEx platforms use.

A preset only fills options the operator left unset; anything configured wins.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # Keycloak (APEx, EOEPCA): groups from the "groups" mapper (full paths, leading "/"
    # dropped), then realm roles, then this client's roles.
    "keycloak": {
        "login_service": "APEx (Keycloak)",
        "username_claim": "preferred_username",
        "group_claims": ["groups", "realm_access.roles", "resource_access.{client_id}.roles"],
        "entitlement_claims": [],
        "scope": ["openid", "profile", "email", "offline_access"],
    },
    # EGI Check-in: a stable voperson_id as the name; groups from AARC-G002 entitlements.
    "egi-checkin": {
        "login_service": "EGI Check-in",
        "oidc_issuer": "https://aai.egi.eu/auth/realms/egi",
        "username_claim": "voperson_id",
        "group_claims": [],
        "entitlement_claims": ["eduperson_entitlement"],
        "scope": ["openid", "profile", "email", "eduperson_entitlement", "voperson_id", "offline_access"],
    },
    # Any other OpenID provider.
    "generic": {
        "login_service": "OpenID Connect",
        "username_claim": "preferred_username",
        "group_claims": ["groups"],
        "entitlement_claims": [],
        "scope": ["openid", "profile", "email", "offline_access"],
    },
}
