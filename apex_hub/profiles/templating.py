"""``{username}``, ``{namespace}``, ``{profile}`` placeholders in profile text.

Why: ConfigMap content, manifests and a few names depend on the user.  Only the
exact placeholders below are replaced (other braces — JSON, shell ``${VAR}`` —
are left alone, unlike ``str.format``); as in ``str.format``, a doubled
``{{namespace}}`` is the escape and renders as the literal text ``{namespace}``
(the EOEPCA converter writes it for text ApplicationHub did not substitute).
Values must be *escaped* first: a
value containing quotes, spaces, slashes, braces or newlines is refused, so a
hostile user name cannot inject YAML, shell or paths.  Pass slugs (see
``apex_hub.naming``), not raw user names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDERS = ("username", "namespace", "profile")
_NAMES = "|".join(PLACEHOLDERS)
#: ``{{name}}`` (the escape, group 1) or ``{name}`` (a placeholder, group 2).
_PLACEHOLDER = re.compile(r"\{\{(" + _NAMES + r")\}\}|\{(" + _NAMES + r")\}")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

#: Stand-in values used to check templated content when the catalogue loads.
EXAMPLE_VALUES = {"username": "user", "namespace": "apex-user", "profile": "profile"}


def has_placeholders(text: str) -> bool:
    """True when ``text`` contains one of the placeholders."""
    return any(m.group(2) for m in _PLACEHOLDER.finditer(text))


def has_escapes(text: str) -> bool:
    """True when ``text`` contains an escaped placeholder such as ``{{namespace}}``."""
    return any(m.group(1) for m in _PLACEHOLDER.finditer(text))


def escape(text: str) -> str:
    """Make every ``{name}`` in ``text`` literal (``{{name}}``): rendering gives it back."""
    return _PLACEHOLDER.sub(lambda m: m.group(0) if m.group(1) else f"{{{{{m.group(2)}}}}}", text)


def check_values(values: Mapping[str, str]) -> dict[str, str]:
    """Refuse unknown placeholder names and values that are not escaped."""
    checked = {}
    for name, value in values.items():
        if name not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {name!r}; known: {', '.join(PLACEHOLDERS)}")
        if not isinstance(value, str) or not _SAFE_VALUE.match(value):
            raise ValueError(
                f"value {value!r} for {{{name}}} is not safe to substitute: use letters,"
                " digits, '.', '_' and '-' only (pass the slug, not the raw user name)"
            )
        checked[name] = value
    return checked


def render(text: str, values: Mapping[str, str]) -> str:
    """Replace the placeholders in ``text`` with the (escaped) ``values``."""
    safe = check_values(values)

    def substitute(match: re.Match) -> str:
        if match.group(1):
            return f"{{{match.group(1)}}}"
        name = match.group(2)
        if name not in safe:
            raise ValueError(f"no value given for placeholder {{{name}}}")
        return safe[name]

    return _PLACEHOLDER.sub(substitute, text)


def render_tree(obj: object, values: Mapping[str, str]) -> object:
    """``render`` every string inside nested dicts and lists (keys included)."""
    if isinstance(obj, str):
        return render(obj, values)
    if isinstance(obj, dict):
        return {render_tree(k, values): render_tree(v, values) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [render_tree(v, values) for v in obj]
    return obj
