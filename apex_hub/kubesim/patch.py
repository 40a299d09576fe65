"""The four PATCH flavours of the Kubernetes API, as pure functions on JSON objects.

KubeSpawner, kubectl and our own controllers patch objects with JSON merge patch,
JSON patch, strategic merge patch and server-side apply; each has its own semantics
(lists merged by key, ``$patch`` directives, ``test`` ops...) that a client can
observe. Every function here returns a new object and never mutates its inputs, so
the store can keep history entries and watch events that share old objects.
Failures raise :class:`PatchError`, whose ``code`` is the HTTP status to send.
"""

from __future__ import annotations

import copy
import json
import re

__all__ = [
    "APPLY_PATCH",
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "PatchError",
    "apply_by_content_type",
    "apply_patch",
    "json_patch",
    "merge_patch",
    "strategic_merge_patch",
]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# Strategic merge: lists of objects merged element-wise, by field name (at any depth).
# ``ports`` is keyed by containerPort in a pod spec and by port in a Service spec.
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "ports": ("containerPort", "port"),
    "ownerReferences": ("uid",),
    "conditions": ("type",),
}
# Strategic merge: lists of scalars merged as ordered sets. Every other list is replaced.
SET_LISTS = frozenset({"finalizers"})

_DELETE_FROM_PRIMITIVE = "$deleteFromPrimitiveList/"
_SET_ELEMENT_ORDER = "$setElementOrder/"


class PatchError(ValueError):
    """A patch that cannot be used: ``code`` 400 malformed, 415 unknown type, 422 not applicable."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# --- JSON merge patch (RFC 7386) -------------------------------------------------------------


def merge_patch(target, patch):
    """RFC 7386 merge patch: ``null`` deletes a key, objects merge recursively, all else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    _merge_into(result, patch)
    return result


def _merge_into(doc: dict, patch: dict) -> None:
    for key, value in patch.items():
        if value is None:
            doc.pop(key, None)
        elif isinstance(value, dict):
            if not isinstance(doc.get(key), dict):
                doc[key] = {}
            _merge_into(doc[key], value)
        else:
            doc[key] = copy.deepcopy(value)


# --- JSON patch (RFC 6902) -------------------------------------------------------------------

_OP_FIELDS = {
    "add": ("value",),
    "remove": (),
    "replace": ("value",),
    "move": ("from",),
    "copy": ("from",),
    "test": ("value",),
}
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")


def _pointer(ptr, where: str) -> list[str]:
    """RFC 6901 pointer to reference tokens (``~1`` is ``/``, ``~0`` is ``~``)."""
    if not isinstance(ptr, str) or (ptr and not ptr.startswith("/")):
        raise PatchError(400, f"{where}: {ptr!r} is not a JSON pointer (must be empty or start with '/')")
    if not ptr:
        return []
    tokens = ptr[1:].split("/")
    if any(re.search(r"~(?![01])", t) for t in tokens):
        raise PatchError(
            400, f"{where}: invalid escape in JSON pointer {ptr!r} ('~' must be followed by 0 or 1)"
        )
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def _index(token: str) -> int | None:
    return int(token) if _ARRAY_INDEX.fullmatch(token) else None


def _resolve(doc, tokens: list[str], where: str):
    cur = doc
    for token in tokens:
        if isinstance(cur, dict) and token in cur:
            cur = cur[token]
        elif isinstance(cur, list) and (i := _index(token)) is not None and i < len(cur):
            cur = cur[i]
        else:
            raise PatchError(422, f"{where}: path not found")
    return cur


def _add(doc, tokens, value, where):
    if not tokens:
        return value
    parent, last = _resolve(doc, tokens[:-1], where), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        i = len(parent) if last == "-" else _index(last)
        if i is None or i > len(parent):
            raise PatchError(422, f"{where}: array index {last!r} is out of range (length {len(parent)})")
        parent.insert(i, value)
    else:
        raise PatchError(422, f"{where}: path not found (parent is not an object or array)")
    return doc


