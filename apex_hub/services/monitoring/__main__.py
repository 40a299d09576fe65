"""``python -m apex_hub.services.monitoring --public-url URL --profile SLUG [options]``

The options are the traits of :class:`apex_hub.services.monitoring.app.MonitoringApp` (``--help-all``).
"""

from __future__ import annotations

import sys
import warnings

from .app import MonitoringApp, main

__all__ = ["MonitoringApp", "main"]


def __getattr__(name: str):
    if name == "bind_address":
        warnings.warn(
            "apex_hub.services.monitoring.__main__.bind_address moved: use"
            " apex_hub.services.common.listen.listen_address",
            DeprecationWarning,
            stacklevel=2,
        )
        from ..common.listen import listen_address

        return listen_address
    raise AttributeError(name)


if __name__ == "__main__":
    sys.exit(main())
