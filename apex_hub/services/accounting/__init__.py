"""Hub-managed accounting: an append-only ledger of server sessions, reports, APEL, quotas.

``python -m apex_hub.services.accounting`` (see ``__main__``); ``configure(c, accounting={...})``
in :mod:`apex_hub.services` adds it to a hub.
"""

from .db import Ledger, Observation
from .quota import QuotaError, Quotas

__all__ = ["Ledger", "Observation", "QuotaError", "Quotas"]
