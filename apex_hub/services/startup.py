"""Listening before a service is ready. Moved to :mod:`apex_hub.services.common.listen`; this module
keeps the old import path."""

from .common.listen import configured_url, listen_address, listen_early, serve

__all__ = ["configured_url", "listen_address", "listen_early", "serve"]
