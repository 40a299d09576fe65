"""Durations, timestamps and Kubernetes quantities as the services read them.

Why one place: the culling policy, the culler's and monitoring's options and the accounting ledger
read the same kinds of values; one parser each means one set of accepted spellings and one message.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import dateutil.parser

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: Any) -> float:
    """ "30m" / "2h" / "1d" / "1h30m" / "90s" / 5400 / "5400" -> seconds; 0, "0", "never" -> 0."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{value!r}: a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration")
    text = value.strip().lower()
    if text in ("never", "none", "off"):
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise ValueError(f"{value!r}: a duration cannot be negative")
        return seconds
    compact = text.replace(" ", "")
    if not compact or _DURATION_PART.sub("", compact):
        raise ValueError(
            f"{value!r} is not a duration: write e.g. '90s', '30m', '2h', '1d', '1h30m' or a number of seconds"
        )
    return float(sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(compact)))


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 timestamp from the hub or Kubernetes (``...Z`` or with an offset; naive = UTC)."""
    if not value:
        return None
    dt = dateutil.parser.isoparse(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
_FACTORS: dict[str | None, Decimal] = {
    None: Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    **{s + "i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
}


def quantity(value: object) -> Decimal:
    """A Kubernetes quantity as a number (``"500m"`` → 0.5, ``"1Gi"`` → 1073741824, ``"1G"`` → 10⁹)."""
    if value is None:
        return Decimal(0)
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    suffix = m.group(2)
    if suffix and suffix[0] in "eE" and len(suffix) > 1:
        return Decimal(m.group(1)) * Decimal(10) ** int(suffix[1:])
    return Decimal(m.group(1)) * _FACTORS[suffix]


__all__ = ["parse_duration", "parse_time", "quantity"]
