"""Which profile Roles the hub may create: Kubernetes' RBAC escalation prevention, ahead of time.

Why: the API server lets the hub create a Role (or bind a role) only when the hub itself
holds every permission it grants, or holds ``escalate`` on roles (``bind`` for a
binding). A profile that grants more fails at every spawn with a raw 403 after half
the workspace is written. Checked against the rules the operator granted the hub
(``APExSpawner.hub_rules``), the profile is left out of the form and refused at spawn
with a message that names the profile, the binding and the missing rules.

The covering test follows Kubernetes' own semantics (one requested
group/resource/verb/name at a time; ``*`` matches anything; ``*/sub`` any resource's
subresource; a rule with resourceNames covers those names only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..profiles.templating import EXAMPLE_VALUES

RBAC_GROUP = "rbac.authorization.k8s.io"

#: The rules of helm-values/rbac.yaml's ClusterRole (kept equal by tests/spawner/test_escalation.py).
DEFAULT_HUB_RULES: tuple[dict, ...] = (
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list", "watch"]},
    {
        "apiGroups": [""],
        "resources": ["configmaps", "secrets", "services", "serviceaccounts"],
        "verbs": ["create", "patch", "deletecollection"],
    },
    {"apiGroups": [""], "resources": ["resourcequotas", "limitranges"], "verbs": ["create", "patch"]},
    {
        "apiGroups": [""],
        "resources": ["persistentvolumeclaims"],
        "verbs": ["get", "create", "patch", "deletecollection"],
    },
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["create", "patch", "deletecollection"],
    },
    {
        "apiGroups": [RBAC_GROUP],
        "resources": ["roles"],
        "verbs": ["create", "patch", "deletecollection", "bind"],
    },
    {
        "apiGroups": [RBAC_GROUP],
        "resources": ["rolebindings"],
        "verbs": ["create", "patch", "deletecollection"],
    },
)


@dataclass(frozen=True)
class Need:
    """One permission a Role grants: a group, a resource, a verb and (maybe) one name."""

    group: str
    resource: str
    verb: str
    name: str | None = None

    def as_rule(self) -> str:
        text = f'apiGroups: ["{self.group}"], resources: [{self.resource}], verbs: [{self.verb}]'
        return text + (f", resourceNames: [{self.name}]" if self.name else "")


def _has(values: Iterable[str] | None, value: str) -> bool:
    values = list(values or [])
    return "*" in values or value in values


def _resource_covered(resources: Iterable[str] | None, resource: str) -> bool:
    resources = list(resources or [])
    if _has(resources, resource):
        return True
    _, slash, sub = resource.partition("/")
    return bool(slash) and f"*/{sub}" in resources


def _covers(rule: Mapping[str, Any], need: Need) -> bool:
    names = list(rule.get("resourceNames") or [])
    return (
        _has(rule.get("verbs"), need.verb)
        and _has(rule.get("apiGroups"), need.group)
        and _resource_covered(rule.get("resources"), need.resource)
        and (not names or (need.name is not None and need.name in names))
    )


def needs(rules: Iterable[Mapping[str, Any]]) -> list[Need]:
    """Every single permission that ``rules`` (Kubernetes PolicyRules) grant."""
    out: list[Need] = []
    for rule in rules:
        names = list(rule.get("resourceNames") or []) or [None]
        for group in rule.get("apiGroups") or [""]:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    out += [Need(group, resource, verb, n) for n in names]
    return out


def missing(held: Iterable[Mapping[str, Any]], granted: Iterable[Mapping[str, Any]]) -> list[Need]:
    """The permissions in ``granted`` that no rule in ``held`` covers (in order, once each)."""
    held = list(held)
    seen: list[Need] = []
    for need in needs(granted):
        if need not in seen and not any(_covers(rule, need) for rule in held):
            seen.append(need)
    return seen


def _may(held, verb: str, resource: str, name: str | None = None) -> bool:
    return any(_covers(rule, Need(RBAC_GROUP, resource, verb, name)) for rule in held)


def _rbac_documents(profile) -> list[dict]:
    """The profile's manifest objects of the RBAC API group (rendered with example values)."""
    return [
        doc
        for item in profile.manifests
        for doc in item.documents(EXAMPLE_VALUES)
        if str(doc.get("apiVersion", "")).startswith(RBAC_GROUP + "/")
    ]


