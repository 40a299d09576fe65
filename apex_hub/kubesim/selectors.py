"""Label and field selectors, parsed the way the Kubernetes API server parses them.

KubeSpawner, reflectors and kubectl filter lists and watches with ``labelSelector`` and
``fieldSelector`` query parameters; a selector the real server would reject must fail
here too (as :class:`SelectorError`, which the server turns into 400 BadRequest), and a
valid one must match exactly the same objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["SelectorError", "field_selector", "label_selector", "label_selector_from_dict"]

Labels = dict | None

_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_FIELD_PATH = re.compile(r"[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*")


class SelectorError(ValueError):
    """A selector the API server would reject; the message says what is wrong."""


def _match_all(_obj=None) -> bool:
    return True


def _check_key(key: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if slash and not (prefix and len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise SelectorError(f"invalid label key {key!r}: prefix must be a DNS subdomain")
    if not (len(name) <= 63 and _NAME.fullmatch(name)):
        raise SelectorError(
            f"invalid label key {key!r}: name must be 1-63 alphanumeric characters, "
            "'-', '_' or '.', starting and ending with an alphanumeric character"
        )
    return key


def _check_value(value: str) -> str:
    if value and not (len(value) <= 63 and _NAME.fullmatch(value)):
        raise SelectorError(
            f"invalid label value {value!r}: must be empty or 1-63 alphanumeric characters, "
            "'-', '_' or '.', starting and ending with an alphanumeric character"
        )
    return value


def _requirement(key: str, op: str, values: frozenset[str] = frozenset()) -> Callable[[dict], bool]:
    """One clause of a label selector as a predicate over a (non-None) labels dict."""
    if op == "exists":
        return lambda labels: key in labels
    if op == "!exists":
        return lambda labels: key not in labels
    if op == "in":
        return lambda labels: key in labels and labels[key] in values
    if op == "notin":
        return lambda labels: key not in labels or labels[key] not in values
    raise SelectorError(f"unknown operator {op!r}")  # pragma: no cover - callers pass known ops


def _combine(reqs: list[Callable[[dict], bool]]) -> Callable[[Labels], bool]:
    if not reqs:
        return _match_all

    def matches(labels: Labels) -> bool:
        labels = labels or {}
        return all(req(labels) for req in reqs)

    return matches


def _tokenize(expr: str) -> list[tuple[str, str]]:
    """Split into ``("op", text)`` and ``("id", text)`` tokens; whitespace only separates."""
    tokens, i, n = [], 0, len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif expr.startswith(("!=", "=="), i):
            tokens.append(("op", expr[i : i + 2]))
            i += 2
        elif c in "=!(),":
            tokens.append(("op", c))
            i += 1
        else:
            j = i
            while j < n and not expr[j].isspace() and expr[j] not in "=!(),":
                j += 1
            tokens.append(("id", expr[i:j]))
            i = j
    return tokens


def label_selector(expr: str | None) -> Callable[[Labels], bool]:
    """Parse a label selector such as ``app=x,tier in (a,b),!legacy`` into a predicate on labels."""
    if expr is None or not expr.strip():
        return _match_all
    try:
        return _combine(_parse_labels(expr))
    except SelectorError as e:
        raise SelectorError(f"invalid label selector {expr!r}: {e}") from None


def _parse_labels(expr: str) -> list[Callable[[dict], bool]]:
    tokens = _tokenize(expr)
    pos = 0

    def peek() -> tuple[str, str]:
        return tokens[pos] if pos < len(tokens) else ("end", "")

    def take() -> tuple[str, str]:
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    def key_token(after: str) -> str:
        kind, text = take()
        if kind != "id":
            raise SelectorError(
                f"expected a label key {after}, found {repr(text) if text else 'end of selector'}"
            )
        return _check_key(text)

    reqs = []
    while True:
        if peek() == ("op", "!"):
            take()
            reqs.append(_requirement(key_token("after '!'"), "!exists"))
        else:
            key = key_token("at start of requirement")
            kind, text = peek()
            if kind == "end" or (kind, text) == ("op", ","):
                reqs.append(_requirement(key, "exists"))
            elif kind == "op" and text in ("=", "==", "!="):
                take()
                vkind, vtext = peek()
                value = ""
                if vkind == "id":
                    take()
                    value = vtext
                elif vkind != "end" and (vkind, vtext) != ("op", ","):
                    raise SelectorError(f"expected a value after {key!r} {text}, found {vtext!r}")
                reqs.append(
                    _requirement(key, "notin" if text == "!=" else "in", frozenset([_check_value(value)]))
                )
            elif kind == "id" and text in ("in", "notin"):
                take()
                reqs.append(_requirement(key, text, _set_values(take, key, text)))
            else:
                raise SelectorError(
                    f"expected an operator (=, ==, !=, in, notin) or ',' after {key!r}, found {text!r}"
                )
        kind, text = take()
        if kind == "end":
            return reqs
        if (kind, text) != ("op", ","):
            raise SelectorError(f"expected ',' or end of selector, found {text!r}")


def _set_values(take, key: str, op: str) -> frozenset[str]:
    """Read ``(a, b, ...)`` after ``in``/``notin``; empty members are the empty value, as upstream."""
    if take() != ("op", "("):
        raise SelectorError(f"expected '(' after {key!r} {op}")
    values, want_value = [], True
    while True:
        kind, text = take()
        if kind == "id" and want_value:
            values.append(_check_value(text))
            want_value = False
        elif (kind, text) in (("op", ","), ("op", ")")):
            if want_value:
                values.append("")
            if text == ")":
                return frozenset(values)
            want_value = True
        elif kind == "end":
            raise SelectorError(f"missing ')' after the values of {key!r} {op}")
        else:
            raise SelectorError(f"expected a value, ',' or ')' in the values of {key!r} {op}, found {text!r}")


def label_selector_from_dict(sel: dict | None) -> Callable[[Labels], bool]:
    """Predicate for a ``LabelSelector`` object (``matchLabels`` plus ``matchExpressions``).

    Used for Deployment, ReplicaSet and NetworkPolicy selectors; an empty selector
    matches everything (as for NetworkPolicy ``podSelector: {}``).
    """
    if not sel:
        return _match_all
    if not isinstance(sel, dict):
        raise SelectorError(f"label selector must be an object, got {type(sel).__name__}")
    reqs = []
    match_labels = sel.get("matchLabels") or {}
    if not isinstance(match_labels, dict):
        raise SelectorError("matchLabels must be an object")
    for key, value in match_labels.items():
        if not isinstance(value, str):
            raise SelectorError(f"matchLabels[{key!r}] must be a string")
        reqs.append(_requirement(_check_key(key), "in", frozenset([_check_value(value)])))
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in sel.get("matchExpressions") or []:
        if not isinstance(expr, dict):
            raise SelectorError("matchExpressions entries must be objects")
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if not isinstance(key, str):
            raise SelectorError("matchExpressions entry is missing its key")
        if op not in ops:
            raise SelectorError(
                f"matchExpressions[{key!r}]: operator {op!r} is not one of In, NotIn, Exists, DoesNotExist"
            )
        if op in ("In", "NotIn") and not values:
            raise SelectorError(f"matchExpressions[{key!r}]: values must be non-empty for {op}")
        if op in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"matchExpressions[{key!r}]: values must be empty for {op}")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise SelectorError(f"matchExpressions[{key!r}]: values must be a list of strings")
        reqs.append(_requirement(_check_key(key), ops[op], frozenset(_check_value(v) for v in values)))
    return _combine(reqs)


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _unescape_field_value(raw: str, term: str) -> str:
    """Field selector values escape ``\\``, ``,`` and ``=`` with a backslash; bare ``=`` is an error."""
    out, i = [], 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            nxt = raw[i + 1 : i + 2]
            if nxt not in ("\\", ",", "="):
                raise SelectorError(
                    f"invalid field selector term {term!r}: invalid escape sequence '\\{nxt}'"
                )
            out.append(nxt)
            i += 2
            continue
        if c == "=":
            raise SelectorError(f"invalid field selector term {term!r}: unescaped '=' in value")
        out.append(c)
        i += 1
    return "".join(out)


def _field_value(obj: dict, path: str) -> str:
    """The field at a dotted path as the string the server compares; missing is ``""``."""
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return ""
        cur = cur[part]
    if cur is None:
        return ""
    if isinstance(cur, bool):  # JSON spelling, e.g. spec.unschedulable=true
        return "true" if cur else "false"
    return cur if isinstance(cur, str) else str(cur)


def field_selector(expr: str | None) -> Callable[[dict], bool]:
    """Parse a field selector such as ``status.phase!=Failed,spec.nodeName=n1`` into a predicate on objects."""
    if expr is None or not expr.strip():
        return _match_all
    terms = []
    for term in _split_unescaped(expr, ","):
        if not term.strip():
            continue
        m = re.search(r"!=|==|=", term)
        if m is None:
            raise SelectorError(
                f"invalid field selector term {term.strip()!r}: expected one of "
                "'=', '==' or '!=' (set-based operators are not supported for fields)"
            )
        path = term[: m.start()].strip()
        if not _FIELD_PATH.fullmatch(path):
            raise SelectorError(
                f"invalid field selector term {term.strip()!r}: "
                f"{path!r} is not a field path like metadata.name"
            )
        value = _unescape_field_value(term[m.end() :].strip(), term.strip())
        terms.append((path, m.group() == "!=", value))
    if not terms:
        return _match_all

    def matches(obj: dict) -> bool:
        return all((_field_value(obj, path) == value) != negate for path, negate, value in terms)

    return matches
