"""Ownership labels on every object a workspace is made of.

Why: cleanup must never depend on the configuration of the day.  Every object
carries who owns it (user, server), which profile made it and whether it
outlives the server; a stop deletes ``persist=false`` objects of *that server*
by label selector, whatever the catalogue says now.
"""

from __future__ import annotations

from ..naming import legacy_slugify, slugify

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "apex-hub"
PART_OF = "app.kubernetes.io/part-of"
USER = "apex.esa.int/user"
SERVER = "apex.esa.int/server"
PROFILE = "apex.esa.int/profile"
PERSIST = "apex.esa.int/persist"
#: On a scratch claim (``volumes[].scratch``): deleted at every stop of its server.
SCRATCH = "apex.esa.int/scratch"
#: Annotation with the user's JupyterHub name as is (labels cannot hold every name).
USERNAME_ANNOTATION = "apex.esa.int/username"
CONTENT_HASH_ANNOTATION = "apex.esa.int/content-hash"
#: Annotation on server pods: the user's primary group (billed by accounting), from the login.
GROUP_ANNOTATION = "apex.esa.int/group"
DEFAULT_SERVER = "default"


def server_label(server_name: str, legacy: bool = False) -> str:
    """Label value for a server: ``default`` for the default server, ``named-<slug>`` else.

    ``legacy``: the value the former 8-hex naming gave it (to sweep objects labelled then).
    """
    slug = legacy_slugify if legacy else slugify
    return DEFAULT_SERVER if not server_name else "named-" + slug(server_name, 63 - 6)


def ownership(user_slug: str, server_name: str | None, profile: str | None, persist: bool) -> dict[str, str]:
    """The labels of one object.  ``server_name=None`` marks a per-user object."""
    labels = {
        MANAGED_BY: MANAGER,
        PART_OF: "apex-workspace",
        USER: user_slug,
        PERSIST: "true" if persist else "false",
    }
    if server_name is not None:
        labels[SERVER] = server_label(server_name)
    if profile:
        labels[PROFILE] = profile
    return labels


def server_selector(
    user_slug: str, server_name: str, persist: bool | None = False, legacy: bool = False
) -> str:
    """Label selector for the objects of one server (non-persistent ones by default)."""
    parts = [
        f"{MANAGED_BY}={MANAGER}",
        f"{USER}={user_slug}",
        f"{SERVER}={server_label(server_name, legacy)}",
    ]
    if persist is not None:
        parts.append(f"{PERSIST}={'true' if persist else 'false'}")
    return ",".join(parts)


def scratch_selector(user_slug: str, server_name: str) -> str:
    """Label selector for the scratch claims of one server (the only claims a stop deletes)."""
    return f"{server_selector(user_slug, server_name, persist=False)},{SCRATCH}=true"
