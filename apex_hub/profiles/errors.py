"""Errors of the catalogue, and pydantic errors turned into operator messages.

Why: an operator fixing a ConfigMap needs ``profile 'gpu': cpu_limit: Input
should be a valid number (got 'lots')``, not a pydantic dump; a user refused a
profile needs a message that does not reveal other groups' profiles.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError


class CatalogueError(ValueError):
    """The catalogue is invalid; ``problems`` has one message per problem."""

    def __init__(self, problems: Iterable[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" {source}" if source else ""
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid profiles catalogue{where}: {count} problem{'s' * (count != 1)}\n{lines}")


class ProfileError(Exception):
    """A user asked for a profile they cannot have; ``status_code`` is for the hub."""

    status_code = 400


class UnknownProfile(ProfileError, LookupError):
    """No profile has this slug."""

    status_code = 400

    def __init__(self, slug: str, available: Sequence[str] | None = None):
        self.slug = slug
        message = f"There is no profile {slug!r}."
        if available:
            message += f" Choose one of: {', '.join(available)}."
        super().__init__(message)


class ProfileNotAllowed(ProfileError, PermissionError):
    """The user's groups do not include any group the profile requires.

    The message names the profile only; the required groups are kept in
    attributes for the hub's log, not shown to the user.
    """

    status_code = 403

    def __init__(self, slug: str, required: Iterable[str] = (), groups: Iterable[str] = ()):
        self.slug: str | None = slug
        self.required_groups = sorted(required)
        self.user_groups = sorted(groups)
        super().__init__(
            f"You may not use profile {slug!r}: your groups do not include any of the"
            " groups this profile is restricted to. Ask an administrator for access."
        )


class NoProfileAvailable(ProfileNotAllowed):
    """No profile of the catalogue is open to the user's groups."""

    def __init__(self, groups: Iterable[str] = ()):
        self.slug = None
        self.required_groups = []
        self.user_groups = sorted(groups)
        PermissionError.__init__(
            self,
            "No server profile is available to you yet. Ask an administrator to add you"
            " to a group that has access.",
        )


def _known_fields() -> set[str]:
    """Every field name of the schema, for "did you mean" hints."""
    from .fields import StrictModel

    names: set[str] = set()
    todo = [StrictModel]
    while todo:
        for model in todo.pop().__subclasses__():
            todo.append(model)
            for name, field in model.model_fields.items():
                names.update({name, field.alias or name})
    return names


def _describe(loc: Sequence[Any], raw: Any) -> str:
    """``config_maps[0] ('bashrc').content``: path with names of list items."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, str) and item.startswith("<"):
            continue  # a union tag, not a field
        if item == "[key]" and parts:
            parts[-1] += " (the name)"
            continue
        if isinstance(item, int):
            node = node[item] if isinstance(node, Sequence) and item < len(node) else None
            name = node.get("name") if isinstance(node, Mapping) else None
            label = f"[{item}]" + (f" ({name!r})" if isinstance(name, str) else "")
            parts[-1:] = [(parts[-1] if parts else "") + label]
        else:
            node = node.get(item) if isinstance(node, Mapping) else None
            parts.append(str(item))
    return ".".join(parts)


def _message(error: Mapping[str, Any], known: set[str]) -> str:
    kind, msg, value = error["type"], error["msg"], error.get("input")
    if kind == "extra_forbidden":
        field = str(error["loc"][-1]) if error["loc"] else ""
        close = difflib.get_close_matches(field, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown field; remove it or fix its spelling{hint}"
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if isinstance(value, str | int | float | bool) or value is None:
        shown = repr(value)
        if len(shown) <= 60:
            return f"{msg} (got {shown})"
    return msg


def format_validation_error(exc: ValidationError, raw: Any) -> list[str]:
    """One ``path: message`` line per problem (multi-problem messages are split)."""
    known = _known_fields()
    lines = []
    for error in exc.errors():
        path = _describe(error["loc"], raw)
        for part in _message(error, known).split("\n"):
            lines.append(f"{path}: {part}" if path else part)
    return lines
