"""Whose namespace is it: the spawner writes only into namespaces it made for this user.

Why: a user namespace is derived from a user-chosen name.  Even with collision-free
names, a namespace that already exists may be someone else's (another user's, made
by the former 32-bit naming scheme or planted by hand), the hub's own, or a system
namespace.  Writing labels, a NetworkPolicy or a pod into it would hand another
user's data (or the hub) to this one.  So, before anything is written:

* reserved namespaces (the hub's, ``default``, ``kube-*``, the operator's list) are
  refused without asking the API server;
* an existing namespace must carry our ``managed-by`` label and the
  ``apex.esa.int/username`` annotation naming this very user; anything else is
  refused, with a message to the user that does not reveal the owner, and an
  operator log line that does.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import labels as L

#: Namespaces that are never a user's, whatever the prefix and the user name.
SYSTEM_NAMESPACES = frozenset({"default"})
SYSTEM_PREFIX = "kube-"


class NamespaceRefused(Exception):
    """The namespace is not this user's: ``user_message`` is for the user, ``str()`` for the log."""

    def __init__(self, log_message: str, user_message: str):
        super().__init__(log_message)
        self.user_message = user_message


def reserved_reason(namespace: str, hub_namespace: str | None, protected: Iterable[str] = ()) -> str | None:
    """Why ``namespace`` can never be a user namespace, or None."""
    if hub_namespace and namespace == hub_namespace:
        return "it is the hub's own namespace"
    if namespace in SYSTEM_NAMESPACES or namespace.startswith(SYSTEM_PREFIX):
        return "it is a Kubernetes system namespace"
    if namespace in set(protected):
        return "it is listed in APExSpawner.protected_namespaces"
    return None


def owner_problem(namespace: dict, username: str) -> str | None:
    """Why the existing ``namespace`` object is not ``username``'s, or None when it is."""
    meta = namespace.get("metadata") or {}
    labels = meta.get("labels") or {}
    owner = (meta.get("annotations") or {}).get(L.USERNAME_ANNOTATION)
    if labels.get(L.MANAGED_BY) != L.MANAGER or owner is None:
        return (
            f"it was not created by apex-hub for a user (label {L.MANAGED_BY}="
            f"{labels.get(L.MANAGED_BY)!r}, annotation {L.USERNAME_ANNOTATION}={owner!r})"
        )
    if owner != username:
        return f"it belongs to user {owner!r} (annotation {L.USERNAME_ANNOTATION})"
    return None


def refusal(namespace: str, username: str, reason: str) -> NamespaceRefused:
    """The error for a namespace that must not be used (log line names the reason)."""
    return NamespaceRefused(
        f"SECURITY: refusing namespace {namespace} for user {username!r}: {reason};"
        " nothing was written. Check the namespace, and the user's spawner state, by hand.",
        f"Your workspace cannot be prepared: the namespace {namespace} exists and is not yours."
        " Nothing was changed and your server was not started; the administrators have been"
        " told.",
    )
