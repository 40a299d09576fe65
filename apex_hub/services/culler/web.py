"""The culler's small HTTP API, served when the hub gives the service a ``url``:

``GET /services/<name>/api/upcoming`` -> ``{"user": "alice", "now": ..., "warn_before": 900,
"servers": [{"server": "", "profile": "gpu", "stops": [{"reason": "schedule", "at": ..., "detail": ...,
"warning": true}]}]}``

Authenticated by the hub (``HubOAuthenticated``): a user's API token (``Authorization: token ...``)
or the service's OAuth cookie. A browser request (``Accept: text/html``) without either goes through
the hub's OAuth flow once and comes back with the cookie; a script without a token gets 403. Any
identified user is admitted and sees **only their own** servers.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import TYPE_CHECKING

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web

if TYPE_CHECKING:
    from .service import CullerService

log = logging.getLogger("apex_hub.culler")


class UpcomingHandler(HubOAuthenticated, web.RequestHandler):
    # Every identified hub user is admitted (the answer only holds their own servers), so a plain
    # user API token works without the access:services scope that JupyterHub's default role lacks.
    @property
    def hub_scopes(self):
        return None

    def get(self):
        user = self.current_user
        if not user and "text/html" in self.request.headers.get("Accept", ""):
            # a browser without the service's cookie: once through the hub's OAuth, then back here
            self.redirect(self.get_login_url())
            return
        if not user or user.get("kind", "user") != "user":
            self.set_status(403)
            self.finish({"error": "a JupyterHub user's token or login is required"})
            return
        culler: CullerService = self.settings["culler"]
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(culler.upcoming_for(user["name"])))


def make_app(culler: CullerService, prefix: str) -> web.Application:
    return web.Application(
        [
            (url_path_join(prefix, "api/upcoming"), UpcomingHandler),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
        ],
        culler=culler,
        cookie_secret=secrets.token_bytes(32),
    )
