"""OpenID Connect login for the APEx workspaces: ``APExOIDCAuthenticator``.

``c.JupyterHub.authenticator_class = "apex-oidc"`` selects it; :func:`configure` also
grants each user's servers the right to fetch their own user's fresh access token.
"""

from __future__ import annotations

from ..hubconfig import extend_user_role
from .authenticator import APExOIDCAuthenticator
from .claims import collect_groups, parse_entitlement, primary_group
from .handlers import CUSTOM_SCOPES, TOKEN_SCOPE

__all__ = [
    "TOKEN_SCOPE",
    "APExOIDCAuthenticator",
    "collect_groups",
    "configure",
    "parse_entitlement",
    "primary_group",
]


def configure(c, **authenticator) -> None:
    """Select the APEx authenticator in a ``jupyterhub_config.py`` ``c``.

    Keyword arguments become ``c.APExOIDCAuthenticator`` options
    (``oidc_issuer=...``, ``client_id=...``). Also defines the custom scope
    ``custom:apex:oidc-token`` and adds it, filtered to the user, to the ``user`` role,
    so each user's servers (whose token scopes APExSpawner extends) can read their own
    user's access token from ``/hub/api/apex/users/<name>/oidc-token``.
    """
    c.JupyterHub.authenticator_class = "apex-oidc"
    for name, value in authenticator.items():
        setattr(c.APExOIDCAuthenticator, name, value)
    custom = dict(c.JupyterHub.custom_scopes or {}) if "custom_scopes" in c.JupyterHub else {}
    custom.update(CUSTOM_SCOPES)
    c.JupyterHub.custom_scopes = custom
    extend_user_role(c, [f"{TOKEN_SCOPE}!user"])
