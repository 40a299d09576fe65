"""Kubernetes names from user names: valid, stable, collision-free."""

import random
import re

import pytest

from apex_hub.naming import (
    HASH_BITS,
    HASH_LENGTH,
    MIN_LENGTH,
    is_dns_label,
    is_dns_subdomain,
    legacy_hash,
    legacy_slugify,
    legacy_user_namespace,
    object_name,
    short_hash,
    slugify,
    user_namespace,
)

LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # DNS-1123 label that starts with a letter
SUBDOMAIN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

HOSTILE = [
    "alice",
    "Alice",
    "ALICE",
    "a.lice",
    "a-lice",
    "a_lice",
    "alice@x.org",
    "alice@x",
    "Zoë",
    "zoe",
    "ユーザー",
    "ユーザ",
    "",
    "-",
    "42",
    "u-42",
    "alice-" + short_hash("Alice"),  # looks like a hashed name
    "alice-" + legacy_hash("Alice"),  # looks like a hashed name of the former scheme
    "x" * 200,
    "x" * 201,
    "a" * 63,
    "a" * 64,
    "../etc/passwd",
    "alice\n",
    " alice",
    "robert'); drop table users;--",
]


def valid_label(name, max_length=63):
    return len(name) <= max_length and bool(LABEL.match(name)) and is_dns_label(name)


def test_plain_names_pass_through():
    for name in ["alice", "bob-smith", "a1", "user-42"]:
        assert slugify(name) == name


def test_hostile_names_are_valid_and_distinct():
    slugs = [slugify(n) for n in HOSTILE]
    for name, slug in zip(HOSTILE, slugs):
        assert valid_label(slug), (name, slug)
    assert len(set(slugs)) == len(HOSTILE), dict(zip(HOSTILE, slugs))


def test_changed_names_carry_hash_of_original():
    assert slugify("Alice") == "alice-" + short_hash("Alice")
    assert slugify("a.lice") == "a-lice-" + short_hash("a.lice")
    assert slugify("alice@x.org") == "alice-x-org-" + short_hash("alice@x.org")
    assert slugify("Zoë") == "zoe-" + short_hash("Zoë")  # accents folded, still hashed
    assert slugify("ユーザー") == "u-" + short_hash("ユーザー")
    assert slugify("") == "u-" + short_hash("")
    assert slugify("42") == "u-42-" + short_hash("42")


def test_hash_is_130_bits_of_sha256_in_base32():
    import base64
    import hashlib

    digest = hashlib.sha256(b"Alice").digest()
    assert short_hash("Alice") == base64.b32encode(digest).decode().lower()[:26]
    assert legacy_hash("Alice") == hashlib.sha256(b"Alice").hexdigest()[:8]


def _decode_tail(slug):
    """The digest bits a hashed slug carries (base 32 back to an integer)."""
    import base64

    tail = slug.rsplit("-", 1)[1].upper()
    padded = tail + "A" * (-len(tail) % 8)
    bits = int.from_bytes(base64.b32decode(padded), "big")
    return bits >> (5 * len(padded) - HASH_BITS)


def test_a_preimage_is_out_of_reach_by_construction():
    """Issue 14.1: a user who picks their name must not be able to hit someone else's slug.

    By construction, ``slugify(a) == slugify(b)`` for ``a != b`` needs both names hashed
    (a plain name never ends like a hash) with SHA-256 digests equal on HASH_BITS bits:
    a second preimage costs ~2**HASH_BITS hashes.  The checks: every hashed slug carries
    the full HASH_BITS of its name's digest (including the shortest and the longest
    slugs), plain names that end like a hash are hashed, and the work is astronomical.
    """
    import hashlib

    assert HASH_BITS >= 128
    names = ["Alice", "alice@example.org", "", "x" * 300, "ユーザー", "42"]
    for name in names:
        for max_length in (MIN_LENGTH, 40, 63, 253):
            slug = slugify(name, max_length)
            digest = int.from_bytes(hashlib.sha256(name.encode()).digest(), "big")
            assert _decode_tail(slug) == digest >> (256 - HASH_BITS), (name, max_length)
            assert len(slug.rsplit("-", 1)[1]) == HASH_LENGTH
    # plain names that look hashed (either scheme) are hashed, never passed through
    for tail in (short_hash("alice@example.org"), legacy_hash("alice@example.org")):
        lookalike = "alice-example-org-" + tail
        assert slugify(lookalike) != lookalike
        assert _decode_tail(slugify(lookalike)) == int.from_bytes(
            hashlib.sha256(lookalike.encode()).digest(), "big"
        ) >> (256 - HASH_BITS)
    # 2**130 hashes at 10**12 hashes per second (far beyond two cores, or a GPU farm)
    years = 2**HASH_BITS / 10**12 / (3600 * 24 * 365)
    assert years > 10**19


def test_the_former_32_bit_scheme_was_in_reach():
    """Why the change: the 8-hex tail is found by brute force (here 16 of its 32 bits, fast)."""
    target = legacy_hash("alice@example.org")[:4]
    found = next(f"mallory{n}" for n in range(10**7) if legacy_hash(f"mallory{n}")[:4] == target)
    assert legacy_hash(found)[:4] == target  # 2**16 tries; 2**32 is minutes on two cores
    assert slugify(found)[-HASH_LENGTH:] != slugify("alice@example.org")[-HASH_LENGTH:]


