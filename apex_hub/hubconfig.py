"""Editing a JupyterHub config ``c`` from several ``configure()`` functions, on JupyterHub 5.5 and 6.

Why one module: the services and the authenticator each add roles, scopes and services to the same
config, and must not undo each other's work; and the JupyterHub versions operators run differ in what
they accept (the Zero-to-JupyterHub 4.4 image ships JupyterHub 5.5):

* ``JupyterHub.extra_user_scopes`` does not exist in 5.5, and 6.1 ignores it as soon as a ``load_roles``
  entry redefines the ``user`` role. Every user-wide grant therefore goes into one ``user`` role in
  ``load_roles`` (:func:`extend_user_role`), which both versions honour.
* Scopes new in 6 (``start:servers``) make 5.5 exit with ``ScopeNotFound``: :func:`scope_exists` says
  which the running hub knows, so callers can fall back and log why.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("apex_hub")

#: JupyterHub's default scopes of the ``user`` role: what the role must keep when we extend it.
USER_ROLE_DEFAULT = ["self"]


def current_list(section: Any, key: str) -> list:
    """A list trait as set so far in a traitlets Config (unset or lazy ``.append`` values included)."""
    value = section.get(key) if hasattr(section, "get") else getattr(section, key, None)
    if value is None:
        return []
    if hasattr(value, "get_value"):  # traitlets LazyConfigValue (c.X.y.append(...) before assignment)
        return list(value.get_value([]))
    return list(value)


def current_dict(section: Any, key: str) -> dict:
    """A dict trait as set so far in a traitlets Config (unset or lazy ``.update`` values included)."""
    value = section.get(key) if hasattr(section, "get") else getattr(section, key, None)
    if value is None:
        return {}
    if hasattr(value, "get_value"):
        return dict(value.get_value({}))
    return dict(value)


def extend_user_role(c: Any, scopes: list[str]) -> None:
    """Add ``scopes`` to the ``user`` role in ``c.JupyterHub.load_roles`` (created as ``self`` + them).

    The ``user`` role is assigned to every user by JupyterHub; redefining it in ``load_roles`` is how
    both JupyterHub 5.5 and 6 let an operator widen what every user may do. An operator's own ``user``
    role is kept and only extended.
    """
    roles = current_list(c.JupyterHub, "load_roles")
    role = next((r for r in roles if r.get("name") == "user"), None)
    if role is None:
        role = {
            "name": "user",
            "description": "Every user: their own resources, plus the APEx services they use",
            "scopes": list(USER_ROLE_DEFAULT),
        }
        roles.append(role)
    have = list(role.get("scopes") or USER_ROLE_DEFAULT)
    role["scopes"] = have + [s for s in scopes if s not in have]
    c.JupyterHub.load_roles = roles


def replace_role(c: Any, role: dict) -> None:
    """Put ``role`` into ``c.JupyterHub.load_roles``, replacing one of the same name."""
    roles = [r for r in current_list(c.JupyterHub, "load_roles") if r.get("name") != role["name"]]
    c.JupyterHub.load_roles = [*roles, role]


def replace_service(c: Any, service: dict) -> None:
    """Put ``service`` into ``c.JupyterHub.services``, replacing one of the same name."""
    services = [s for s in current_list(c.JupyterHub, "services") if s.get("name") != service["name"]]
    c.JupyterHub.services = [*services, service]


def scope_exists(scope: str) -> bool:
    """True when the installed JupyterHub defines ``scope`` (its filter, ``!…``, ignored)."""
    from jupyterhub.scopes import scope_definitions

    return scope.split("!", 1)[0] in scope_definitions


def jupyterhub_version() -> tuple[int, int]:
    """(major, minor) of the installed JupyterHub."""
    import jupyterhub

    major, minor = (jupyterhub.version_info + (0, 0))[:2]
    return int(major), int(minor)


__all__ = [
    "current_dict",
    "current_list",
    "extend_user_role",
    "jupyterhub_version",
    "replace_role",
    "replace_service",
    "scope_exists",
]