def _roles(profile, docs: list[dict]) -> list[tuple[str, str, list[dict], bool]]:
    """Every Role the profile makes: (where, name, rules, bound by the profile itself)."""
    roles = [
        (f"role_bindings[{b.name}]", b.role_name, [r.to_k8s() for r in b.role.rules], True)
        for b in profile.role_bindings
    ]
    roles += [
        (
            f"manifests Role {doc['metadata']['name']!r}",
            doc["metadata"]["name"],
            list(doc.get("rules") or []),
            False,
        )
        for doc in docs
        if doc.get("kind") == "Role"
    ]
    return roles


def profile_problems(profile, held: Iterable[Mapping[str, Any]]) -> list[str]:
    """Why the hub (holding ``held``) could not create this profile's Roles and RoleBindings.

    Empty when it can. Looks at ``role_bindings`` and at Role/RoleBinding ``manifests``.
    """
    held = list(held)
    problems: list[str] = []
    escalate = _may(held, "escalate", "roles")
    docs = _rbac_documents(profile)
    roles = _roles(profile, docs)
    for where, name, rules, bound in roles:
        gap = missing(held, rules)
        if gap and not escalate:
            problems.append(
                f"{where}: Role {name!r} grants what the hub does not hold:"
                f" {'; '.join('{' + n.as_rule() + '}' for n in gap)}"
            )
        elif gap and bound and not _may(held, "bind", "roles", name):
            problems.append(
                f'{where}: binding Role {name!r} needs {{apiGroups: ["{RBAC_GROUP}"],'
                " resources: [roles], verbs: [bind]}} (the hub may create it, with"
                " escalate, but not bind it)"
            )
    made = {name for _, name, _, _ in roles}
    for doc in docs:
        if doc.get("kind") != "RoleBinding":
            continue
        ref = doc.get("roleRef") or {}
        kind, name = ref.get("kind"), ref.get("name", "")
        where = f"manifests RoleBinding {doc['metadata']['name']!r}"
        if kind == "ClusterRole" and not _may(held, "bind", "clusterroles", name):
            problems.append(
                f"{where}: binds ClusterRole {name!r}, which needs {{apiGroups:"
                f' ["{RBAC_GROUP}"], resources: [clusterroles], verbs: [bind],'
                f" resourceNames: [{name}]}} (the ClusterRole's own rules are not"
                " known before the spawn)"
            )
        elif kind == "Role" and name not in made and not _may(held, "bind", "roles", name):
            problems.append(
                f"{where}: binds Role {name!r}, which is not part of the profile; that"
                f' needs {{apiGroups: ["{RBAC_GROUP}"], resources: [roles], verbs: [bind]}}'
            )
    return problems


def rules_to_grant(
    profiles: Iterable[Any], held: Iterable[Mapping[str, Any]] = DEFAULT_HUB_RULES
) -> dict[str, list[dict]]:
    """Per profile slug, the PolicyRules the hub lacks to create that profile's Roles.

    Why: a migrated catalogue (EOEPCA profiles grant ``pods/exec`` or ``batch/jobs``) is
    refused at every spawn until the operator grants the hub what its Roles grant; this is
    the list to add to helm-values/rbac.yaml and to ``APExSpawner.hub_rules``. Profiles the
    hub can already start are left out.
    """
    held = list(held)
    out: dict[str, list[dict]] = {}
    for profile in profiles:
        granted = [rule for _, _, rules, _ in _roles(profile, _rbac_documents(profile)) for rule in rules]
        grouped: dict[tuple, list[str]] = {}
        for need in missing(held, granted):
            verbs = grouped.setdefault((need.group, need.resource, need.name), [])
            if need.verb not in verbs:
                verbs.append(need.verb)
        if grouped:
            out[profile.slug] = [
                {"apiGroups": [g], "resources": [r], "verbs": v, **({"resourceNames": [n]} if n else {})}
                for (g, r, n), v in grouped.items()
            ]
    return out