def test_legacy_slugs_are_the_former_scheme():
    assert legacy_slugify("alice") == "alice"
    assert legacy_slugify("Alice") == "alice-" + legacy_hash("Alice")
    assert legacy_slugify("bob-" + legacy_hash("x")) == "bob-" + legacy_hash("x") + "-" + legacy_hash(
        "bob-" + legacy_hash("x")
    )
    assert legacy_user_namespace("alice@x.org") == "apex-alice-x-org-" + legacy_hash("alice@x.org")
    assert legacy_user_namespace("alice") == user_namespace("alice") == "apex-alice"
    # a plain name that is someone's legacy namespace slug is hashed in the new scheme
    lookalike = legacy_slugify("alice@x.org")
    assert user_namespace(lookalike) != legacy_user_namespace("alice@x.org")


def test_stable():
    for name in HOSTILE:
        assert slugify(name) == slugify(name)
        assert user_namespace(name) == user_namespace(name)


def test_long_names_fit():
    long_name = "Very.Long-Name_" * 14  # 210 characters
    assert len(long_name) > 200
    slug = slugify(long_name)
    assert valid_label(slug) and len(slug) == 63
    assert slug.endswith("-" + short_hash(long_name))
    # two long names sharing the first 200 characters stay apart
    assert slugify("x" * 200 + "a") != slugify("x" * 200 + "b")
    assert len(user_namespace("y" * 200)) <= 63


def test_max_length():
    assert slugify("a" * 63) == "a" * 63
    assert len(slugify("a" * 64)) == 63
    assert len(slugify("alice", max_length=MIN_LENGTH)) <= MIN_LENGTH
    assert slugify("Alice", max_length=MIN_LENGTH) == "a-" + short_hash("Alice")
    with pytest.raises(ValueError, match=f"at least {MIN_LENGTH}"):
        slugify("alice", max_length=MIN_LENGTH - 1)
    with pytest.raises(TypeError):
        slugify(None)


def test_user_namespace_prefix():
    assert user_namespace("alice") == "apex-alice"
    assert user_namespace("alice", prefix="") == "alice"
    assert user_namespace("alice", prefix="jh") == "jhalice"
    assert user_namespace("Alice") == "apex-alice-" + short_hash("Alice")
    names = {user_namespace(n) for n in ["Alice", "alice", "a.lice", "alice@x"]}
    assert len(names) == 4
    for n in HOSTILE:
        assert valid_label(user_namespace(n)), n
    long_prefix = "p" * (63 - MIN_LENGTH)
    assert valid_label(user_namespace("x" * 200, prefix=long_prefix))


@pytest.mark.parametrize(
    "prefix, message",
    [
        ("p" * 36, "shorten the prefix to at most 35"),
        ("Apex-", "invalid"),
        ("apex_", "invalid"),
        ("-apex", "invalid"),
        ("1apex-", "invalid"),
    ],
)
def test_user_namespace_bad_prefix(prefix, message):
    with pytest.raises(ValueError, match=message):
        user_namespace("alice", prefix=prefix)


def test_user_namespace_max_length():
    with pytest.raises(ValueError, match="over 63"):
        user_namespace("alice", max_length=64)
    assert len(user_namespace("x" * 100, max_length=40)) == 40


def test_object_name():
    assert object_name("claim", "alice") == "claim-alice"
    assert object_name("claim", "Alice") == "claim-alice-" + short_hash("claim-Alice")
    assert object_name("claim", "Alice") != object_name("claim", "alice")
    long = object_name("claim", "x" * 400)
    assert len(long) == 253 and is_dns_subdomain(long) and SUBDOMAIN.match(long)
    assert len(object_name("jupyter", "x" * 400, max_length=63)) == 63
    with pytest.raises(ValueError):
        object_name()
    with pytest.raises(ValueError):
        object_name("a", max_length=254)
    with pytest.raises(TypeError):
        object_name("a", 3)


def _random_name(rng):
    alphabets = [
        "abcdefghijklmnopqrstuvwxyz",
        "abcdefghijklmnopqrstuvwxyz0123456789-",
        "ABCabc.-_@+ 0123456789",
        "éèëÉßøåçñ",
        "ユーザー名前",
        "".join(chr(c) for c in range(32, 127)),
    ]
    length = rng.choice([0, 1, 2, 3, 5, 8, 20, 62, 63, 64, 100, 300])
    alphabet = rng.choice(alphabets)
    if rng.random() < 0.2:
        alphabet += "".join(chr(rng.randrange(0x80, 0x3000)) for _ in range(10))
    return "".join(rng.choice(alphabet) for _ in range(length))


def test_property_many_random_names():
    rng = random.Random(0)
    names = {_random_name(rng) for _ in range(5000)}
    # near-misses of the same base name, which are the collisions that matter
    for base in list(names)[:300]:
        names.update({base.upper(), base + ".", "." + base, base.replace("-", "_")})
    names.update(HOSTILE)
    seen = {}
    for name in names:
        slug = slugify(name)
        assert valid_label(slug), (name, slug)
        assert slugify(name) == slug
        assert slug not in seen, f"{name!r} and {seen[slug]!r} both map to {slug!r}"
        seen[slug] = name
        ns = user_namespace(name)
        assert valid_label(ns), (name, ns)