def _remove(doc, tokens, where):
    """Remove the value at ``tokens`` from ``doc`` and return it."""
    if not tokens:
        raise PatchError(422, f"{where}: cannot remove the whole document")
    parent, last = _resolve(doc, tokens[:-1], where), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and (i := _index(last)) is not None and i < len(parent):
        return parent.pop(i)
    raise PatchError(422, f"{where}: path not found")


def _replace(doc, tokens, value, where):
    if not tokens:
        return value
    parent, last = _resolve(doc, tokens[:-1], where), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        parent[last] = value
    elif isinstance(parent, list) and (i := _index(last)) is not None and i < len(parent):
        parent[i] = value
    else:
        raise PatchError(422, f"{where}: path not found")
    return doc


def _json_equal(a, b) -> bool:
    """JSON equality: unlike Python ``==``, ``true`` is not ``1``; ``1`` does equal ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _parse_ops(ops) -> list[tuple[str, str, list[str], list[str] | None, dict]]:
    """Check the whole body first, so a malformed patch is a 400 before anything is applied."""
    if not isinstance(ops, list):
        raise PatchError(400, f"json patch body must be a JSON array of operations, got {type(ops).__name__}")
    parsed = []
    for n, op in enumerate(ops):
        if not isinstance(op, dict):
            raise PatchError(400, f"json patch operation #{n} must be an object")
        name = op.get("op")
        if name not in _OP_FIELDS:
            raise PatchError(
                400,
                f"json patch operation #{n}: unknown op {name!r} (expected one of {', '.join(_OP_FIELDS)})",
            )
        if "path" not in op:
            raise PatchError(400, f'json patch "{name}" (operation #{n}): missing "path"')
        where = f'json patch "{name}" at {json.dumps(op["path"])}'
        for field in _OP_FIELDS[name]:
            if field not in op:
                raise PatchError(400, f'{where}: missing "{field}"')
        frm = _pointer(op["from"], where) if "from" in _OP_FIELDS[name] else None
        parsed.append((name, where, _pointer(op["path"], where), frm, op))
    return parsed


def json_patch(target, ops: list):
    """RFC 6902 JSON patch: apply ``ops`` in order to a copy of ``target``; all or nothing."""
    doc = copy.deepcopy(target)
    for name, where, path, frm, op in _parse_ops(ops):
        if name == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]), where)
        elif name == "remove":
            _remove(doc, path, where)
        elif name == "replace":
            doc = _replace(doc, path, copy.deepcopy(op["value"]), where)
        elif name == "move":
            if path[: len(frm)] == frm and len(path) > len(frm):
                raise PatchError(
                    422, f"{where}: cannot move {json.dumps(op['from'])} into one of its own children"
                )
            _resolve(doc, frm, where)
            if path != frm:
                doc = _add(doc, path, _remove(doc, frm, where), where)
        elif name == "copy":
            doc = _add(doc, path, copy.deepcopy(_resolve(doc, frm, where)), where)
        else:  # test
            actual = _resolve(doc, path, where)
            if not _json_equal(actual, op["value"]):
                raise PatchError(
                    422,
                    f"{where}: test failed: value is {json.dumps(actual)}, "
                    f"expected {json.dumps(op['value'])}",
                )
    return doc


# --- strategic merge patch -------------------------------------------------------------------


def strategic_merge_patch(target, patch):
    """Kubernetes strategic merge patch, for the fields our clients touch.

    Like a merge patch, but lists named in ``MERGE_KEYS`` merge element-wise by key,
    ``finalizers`` merge as a set, and the ``$patch`` (replace/delete/merge),
    ``$retainKeys`` and ``$deleteFromPrimitiveList/<field>`` directives are honoured;
    ``$setElementOrder/<field>`` is dropped. Merge keys are looked up by field name alone,
    not by the object's schema, which is enough for pod templates, services and metadata.
    """
    if not isinstance(patch, dict):
        raise PatchError(400, f"strategic merge patch body must be a JSON object, got {type(patch).__name__}")
    # Work on a private copy of the target; everything taken from the patch is rebuilt.
    return _smp_map(copy.deepcopy(target) if isinstance(target, dict) else {}, patch)


def _smp_value(field, original, value):
    if isinstance(value, dict):
        return _smp_map(original if isinstance(original, dict) else {}, value)
    if isinstance(value, list):
        return _smp_list(field, original if isinstance(original, list) else [], value)
    return value


def _smp_map(original: dict, patch: dict) -> dict:
    directive = patch.get("$patch", "merge")
    if directive == "replace":
        return _smp_map({}, {k: v for k, v in patch.items() if k != "$patch"})
    if directive == "delete":
        return {}
    if directive != "merge":
        raise PatchError(400, f"unknown strategic merge patch directive $patch: {directive!r}")
    result = dict(original)
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM_PRIMITIVE):
            field = key[len(_DELETE_FROM_PRIMITIVE) :]
            if not isinstance(value, list):
                raise PatchError(400, f"{key} must be a list of values to delete")
            if isinstance(result.get(field), list):
                result[field] = [x for x in result[field] if x not in value]
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith((_DELETE_FROM_PRIMITIVE, _SET_ELEMENT_ORDER)):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _smp_value(key, result.get(key), value)
    retain = patch.get("$retainKeys")
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError(400, "$retainKeys must be a list of field names")
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _is_directive(el, name: str) -> bool:
    return isinstance(el, dict) and el.get("$patch") == name


def _smp_list(field, original: list, patch: list) -> list:
    if any(_is_directive(el, "replace") for el in patch):
        return [_smp_value(None, None, el) for el in patch if not _is_directive(el, "replace")]
    if field in SET_LISTS:
        result = list(original)
        result.extend(x for i, x in enumerate(patch) if x not in result and x not in patch[:i])
        return result
    keys = MERGE_KEYS.get(field)
    if keys is None:
        return [_smp_value(None, None, el) for el in patch]
    result = list(original)
    for el in patch:
        if not isinstance(el, dict):
            raise PatchError(
                400, f"{field}: list elements must be objects (merged by {keys[0]!r}), got {el!r}"
            )
        key = next((k for k in keys if k in el), None)
        if key is None:
            raise PatchError(
                400, f"{field}: element {el!r} does not contain the merge key {' or '.join(keys)!r}"
            )
        found = [
            i for i, cur in enumerate(result) if isinstance(cur, dict) and key in cur and cur[key] == el[key]
        ]
        if _is_directive(el, "delete"):
            result = [cur for i, cur in enumerate(result) if i not in found]
        elif found:
            result[found[0]] = _smp_map(result[found[0]], el)
        else:
            result.append(_smp_map({}, el))
    return result


# --- server-side apply and dispatch ------------------------------------------------------------


def apply_patch(target, patch, field_manager: str | None = None):
    """Simplified server-side apply: create from the applied config, else strategic-merge it in.

    Managed fields, ownership and conflicts between field managers are not modelled, so
    ``field_manager`` is accepted but unused, and fields dropped from a later applied
    config are left in place rather than removed.
    """
    if not isinstance(patch, dict):
        raise PatchError(400, f"apply patch body must be an object, got {type(patch).__name__}")
    if target is None:
        return copy.deepcopy(patch)
    return strategic_merge_patch(target, patch)


def apply_by_content_type(content_type: str, target, body):
    """Apply ``body`` (already decoded JSON) as the patch type named by a request's Content-Type."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == JSON_PATCH:
        return json_patch(target, body)
    if ctype == MERGE_PATCH:
        if not isinstance(body, dict):
            raise PatchError(400, f"merge patch body must be a JSON object, got {type(body).__name__}")
        return merge_patch(target, body)
    if ctype == STRATEGIC_MERGE_PATCH:
        return strategic_merge_patch(target, body)
    if ctype == APPLY_PATCH:
        return apply_patch(target, body)
    raise PatchError(
        415,
        f"unsupported patch type {content_type!r}: accepted media types are "
        f"{JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}, {APPLY_PATCH}",
    )
