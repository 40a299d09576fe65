"""The hub's look: APEx templates and logo through JupyterHub's own template mechanism.

A *branding* is a directory with ``templates/`` (Jinja templates that JupyterHub searches before
its own; they extend ``templates/<name>.html``, the stock ones) and optionally a logo
(``logo.svg`` or ``logo.png``, served at ``/hub/logo``). ``configure(c)`` installs ours
(``apex-theme/``); ``configure(c, "/etc/egi/branding")`` installs an operator's instead, and
``configure(c, None)`` leaves JupyterHub's. That one argument is the only thing to swap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

APEX = Path(__file__).resolve().parent / "apex-theme"  # a hyphen: package data, not a package
LOGO_NAMES = ("logo.svg", "logo.png")


class BrandingError(ValueError):
    """The branding directory is not usable (the message names what is missing)."""


def branding_dir(branding: str | os.PathLike | None) -> Path | None:
    """The branding directory for ``"apex"`` (ours), ``None``/``"jupyterhub"`` (none) or a path."""
    if branding is None or str(branding) in ("", "none", "jupyterhub"):
        return None
    path = APEX if str(branding) == "apex" else Path(branding).expanduser().resolve()
    if not (path / "templates").is_dir():
        raise BrandingError(f"branding {str(branding)!r}: no templates/ directory in {path}")
    return path


def configure(
    c: Any,
    branding: str | os.PathLike | None = "apex",
    *,
    login_hint: str = "",
    links: list[tuple[str, str]] | None = None,
    profiles_help: str = "",
) -> Path | None:
    """Put ``branding``'s templates first in ``c.JupyterHub.template_paths`` and its logo in ``logo_file``.

    ``login_hint`` (HTML) is shown under the sign-in button; ``links`` ((title, URL) pairs, e.g. the
    usage and status pages) go into the navigation bar; ``profiles_help`` (HTML) replaces the spawn
    page's default explanation. They reach the templates as ``template_vars`` (``apex_*``), merged with
    what is there already (the services' ``announcement`` stays).
    """
    path = branding_dir(branding)
    hub = c.JupyterHub
    current = hub.get("template_vars") if hasattr(hub, "get") else None
    template_vars = dict(current or {})
    template_vars.update(
        apex_login_hint=login_hint, apex_links=list(links or []), apex_profiles_help=profiles_help
    )
    hub.template_vars = template_vars
    if path is None:
        return None
    existing = list(hub.get("template_paths") or []) if hasattr(hub, "get") else []
    hub.template_paths = [str(path / "templates")] + [p for p in existing if p != str(path / "templates")]
    logo = next((path / name for name in LOGO_NAMES if (path / name).is_file()), None)
    if logo is not None:
        hub.logo_file = str(logo)
    return path
