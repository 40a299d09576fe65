"""Kubernetes resource quantities and CPU/memory values, parsed and checked.

Why: a typo such as ``mem_limit: 4GB`` must fail when the catalogue is loaded,
not when the first user spawns.  Memory follows KubeSpawner and Z2JH, where
``K``/``M``/``G``/``T`` are powers of 1024 (``"4G"`` is 4 GiB) — the meaning
operators of existing hubs rely on; ``Ki``/``Mi``/``Gi``/``Ti``/``Pi``/``Ei``
are accepted too.  Other quantities (volume sizes, GPUs) go to Kubernetes
unchanged, so they are checked against Kubernetes' own quantity grammar.
"""

from __future__ import annotations

import re

# Kubernetes' quantity grammar: a signed decimal number with an optional binary
# suffix (Ki..Ei), decimal suffix (n u m k M G T P E) or exponent.
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
_MEMORY = re.compile(r"^(\d+(\.\d*)?|\.\d+)(K|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_MEMORY_FACTORS: dict[str | None, int] = {
    None: 1,
    **{s: 1024 ** (i + 1) for i, s in enumerate("KMGTPE")},
    **{s + "i": 1024 ** (i + 1) for i, s in enumerate("KMGTPE")},
}
_MILLICPU = re.compile(r"^(\d+)m$")


def is_quantity(value: str) -> bool:
    """True when Kubernetes accepts ``value`` as a resource quantity."""
    return bool(_QUANTITY.match(value))


def check_quantity(value: object) -> str:
    """Normalise ints to strings and reject anything Kubernetes would reject."""
    if isinstance(value, bool):
        raise ValueError(f"expected a quantity such as '1', '10Gi' or '500m', got {value!r}")
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str) or not is_quantity(value.strip()):
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity; write a number with an optional"
            " suffix, e.g. '1', '10Gi', '500m'"
        )
    return value.strip()


def memory_bytes(value: str | int) -> int:
    """Bytes in a memory value (``"4G"`` → 4·1024³, as in KubeSpawner)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _MEMORY.match(str(value).strip())
    if not match:
        raise ValueError(
            f"{value!r} is not a memory size; write a number of bytes or a number with"
            " a suffix K, M, G, T (powers of 1024, as in KubeSpawner) or Ki, Mi, Gi, Ti,"
            " e.g. '4G' or '512Mi'"
        )
    return int(float(match.group(1)) * _MEMORY_FACTORS[match.group(3)])


def check_memory(value: object) -> str:
    """Validate a memory value and return it as a string."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a memory size such as '4G' or '512Mi', got {value!r}")
    memory_bytes(value)
    return str(value).strip()


def check_cpu(value: object) -> object:
    """Accept Kubernetes millicores (``"500m"`` → 0.5); leave numbers to pydantic."""
    if isinstance(value, str):
        match = _MILLICPU.match(value.strip())
        if match:
            return int(match.group(1)) / 1000
    return value
