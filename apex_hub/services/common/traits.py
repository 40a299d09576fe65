"""Trait types for the services' options: what the command line, a config file and ``configure()`` accept.

Why here: every service reads durations ("90s", "1h30m", seconds), true/false switches and lists the
same way; a trait type each means one spelling everywhere and the same message when it is wrong.
"""

from __future__ import annotations

import json
from typing import Any

from traitlets import Bool, Dict, Float, List, TraitError, Unicode

from .units import parse_duration

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_bool(text: str) -> bool:
    """``true/1/yes/on`` or ``false/0/no/off`` (any case); ValueError otherwise."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected true or false, not {text!r}")


class Duration(Float):
    """Seconds, written as a number or as "90s", "30m", "2h", "1d", "1h30m" (0 / "never": none)."""

    info_text = "a duration ('90s', '30m', '2h', '1d', '1h30m' or seconds)"

    def validate(self, obj: Any, value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise TraitError(str(exc)) from None
        return super().validate(obj, seconds)

    def from_string(self, s: str) -> float:
        return self.validate(None, s)


class Switch(Bool):
    """A boolean that also reads ``yes/no/on/off`` (``--dry-run=true`` and ``--dry-run=yes`` alike)."""

    def from_string(self, s: str) -> bool:
        try:
            return parse_bool(s)
        except ValueError as exc:
            raise TraitError(str(exc)) from None


class CommaList(List):
    """A list of names, written ``a,b,c`` on the command line."""

    def __init__(self, **kwargs: Any):
        super().__init__(Unicode(), **kwargs)

    def from_string_list(self, s_list: list[str]) -> list[str] | None:
        if len(s_list) == 1 and s_list[0] == "None" and self.allow_none:
            return None
        return [item.strip() for s in s_list for item in s.split(",") if item.strip()]

    def from_string(self, s: str) -> list[str] | None:
        return self.from_string_list([s])


class JSONDict(Dict):
    """A dictionary, written as one JSON object on the command line."""

    def from_string_list(self, s_list: list[str]) -> dict | None:
        if len(s_list) == 1 and s_list[0] == "None" and self.allow_none:
            return None
        try:
            value = json.loads(" ".join(s_list))
        except ValueError as exc:
            raise TraitError(f"{s_list!r} is not a JSON object: {exc}") from None
        return self.validate(None, value)

    def from_string(self, s: str) -> dict | None:
        return self.from_string_list([s])


__all__ = ["CommaList", "Duration", "JSONDict", "Switch", "parse_bool"]
