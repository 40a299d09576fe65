"""Where a service listens, and listening before it is ready.

:func:`configured_url` and :func:`listen_address` turn the ``JUPYTERHUB_SERVICE_URL`` the hub gives a
managed service into an address to bind (the culler, accounting and monitoring services all do).

The hub must see a managed service answer within seconds.

JupyterHub 5.5 (the Zero-to-JupyterHub 4.4 image) gives a managed service ten one-second tries to
answer HTTP and exits when it does not; JupyterHub 6 has ``Service.timeout``. A service whose imports
and database migrations take longer on a busy node would stop the hub. So a service binds its port
first and answers ``503 Service Unavailable`` (``Retry-After: 1``) until its application is built, then
switches the same server over to it (:func:`serve`) — the hub counts any HTTP answer as "up".
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse

from tornado import web
from tornado.httpserver import HTTPServer


class _Starting(web.RequestHandler):
    def prepare(self):
        self.set_status(503)
        self.set_header("Retry-After", "1")
        self.set_header("Connection", "close")  # the next request, on a new connection, reaches the real app
        self.finish({"status": "starting"})


def configured_url(environ) -> str | None:
    """The URL the operator gave this service (``JUPYTERHUB_SERVICE_URL``), or None when it has none.

    Why: JupyterHub passes ``JUPYTERHUB_SERVICE_URL`` to *every* managed service; one configured
    without a ``url`` gets ``http://127.0.0.1:0/`` (its spawner's unset port). Read as an address,
    that is port 80: a second culler (or a hub running as a user) could not bind it, and the service
    would die at start-up for an API nobody asked for.
    """
    url = environ.get("JUPYTERHUB_SERVICE_URL") or ""
    if not url:
        return None
    try:
        port = urlparse(url).port
    except ValueError:
        return url  # listen_address reports it
    return None if port == 0 else url


def listen_address(service_url: str, bind: str | None = None) -> tuple[str, int]:
    """Where to listen: ``bind`` ("host:port" or "port"), else the port of the service URL the hub
    gave us, on that host when it is an IP address (127.0.0.1 locally) and on all interfaces when it
    is a name (``http://hub:8182`` in Kubernetes)."""
    parsed = urlparse(service_url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if bind:
        h, _, p = bind.rpartition(":")
        return (h or "0.0.0.0"), int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host = "0.0.0.0"
    return host, port


def listen_early(host: str, port: int) -> HTTPServer:
    """An HTTP server on ``host:port`` answering 503 "starting" until :func:`serve` is called."""
    server = HTTPServer(web.Application([(r".*", _Starting)]), xheaders=True)
    server.listen(port, host)
    return server


def serve(server: HTTPServer, application: web.Application) -> None:
    """From now on ``server`` hands every new request to ``application``."""
    server.request_callback = application


__all__ = ["configured_url", "listen_address", "listen_early", "serve"]
