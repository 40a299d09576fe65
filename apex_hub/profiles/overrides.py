"""Which KubeSpawner traits a profile may override, and the security gate.

Why: ``kubespawner_override`` can set any trait, including ones that make a pod
privileged or mount the host.  Profiles may only set traits on this allow-list,
and settings that weaken pod security (a securityContext, host namespaces,
running as root) need ``allow_security_overrides: true`` at the top of the
catalogue — an explicit operator decision, visible in review.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_dict(v: Any) -> bool:
    return isinstance(v, Mapping)


def _is_str_dict(v: Any) -> bool:
    return isinstance(v, Mapping) and all(isinstance(x, str) for x in v.values())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_positive_int(v: Any) -> bool:
    return _is_int(v) and v > 0


def _is_optional_int(v: Any) -> bool:
    return v is None or (_is_int(v) and v >= 0)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_dict_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, Mapping) for x in v)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "image_pull_policy": (
        lambda v: v in ("Always", "IfNotPresent", "Never"),
        "'Always', 'IfNotPresent' or 'Never'",
    ),
    "lifecycle_hooks": (_is_dict, "a mapping such as {postStart: {exec: {command: [...]}}}"),
    "extra_labels": (_is_str_dict, "a mapping of strings"),
    "extra_annotations": (_is_str_dict, "a mapping of strings"),
    "extra_container_config": (_is_dict, "a mapping"),
    "extra_pod_config": (_is_dict, "a mapping"),
    "start_timeout": (_is_positive_int, "a positive number of seconds"),
    "http_timeout": (_is_positive_int, "a positive number of seconds"),
    "working_dir": (_is_str, "a path"),
    "cmd": (lambda v: _is_str(v) or _is_str_list(v), "a string or a list of strings"),
    "args": (_is_str_list, "a list of strings"),
    "uid": (_is_optional_int, "a user id (integer)"),
    "gid": (_is_optional_int, "a group id (integer)"),
    "fs_gid": (_is_optional_int, "a group id (integer)"),
    "supplemental_gids": (
        lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
        "a list of group ids",
    ),
    "node_affinity_required": (_is_dict_list, "a list of node selector terms"),
    "node_affinity_preferred": (_is_dict_list, "a list of preferred scheduling terms"),
    "pod_affinity_required": (_is_dict_list, "a list of pod affinity terms"),
    "pod_affinity_preferred": (_is_dict_list, "a list of weighted pod affinity terms"),
    "pod_anti_affinity_required": (_is_dict_list, "a list of pod affinity terms"),
    "pod_anti_affinity_preferred": (_is_dict_list, "a list of weighted pod affinity terms"),
    "priority_class_name": (_is_str, "a PriorityClass name"),
    "scheduler_name": (_is_str, "a scheduler name"),
}

#: KubeSpawner traits a profile may set through ``kubespawner_override``.
ALLOWED_OVERRIDES: frozenset[str] = frozenset(_CHECKS)

#: Traits that have a first-class profile field; the override must use the field.
FIELD_FOR_TRAIT = {
    "image": "image",
    "cpu_limit": "cpu_limit",
    "cpu_guarantee": "cpu_guarantee",
    "mem_limit": "mem_limit",
    "mem_guarantee": "mem_guarantee",
    "extra_resource_limits": "extra_resource_limits",
    "extra_resource_guarantees": "extra_resource_guarantees",
    "node_selector": "node_selector",
    "tolerations": "tolerations",
    "default_url": "default_url",
    "environment": "env",
    "init_containers": "init_containers",
    "volumes": "volumes",
    "volume_mounts": "volumes",
    "image_pull_secrets": "image_pull_secrets",
    "container_security_context": "security_context",
}

_POD_ALWAYS_FORBIDDEN = {
    "containers": "containers are built by the spawner",
    "initContainers": "use the profile field 'init_containers'",
    "init_containers": "use the profile field 'init_containers'",
    "ephemeralContainers": "containers are built by the spawner",
    "ephemeral_containers": "containers are built by the spawner",
    "volumes": "use the profile fields 'volumes', 'config_maps' and 'secret_mounts'",
}
#: Pod fields that weaken isolation (host namespaces, identity, scheduling around taints,
#: another container runtime, processes shared with other containers).
_POD_SECURITY_KEYS = {
    "securityContext",
    "security_context",
    "hostNetwork",
    "host_network",
    "hostPID",
    "host_pid",
    "hostIPC",
    "host_ipc",
    "hostUsers",
    "host_users",
    "serviceAccountName",
    "service_account_name",
    "serviceAccount",
    "service_account",
    "automountServiceAccountToken",
    "automount_service_account_token",
    "nodeName",
    "node_name",
    "runtimeClassName",
    "runtime_class_name",
    "shareProcessNamespace",
    "share_process_namespace",
    "hostAliases",
    "host_aliases",
}
_CONTAINER_SECURITY_KEYS = {"securityContext", "security_context"}

#: Keys of a container securityContext (Kubernetes spelling).
SECURITY_CONTEXT_KEYS = frozenset(
    {
        "allowPrivilegeEscalation",
        "appArmorProfile",
        "capabilities",
        "privileged",
        "procMount",
        "readOnlyRootFilesystem",
        "runAsGroup",
        "runAsNonRoot",
        "runAsUser",
        "seLinuxOptions",
        "seccompProfile",
        "windowsOptions",
    }
)

_SECURITY_HINT = "set 'allow_security_overrides: true' at the top of the catalogue to allow it"


def override_problems(overrides: Mapping[str, Any], allow_security: bool) -> list[str]:
    """Problems with a ``kubespawner_override`` mapping, one message per problem."""
    problems = []
    for name, value in overrides.items():
        if name in FIELD_FOR_TRAIT:
            problems.append(f"{name}: use the profile field {FIELD_FOR_TRAIT[name]!r} instead")
            continue
        if name not in _CHECKS:
            problems.append(f"{name}: not an allowed override; allowed: {', '.join(sorted(_CHECKS))}")
            continue
        check, expected = _CHECKS[name]
        if not check(value):
            problems.append(f"{name}: expected {expected}, got {value!r}")
            continue
        problems.extend(_security_problems(name, value, allow_security))
    return problems


def _security_problems(name: str, value: Any, allow_security: bool) -> list[str]:
    problems = []
    if name == "extra_pod_config":
        for key in value:
            if key in _POD_ALWAYS_FORBIDDEN:
                problems.append(f"{name}.{key}: not allowed here; {_POD_ALWAYS_FORBIDDEN[key]}")
            elif key in _POD_SECURITY_KEYS and not allow_security:
                problems.append(f"{name}.{key}: weakens pod security; {_SECURITY_HINT}")
    elif name == "extra_container_config" and not allow_security:
        for key in value:
            if key in _CONTAINER_SECURITY_KEYS:
                problems.append(f"{name}.{key}: use the profile field 'security_context'; {_SECURITY_HINT}")
        problems.extend(container_problems(value, name, allow_security, own_context=False))
    elif not allow_security and name in _ROOT_IDS and _is_root(value):
        problems.append(f"{name}: {_ROOT_IDS[name]}; {_SECURITY_HINT}")
    return problems


#: Identity traits whose 0 means root (user or group).
_ROOT_IDS = {
    "uid": "0 runs the server as root",
    "gid": "0 runs the server in the root group",
    "fs_gid": "0 gives the volumes to the root group",
    "supplemental_gids": "0 adds the root group",
}


def _is_root(value: Any) -> bool:
    return value == 0 or (isinstance(value, list) and 0 in value)


def container_problems(
    container: Mapping[str, Any], where: str, allow_security: bool, own_context: bool = True
) -> list[str]:
    """The one gate for a container the spawner writes (init containers, extra container config).

    Without ``allow_security_overrides`` a container may not bring its own securityContext
    (it gets the restricted defaults), publish a port on the node (``hostPort``) or propagate
    mounts to the host.  ``own_context=False``: the securityContext is reported by the caller.
    """
    if allow_security:
        return []
    problems = []
    if own_context:
        problems += [
            f"{where}.{key}: a container may not bring its own securityContext (it gets"
            f" the restricted defaults); {_SECURITY_HINT}"
            for key in container
            if key in _CONTAINER_SECURITY_KEYS
        ]
    for number, port in enumerate(container.get("ports") or []):
        if isinstance(port, Mapping):
            for key in ("hostPort", "host_port", "hostIP", "host_ip"):
                if port.get(key) not in (None, 0, ""):
                    problems.append(
                        f"{where}.ports[{number}].{key}: publishes a port on the node; {_SECURITY_HINT}"
                    )
    for key in ("volumeMounts", "volume_mounts"):
        for number, mount in enumerate(container.get(key) or []):
            if isinstance(mount, Mapping) and (
                mount.get("mountPropagation") or mount.get("mount_propagation")
            ) not in (None, "None"):
                problems.append(
                    f"{where}.{key}[{number}].mountPropagation: shares mounts with the node; {_SECURITY_HINT}"
                )
    return problems


def security_context_problems(context: Mapping[str, Any], allow_security: bool) -> list[str]:
    """Problems with a profile's ``security_context``."""
    if not allow_security:
        return [f"overriding pod security is off; {_SECURITY_HINT}"]
    return [
        f"{key}: unknown securityContext field; known: {', '.join(sorted(SECURITY_CONTEXT_KEYS))}"
        for key in context
        if key not in SECURITY_CONTEXT_KEYS
    ]
