"""The banner of the hub's pages, fed by the services' state files.

JupyterHub has no API to notify a user. What it has is the ``announcement`` template variable of
its pages (``c.JupyterHub.template_vars``; a callable value is called with the current user and its
result is shown, as HTML, in the yellow banner at the top of ``/hub/home``, the spawn and the token
pages). The services run in their own processes and write what a user should see to small JSON
files (atomically, :func:`write_json`); :class:`HubAnnouncement`, run in the hub process, reads
them (re-reading a file only when it changed) and shows the current user's lines from every
source, then the operator's own announcement text.

Sources: the culler's upcoming stops (``<culler state_dir>/upcoming.json``,
:func:`apex_hub.services.culler.announce.upcoming_lines`) and the accounting service's quota
warnings (``<accounting state_dir>/quota-warnings.json``,
:func:`apex_hub.services.accounting.quota.warning_lines`). ``configure()`` installs one
:class:`HubAnnouncement` and adds a source per service (:func:`install`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("apex_hub.services")

#: ``render(data, user_name) -> [html, ...]``: a source's lines for one user (already HTML-escaped)
Render = Callable[[dict, str], list[str]]


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as JSON so that a reader sees the old file or the new one, never half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class JSONFile:
    """A JSON file read again only when it changed (inode, size, mtime); ``{}`` while it is missing,
    the last good content while it is being replaced or broken."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._cache: tuple[tuple, dict] | None = None

    def read(self) -> dict:
        try:
            st = self.path.stat()
        except OSError:
            return {}
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._cache is None or self._cache[0] != sig:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return self._cache[1] if self._cache else {}
            self._cache = (sig, data if isinstance(data, dict) else {})
        return self._cache[1]


class HubAnnouncement:
    """``c.JupyterHub.template_vars["announcement"]``: the user's lines from every source, then
    ``fallback`` (the operator's announcement, shown to everyone, as is)."""

    def __init__(self, fallback: str | None = None):
        self.fallback = fallback
        self.sources: dict[str, tuple[JSONFile, Render]] = {}

    def add_source(self, name: str, path: str | os.PathLike, render: Render) -> HubAnnouncement:
        """Add (or replace) the source ``name``: the JSON file at ``path``, turned into lines by ``render``."""
        self.sources[name] = (JSONFile(path), render)
        return self

    def lines(self, name: str) -> list[str]:
        out: list[str] = []
        for source, (file, render) in self.sources.items():
            try:
                out += render(file.read(), name)
            except Exception:
                log.exception("announcement source %s (%s): cannot render", source, file.path)
        return out

    def __call__(self, user) -> str | None:
        name = getattr(user, "name", None)
        lines = self.lines(name) if name else []
        if not lines:
            return self.fallback
        return "<br>".join(lines + ([self.fallback] if self.fallback else []))


def install(c: Any, name: str, path: str | os.PathLike, render: Render) -> HubAnnouncement | None:
    """Add a source to the hub's announcement, making it a :class:`HubAnnouncement` if it is not one
    yet. An announcement the operator set as a string stays, shown after the sources' lines; an
    operator's own callable is left alone (returns None: no banner from the services then)."""
    current = c.JupyterHub.get("template_vars") if hasattr(c.JupyterHub, "get") else None
    template_vars = dict(current or {})
    previous = template_vars.get("announcement")
    if isinstance(previous, HubAnnouncement):
        banner = previous
    elif previous is None or isinstance(previous, str):
        banner = HubAnnouncement(fallback=previous)
    else:
        log.warning(
            "c.JupyterHub.template_vars['announcement'] is the operator's own: %s warnings are not shown"
            " on the hub's pages",
            name,
        )
        return None
    template_vars["announcement"] = banner.add_source(name, os.path.abspath(path), render)
    c.JupyterHub.template_vars = template_vars
    return banner
