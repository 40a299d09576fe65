"""``python -m apex_hub.services.culler --policy FILE [--state-dir DIR] [--interval S] [--dry-run=true]``

The options are the traits of :class:`apex_hub.services.culler.app.CullerApp` (``--help-all``).
"""

from __future__ import annotations

import sys

from ..common.traits import parse_bool
from .app import CullerApp, main


def _bool(text: str) -> bool:
    """true/false as the services' switches read it (kept for ``from ..culler.__main__ import _bool``)."""
    import argparse

    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


__all__ = ["CullerApp", "main"]

if __name__ == "__main__":
    sys.exit(main())
