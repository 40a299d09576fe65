"""YAML for the catalogue: safe tags only, and no aliases.

Why no aliases: ``yaml.safe_load`` still expands anchors and aliases, so a few
hundred bytes of nested aliases (a "billion laughs" document) become gigabytes
of Python objects and hang the hub that loads the catalogue, a profile's
manifest text or an environment file.  The catalogue has ``defaults`` for
sharing values, so an alias is refused with its line and column; an anchor
alone is harmless and allowed.
"""

from __future__ import annotations

from typing import Any

import yaml

ALIAS_HINT = (
    "YAML aliases are not allowed (they can expand without bound); write the value"
    " out, or share it through 'defaults'"
)


class NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that raises at the first alias (``*name``), before anything is expanded."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor}: {ALIAS_HINT}", event.start_mark
            )
        return super().compose_node(parent, index)


def load(text: str) -> Any:
    """One YAML document (``yaml.safe_load`` without aliases)."""
    return yaml.load(text, Loader=NoAliasLoader)


def load_all(text: str) -> list[Any]:
    """Every document of a YAML stream, without aliases."""
    return list(yaml.load_all(text, Loader=NoAliasLoader))
