"""``python -m apex_hub.services.accounting [options]``: run as a JupyterHub service.

The options are the traits of :class:`apex_hub.services.accounting.app.AccountingApp` (``--help-all``).
"""

from __future__ import annotations

import sys

from .app import AccountingApp, main

__all__ = ["AccountingApp", "main"]


if __name__ == "__main__":
    sys.exit(main())
