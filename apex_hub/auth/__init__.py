"""OpenID Connect login for the APEx workspaces: ``APExOIDCAuthenticator``.

``c.JupyterHub.authenticator_class = "apex-oidc"`` selects it; :func:`configure` also
grants each user's servers the right to fetch their own user's fresh access token.
"""

from __future__ import annotations

from .authenticator import APExOIDCAuthenticator
from .claims import collect_groups, parse_entitlement, primary_group
from .handlers import CUSTOM_SCOPES, TOKEN_SCOPE

__all__ = ["APExOIDCAuthenticator", "configure", "collect_groups", "parse_entitlement",
           "primary_group", "TOKEN_SCOPE"]


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
    roles = list(c.JupyterHub.load_roles) if "load_roles" in c.JupyterHub else []
    user_role = next((r for r in roles if r.get("name") == "user"), None)
    if user_role is None:
        user_role = {"name": "user", "scopes": ["self"]}
        roles.append(user_role)
    wanted = f"{TOKEN_SCOPE}!user"
    if wanted not in user_role.setdefault("scopes", ["self"]):
        user_role["scopes"] = [*user_role["scopes"], wanted]
    c.JupyterHub.load_roles = roles
