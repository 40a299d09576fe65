"""What the hub-managed services share: the hub REST client, retries, where to listen, units, options.

* :mod:`.hub` — :class:`HubClient` (retries, pagination, :class:`HubAPIError`), :func:`server_path`;
* :mod:`.retry` — :func:`with_retries`, exponential backoff with jitter;
* :mod:`.listen` — :func:`listen_address` from ``JUPYTERHUB_SERVICE_URL``, answering 503 until ready;
* :mod:`.units` — :func:`parse_duration`, :func:`parse_time`, :func:`quantity`;
* :mod:`.traits` and :mod:`.app` — the services as traitlets Applications, and ``configure()``'s
  mapping of its dictionaries onto their traits;
* the user-role extension is :func:`apex_hub.hubconfig.extend_user_role` (the hub's side, shared with
  the authenticator), re-exported here.
"""

from ...hubconfig import extend_user_role, replace_role, replace_service
from .hub import HubAPIError, HubClient, server_path
from .listen import configured_url, listen_address, listen_early, serve
from .retry import retryable, with_retries
from .units import parse_duration, parse_time, quantity

__all__ = [
    "HubAPIError",
    "HubClient",
    "configured_url",
    "extend_user_role",
    "listen_address",
    "listen_early",
    "parse_duration",
    "parse_time",
    "quantity",
    "replace_role",
    "replace_service",
    "retryable",
    "serve",
    "server_path",
    "with_retries",
]
