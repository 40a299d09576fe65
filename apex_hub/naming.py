"""Kubernetes names derived from JupyterHub user names.

Why: user names are arbitrary strings (mixed case, e-mail addresses, unicode,
hundreds of characters) while Kubernetes wants DNS-1123 names.  The mapping here
is *stable* (a pure function of its input, so a hub restart finds the same
namespace) and *collision-free*: a name that does not pass through unchanged
gets ``-`` plus 26 base-32 characters (130 bits) of the SHA-256 of the original
appended, so ``Alice``, ``alice``, ``a.lice`` and ``alice@x.org`` never share a
namespace.

Why 130 bits: user names are chosen by users (``preferred_username`` at the
identity provider), so a short hash is an attack surface: with the former 32
bits, a name whose namespace equals someone else's is found in minutes.  Two
different names get the same slug only if (a) both are hashed and their SHA-256
digests agree on 130 bits (a preimage costs about 2**130 hashes), or (b) one
passes through unchanged and equals the other's hashed form, which cannot
happen: a name that ends like a hash (new or legacy form) is always hashed.

``legacy_slugify`` is the former 8-hex scheme, kept only to find namespaces
created before the change (see the spawner's migration, README "Security model").

Every generated name also starts with a letter (``42`` becomes ``u-42-<hash>``,
an all-unicode name becomes ``u-<hash>``).  A DNS-1123 label may start with a
digit, but RFC 1035 labels (Service names, some tools) may not; starting with a
letter makes one name valid for every object kind.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata

DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
#: Characters of the hash tail (lowercase RFC 4648 base 32: ``a-z``, ``2-7``, 5 bits each).
HASH_LENGTH = 26
HASH_BITS = 5 * HASH_LENGTH
#: The former scheme: 8 hex digits (32 bits); only for finding legacy namespaces.
LEGACY_HASH_LENGTH = 8
#: The shortest name that can hold a hashed slug: ``u-`` + the hash.
MIN_LENGTH = 2 + HASH_LENGTH
LEGACY_MIN_LENGTH = 2 + LEGACY_HASH_LENGTH

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
# A plain name that already looks like "<something>-<hash>" is hashed too, so that
# it can never equal the hashed form of a different name -- in the current scheme
# or in the legacy one (else "alice-x-org-1a2b3c4d" would pass through unchanged
# and land in the legacy namespace of "alice@x.org").
_HASH_TAIL = re.compile(rf"-[a-z2-7]{{{HASH_LENGTH}}}$")
_LEGACY_HASH_TAIL = re.compile(rf"-[0-9a-f]{{{LEGACY_HASH_LENGTH}}}$")
_PREFIX = re.compile(r"^([a-z][-a-z0-9]*)?$")


def is_dns_label(value: str) -> bool:
    """True for a valid DNS-1123 label (namespaces, most object names)."""
    return len(value) <= DNS_LABEL_MAX and bool(DNS1123_LABEL.match(value))


def is_dns_subdomain(value: str) -> bool:
    """True for a valid DNS-1123 subdomain (ConfigMaps, Secrets, PVCs, ...)."""
    return len(value) <= DNS_SUBDOMAIN_MAX and bool(DNS1123_SUBDOMAIN.match(value))


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def short_hash(value: str) -> str:
    """The first 130 bits of SHA-256 over the UTF-8 bytes of ``value``, in lowercase base 32."""
    return base64.b32encode(_digest(value)).decode("ascii").lower()[:HASH_LENGTH]


def legacy_hash(value: str) -> str:
    """The former hash: first 8 hex digits of the SHA-256 of ``value``."""
    return _digest(value).hex()[:LEGACY_HASH_LENGTH]


def _looks_hashed(readable: str) -> bool:
    return bool(_HASH_TAIL.search(readable) or _LEGACY_HASH_TAIL.search(readable))


def _readable(value: str) -> str:
    """Lowercase ASCII form: accents folded (``Zoë`` → ``zoe``), the rest dashes."""
    folded = unicodedata.normalize("NFKD", value.lower())
    ascii_only = folded.encode("ascii", "ignore").decode("ascii")
    return _NOT_ALNUM.sub("-", ascii_only).strip("-")


def _slug(name: str, max_length: int, hash_length: int, tail: str, hashed) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, not {type(name).__name__}")
    if max_length < 2 + hash_length:
        raise ValueError(
            f"max_length must be at least {2 + hash_length} to hold a hashed name, got {max_length}"
        )
    readable = _readable(name)
    if readable == name and len(readable) <= max_length and readable[:1].isalpha() and not hashed(readable):
        return readable
    if not readable[:1].isalpha():
        readable = ("u-" + readable).rstrip("-")
    budget = max_length - hash_length - 1
    readable = readable[:budget].rstrip("-")
    return f"{readable}-{tail}"


def slugify(name: str, max_length: int = DNS_LABEL_MAX) -> str:
    """A stable, collision-free DNS-1123 label for ``name`` (see module doc).

    ``name`` is returned unchanged when it already is a lowercase label that
    starts with a letter, fits ``max_length`` and does not end like a hash.
    Otherwise the readable part is truncated so that ``-<hash>`` fits.
    """
    tail = short_hash(name) if isinstance(name, str) else ""
    return _slug(name, max_length, HASH_LENGTH, tail, _looks_hashed)


def legacy_slugify(name: str, max_length: int = DNS_LABEL_MAX) -> str:
    """The slug of the former scheme (8 hex digits); only to find objects it named."""
    tail = legacy_hash(name) if isinstance(name, str) else ""
    return _slug(name, max_length, LEGACY_HASH_LENGTH, tail, lambda r: bool(_LEGACY_HASH_TAIL.search(r)))


def user_namespace(username: str, prefix: str = "apex-", max_length: int = DNS_LABEL_MAX) -> str:
    """The namespace of ``username``: ``prefix`` + its slug, at most ``max_length``.

    The prefix must be empty or lowercase alphanumerics and ``-`` starting with a
    letter, and leave room for a hashed slug (``MIN_LENGTH`` characters).
    """
    _check_namespace_args(prefix, max_length)
    return prefix + slugify(username, max_length - len(prefix))


def legacy_user_namespace(
    username: str, prefix: str = "apex-", max_length: int = DNS_LABEL_MAX
) -> str | None:
    """The namespace the former (8-hex) scheme gave ``username``; None if it had none."""
    _check_namespace_args(prefix, max_length)
    room = max_length - len(prefix)
    return prefix + legacy_slugify(username, room) if room >= LEGACY_MIN_LENGTH else None


def _check_namespace_args(prefix: str, max_length: int) -> None:
    if max_length > DNS_LABEL_MAX:
        raise ValueError(f"max_length {max_length} is over {DNS_LABEL_MAX}, the limit for namespace names")
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
    "HASH_BITS",
    "HASH_LENGTH",
    "MIN_LENGTH",
    "is_dns_label",
    "is_dns_subdomain",
    "legacy_hash",
    "legacy_slugify",
    "legacy_user_namespace",
    "object_name",
    "short_hash",
    "slugify",
    "user_namespace",
]
