"""The culler's part of the hub-page banner: stops within ``warn_before``.

The culler writes the upcoming stops to ``<state_dir>/upcoming.json`` every round;
:func:`upcoming_lines` turns the current user's warnings into lines of the hub's banner
(:class:`apex_hub.services.announce.HubAnnouncement`, which reads the file in the hub process and
also shows the accounting service's quota warnings). JupyterLab itself does not show it: a Lab
extension can poll the service's ``/api/upcoming`` endpoint instead.
"""

from __future__ import annotations

import html
import os
from datetime import datetime
from pathlib import Path

from ..announce import HubAnnouncement

UPCOMING_FILE = "upcoming.json"


def upcoming_lines(data: dict, name: str) -> list[str]:
    """The warned stops of ``name``'s servers in the culler's upcoming.json, as HTML lines."""
    lines = []
    for srv in (data.get("users") or {}).get(name, []):
        for stop in srv.get("stops", []):
            if not stop.get("warning"):
                continue
            label = f"server '{srv['server']}'" if srv["server"] else "server"
            at = datetime.fromisoformat(stop["at"]).strftime("%H:%M")
            when = f"{at} {stop.get('timezone') or 'UTC'}"
            lines.append(
                f"Your {html.escape(label)} will be stopped at {html.escape(when)}"
                f" ({html.escape(stop['reason'])}: {html.escape(stop['detail'])}). Save your work."
            )
    return lines


class UpcomingAnnouncement(HubAnnouncement):
    """The banner with the culler's warnings only: ``UpcomingAnnouncement(state_dir, fallback)``."""

    def __init__(self, state_dir: str | os.PathLike, fallback: str | None = None):
        super().__init__(fallback)
        self.add_source("culler", Path(state_dir) / UPCOMING_FILE, upcoming_lines)
