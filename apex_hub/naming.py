"""Kubernetes names derived from JupyterHub user names.

Why: user names are arbitrary strings (mixed case, e-mail addresses, unicode,
hundreds of characters) while Kubernetes wants DNS-1123 names.  The mapping here
is *stable* (a pure function of its input, so a hub restart finds the same
namespace) and *collision-free*: a name that does not pass through unchanged
gets ``-`` plus 8 hex digits of the SHA-256 of the original appended, so
``Alice``, ``alice``, ``a.lice`` and ``alice@x.org`` never share a namespace.

Every generated name also starts with a letter (``42`` becomes ``u-42-<hash>``,
an all-unicode name becomes ``u-<hash>``).  A DNS-1123 label may start with a
digit, but RFC 1035 labels (Service names, some tools) may not; starting with a
letter makes one name valid for every object kind.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
HASH_LENGTH = 8
#: The shortest name that can hold a hashed slug: ``u-`` + 8 hex digits.
MIN_LENGTH = 2 + HASH_LENGTH

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
# A plain name that already looks like "<something>-<8 hex>" is hashed too, so
# that it can never equal the hashed form of a different name.
_HASH_TAIL = re.compile(r"-[0-9a-f]{%d}$" % HASH_LENGTH)
_PREFIX = re.compile(r"^([a-z][-a-z0-9]*)?$")


def is_dns_label(value: str) -> bool:
    """True for a valid DNS-1123 label (namespaces, most object names)."""
    return len(value) <= DNS_LABEL_MAX and bool(DNS1123_LABEL.match(value))


def is_dns_subdomain(value: str) -> bool:
    """True for a valid DNS-1123 subdomain (ConfigMaps, Secrets, PVCs, ...)."""
    return len(value) <= DNS_SUBDOMAIN_MAX and bool(DNS1123_SUBDOMAIN.match(value))


def short_hash(value: str) -> str:
    """First 8 hex digits of SHA-256 over the UTF-8 bytes of ``value``."""
    data = value.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:HASH_LENGTH]


def _readable(value: str) -> str:
    """Lowercase ASCII form: accents folded (``Zoë`` → ``zoe``), the rest dashes."""
    folded = unicodedata.normalize("NFKD", value.lower())
    ascii_only = folded.encode("ascii", "ignore").decode("ascii")
    return _NOT_ALNUM.sub("-", ascii_only).strip("-")


def slugify(name: str, max_length: int = DNS_LABEL_MAX) -> str:
    """A stable, collision-free DNS-1123 label for ``name`` (see module doc).

    ``name`` is returned unchanged when it already is a lowercase label that
    starts with a letter, fits ``max_length`` and does not end like a hash.
    Otherwise the readable part is truncated so that ``-<hash>`` fits.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, not {type(name).__name__}")
    if max_length < MIN_LENGTH:
        raise ValueError(
            f"max_length must be at least {MIN_LENGTH} to hold a hashed name, got {max_length}"
        )
    readable = _readable(name)
    if (
        readable == name
        and len(readable) <= max_length
        and readable[:1].isalpha()
        and not _HASH_TAIL.search(readable)
    ):
        return readable
    if not readable[:1].isalpha():
        readable = ("u-" + readable).rstrip("-")
    budget = max_length - HASH_LENGTH - 1
    readable = readable[:budget].rstrip("-")
    return f"{readable}-{short_hash(name)}"


def user_namespace(
    username: str, prefix: str = "apex-", max_length: int = DNS_LABEL_MAX
) -> str:
    """The namespace of ``username``: ``prefix`` + its slug, at most ``max_length``.

    The prefix must be empty or lowercase alphanumerics and ``-`` starting with a
    letter, and leave room for a hashed slug (``MIN_LENGTH`` characters).
    """
    if max_length > DNS_LABEL_MAX:
        raise ValueError(
            f"max_length {max_length} is over {DNS_LABEL_MAX}, the limit for namespace names"
        )
    if not _PREFIX.match(prefix):
        raise ValueError(
            f"namespace prefix {prefix!r} is invalid: use lowercase letters, digits and '-',"
            " starting with a letter (for example 'apex-')"
        )
    room = max_length - len(prefix)
    if room < MIN_LENGTH:
        raise ValueError(
            f"namespace prefix {prefix!r} is {len(prefix)} characters; namespace names are"
            f" limited to {max_length} and a user slug needs at least {MIN_LENGTH},"
            f" so shorten the prefix to at most {max_length - MIN_LENGTH} characters"
        )
    return prefix + slugify(username, room)


def object_name(*parts: str, max_length: int = DNS_SUBDOMAIN_MAX) -> str:
    """A DNS-1123 subdomain name for other objects, from ``'-'.join(parts)``.

    Collision-free as a function of the joined string: put fixed words first and
    the user-controlled part last, e.g. ``object_name("claim", username)``.
    Pass ``max_length=63`` for objects whose names must be labels.
    """
    if not parts:
        raise ValueError("object_name() needs at least one part")
    if max_length > DNS_SUBDOMAIN_MAX:
        raise ValueError(f"max_length {max_length} is over {DNS_SUBDOMAIN_MAX}")
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"name parts must be strings, not {type(part).__name__}")
    return slugify("-".join(parts), max_length)


__all__ = [
    "DNS_LABEL_MAX",
    "DNS_SUBDOMAIN_MAX",
    "MIN_LENGTH",
    "is_dns_label",
    "is_dns_subdomain",
    "object_name",
    "short_hash",
    "slugify",
    "user_namespace",
]
