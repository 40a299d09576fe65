"""Server-side apply's field ownership, simplified: per field manager, the fields it applied last.

A real API server keeps ``managedFields`` so that an apply which no longer sends a field
removes it (unless another manager owns it too), and an apply that changes a field another
manager owns is refused with 409 unless ``force=true``. Found against the real API server:
without this, labels dropped from an apply stayed forever in kubesim.

Simplifications (documented in the README): only *apply* managers own fields; a non-apply
write (create, update, patch, the kubelet) takes ownership away from them for the fields whose
value it changes, but is not itself recorded, so it never causes a conflict; ownership is not
shown in ``metadata.managedFields``.

A field path is a tuple of segments: a map key (``str``), a keyed list element
(``("k", key, value)``, e.g. a container by name) or a set-list value (``("v", json)``, e.g. a
finalizer). Scalars and lists that are neither keyed nor sets (``args``) are leaves, owned whole.
"""

from __future__ import annotations

import json

from .patch import MERGE_KEYS, SET_LISTS

MISSING = object()
# never owned, never removed: they name the object rather than describe it
_IDENTITY = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


def field_set(config: dict) -> set[tuple]:
    """Every field path an applied configuration sets."""
    out: set[tuple] = set()
    _walk(config, (), None, out)
    return {p for p in out if p not in _IDENTITY and p}


def _walk(value, prefix: tuple, field: str | None, out: set) -> None:
    if isinstance(value, dict):
        if not value:
            out.add(prefix)  # an explicitly empty map is owned as a value
        for key, sub in value.items():
            if not key.startswith("$"):
                _walk(sub, prefix + (key,), key, out)
    elif isinstance(value, list) and field in MERGE_KEYS:
        if not value:
            out.add(prefix)  # an explicitly empty list, likewise
        for el in value:
            seg = _element_segment(field, el)
            if seg is None:
                out.add(prefix)  # not mergeable: owned whole
                return
            out.add(prefix + (seg,))
            _walk(el, prefix + (seg,), None, out)
    elif isinstance(value, list) and field in SET_LISTS:
        for el in value:
            out.add(prefix + (("v", json.dumps(el, sort_keys=True)),))
        if not value:
            out.add(prefix)
    else:
        out.add(prefix)


def _element_segment(field: str, el) -> tuple | None:
    if not isinstance(el, dict):
        return None
    key = next((k for k in MERGE_KEYS[field] if k in el), None)
    return None if key is None else ("k", key, el[key])


def _child(container, seg):
    """The value under ``seg`` in ``container``, or MISSING."""
    if isinstance(seg, str):
        return container.get(seg, MISSING) if isinstance(container, dict) else MISSING
    if not isinstance(container, list):
        return MISSING
    for el in container:
        if seg[0] == "k" and isinstance(el, dict) and seg[1] in el and el[seg[1]] == seg[2]:
            return el
        if seg[0] == "v" and json.dumps(el, sort_keys=True) == seg[1]:
            return el
    return MISSING


def value_at(obj, path: tuple):
    cur = obj
    for seg in path:
        cur = _child(cur, seg)
        if cur is MISSING:
            return MISSING
    return cur


def _drop(container, seg) -> None:
    if isinstance(seg, str):
        if isinstance(container, dict):
            container.pop(seg, None)
    elif isinstance(container, list):
        target = _child(container, seg)
        if target is not MISSING:
            container[:] = [el for el in container if el is not target]


def remove_fields(obj: dict, paths: set[tuple], still_owned: set[tuple]) -> None:
    """Remove ``paths`` from ``obj`` in place; maps and lists left empty go too, unless owned."""
    # only the outermost removed paths: removing an element removes what is inside it
    outermost = {p for p in paths if not any(p[:i] in paths for i in range(1, len(p)))}
    for path in sorted(outermost, key=len, reverse=True):
        if path in _IDENTITY or any(o[: len(path)] == path for o in still_owned):
            continue  # someone still owns it, or something inside it
        parents = [obj]
        for seg in path[:-1]:
            nxt = _child(parents[-1], seg)
            if nxt is MISSING:
                break
            parents.append(nxt)
        else:
            _drop(parents[-1], path[-1])
            # prune containers that only existed for the removed field (never top-level ones)
            for depth in range(len(path) - 1, 1, -1):
                container, prefix = parents[depth], path[:depth]
                if container or prefix in still_owned:
                    break
                _drop(parents[depth - 1], path[depth - 1])


def conflicts(
    cur: dict, config: dict, fields: set[tuple], owners: dict[str, set[tuple]]
) -> list[tuple[str, tuple]]:
    """``(manager, path)`` for each field the config changes that another manager owns."""
    found = []
    for manager, owned in sorted(owners.items()):
        for path in sorted(fields & owned, key=str):
            if not isinstance(path[-1], str):
                continue  # list elements and set values: being there is all, no value to disagree on
            live = value_at(cur, path)
            if live is not MISSING and live != value_at(config, path):
                found.append((manager, path))
    return found


def render_path(path: tuple) -> str:
    """A path as the API server prints it in conflict messages: ``.metadata.labels.team``."""
    out = ""
    for seg in path:
        if isinstance(seg, str):
            out += f".{seg}"
        elif seg[0] == "k":
            out += f'[{seg[1]}="{seg[2]}"]'
        else:
            out += f"[{seg[1]}]"
    return out


def changed(before: dict, after: dict, paths: set[tuple]) -> set[tuple]:
    """The ``paths`` whose value differs between two versions of an object."""
    return {p for p in paths if value_at(before, p) != value_at(after, p)}


def conflict_message(clashes: list[tuple[str, tuple]]) -> str:
    """The 409 message a real API server gives (one conflict inline, several grouped by manager)."""
    if len(clashes) == 1:
        manager, path = clashes[0]
        return f'Apply failed with 1 conflict: conflict with "{manager}": {render_path(path)}'
    lines = []
    for manager in sorted({m for m, _ in clashes}):
        lines.append(f'conflicts with "{manager}":')
        lines += [f"- {render_path(p)}" for m, p in clashes if m == manager]
    return f"Apply failed with {len(clashes)} conflicts: " + "\n".join(lines)
