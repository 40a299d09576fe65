"""The hub-page banner for stops within ``warn_before``.

JupyterHub has no API to notify a user. What it has is the ``announcement`` template variable of
its pages (``c.JupyterHub.template_vars``; a callable value is called with the current user). The
culler writes the upcoming stops to ``<state_dir>/upcoming.json`` every round; this callable, run
in the hub process, turns the user's warnings into the yellow banner at the top of the hub's pages
(home, spawn, token pages). JupyterLab itself does not show it: a Lab extension can poll the
service's ``/api/upcoming`` endpoint instead.
"""

from __future__ import annotations

import html
import json
import os
from datetime import datetime
from pathlib import Path

UPCOMING_FILE = "upcoming.json"


class UpcomingAnnouncement:
    """``c.JupyterHub.template_vars["announcement"] = UpcomingAnnouncement(state_dir)``."""

    def __init__(self, state_dir: str | os.PathLike, fallback: str | None = None):
        self.path = Path(state_dir) / UPCOMING_FILE
        self.fallback = fallback
        self._cache: tuple[tuple, dict] | None = None

    def _data(self) -> dict:
        try:
            st = self.path.stat()
        except OSError:
            return {}
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._cache is None or self._cache[0] != sig:
            try:
                self._cache = (sig, json.loads(self.path.read_text()))
            except (OSError, ValueError):
                return self._cache[1] if self._cache else {}
        return self._cache[1]

    def __call__(self, user) -> str | None:
        name = getattr(user, "name", None)
        if not name:
            return self.fallback
        lines = []
        for srv in (self._data().get("users") or {}).get(name, []):
            for stop in srv.get("stops", []):
                if not stop.get("warning"):
                    continue
                label = f"server '{srv['server']}'" if srv["server"] else "server"
                at = datetime.fromisoformat(stop["at"]).strftime("%H:%M")
                when = f"{at} {stop.get('timezone') or 'UTC'}"
                lines.append(f"Your {html.escape(label)} will be stopped at {html.escape(when)}"
                             f" ({html.escape(stop['reason'])}: {html.escape(stop['detail'])}). Save your work.")
        if not lines:
            return self.fallback
        return "<br>".join(lines + ([self.fallback] if self.fallback else []))
