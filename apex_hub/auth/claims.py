"""Groups, usernames and the primary group from ID-token and userinfo claims.

Why a module of its own: identity providers put groups in different places
(``groups``, Keycloak's ``realm_access.roles`` / ``resource_access.<client>.roles``,
EGI Check-in's ``eduperson_entitlement`` URNs) and the *order* matters: the first
allowed group is the user's primary group, which accounting bills.  Everything here
is pure, so it is tested without a provider.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: ``urn:mace:egi.eu:group:<vo>[:<subgroup>...][:role=<role>]#<authority>`` (AARC-G002).
ENTITLEMENT = re.compile(
    r"^urn:(?P<namespace>[^:]+(?::[^:]+)*?):group:(?P<group>[^:#]+(?::[^:#=]+)*?)"
    r"(?::role=(?P<role>[^#:]+))?(?:#(?P<authority>.+))?$"
)


@dataclass(frozen=True)
class Entitlement:
    """One parsed entitlement URN: the VO, the group path inside it, the role."""

    namespace: str
    vo: str
    group: str  # the full path: "vo.example.org" or "vo.example.org:sub"
    role: str
    authority: str

    def name(self, template: str) -> str:
        return template.format(
            vo=self.vo, group=self.group, role=self.role, authority=self.authority, namespace=self.namespace
        )


def parse_entitlement(urn: str) -> Entitlement | None:
    """Parse an AARC-G002 group entitlement; ``None`` for anything else."""
    if not isinstance(urn, str):
        return None
    m = ENTITLEMENT.match(urn.strip())
    if not m:
        return None
    group = m["group"]
    return Entitlement(
        namespace=m["namespace"],
        vo=group.split(":", 1)[0],
        group=group,
        role=m["role"] or "member",
        authority=m["authority"] or "",
    )


def claim_value(claims: dict, path: str) -> Any:
    """The value at a dotted ``path`` (``realm_access.roles``); ``None`` when absent.

    A key that itself contains dots (``https://example.org/groups``) is tried whole first.
    """
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return []


def unique(items: Iterable[str]) -> list[str]:
    """Drop repeats, keep the first occurrence: the IdP's order is meaningful."""
    seen: set[str] = set()
    return [i for i in items if not (i in seen or seen.add(i))]


def collect_groups(
    claims: dict,
    group_claims: Iterable[str] = ("groups",),
    entitlement_claims: Iterable[str] = (),
    entitlement_roles: Iterable[str] = ("member",),
    entitlement_template: str = "{group}",
    strip_prefix: str = "/",
) -> list[str]:
    """The user's groups in the IdP's order, claim by claim.

    ``strip_prefix`` drops Keycloak's leading ``/`` of full group paths. Entitlements
    count when their role is one of ``entitlement_roles`` (``*``: any role).
    """
    groups: list[str] = []
    for path in group_claims:
        for value in _as_list(claim_value(claims, path)):
            if isinstance(value, str) and value.strip():
                value = value.strip()
                if strip_prefix and value.startswith(strip_prefix):
                    value = value[len(strip_prefix) :]
                groups.append(value)
    roles = set(entitlement_roles)
    for path in entitlement_claims:
        for urn in _as_list(claim_value(claims, path)):
            ent = parse_entitlement(urn)
            if ent and ("*" in roles or ent.role in roles):
                groups.append(ent.name(entitlement_template))
    return unique(g for g in groups if g)


def primary_group(groups: list[str], allowed: Iterable[str] = (), ignored: Iterable[str] = ()) -> str | None:
    """The first of ``groups`` that is allowed (any, when nothing is restricted)."""
    allowed, ignored = set(allowed), set(ignored)
    for group in groups:
        if group in ignored:
            continue
        if not allowed or group in allowed:
            return group
    return None
