"""The last gate: the pod as it will be sent, checked against the restricted profile.

Why a check on the final manifest as well as at catalogue load: a pod is assembled
from many places (profile fields, ``kubespawner_override``, KubeSpawner's own traits
set by the operator or the Z2JH chart, such as its privileged ``block-cloud-metadata``
init container).  Whatever path a setting took, a pod that weakens isolation is not
created unless the catalogue says ``allow_security_overrides: true`` (or the operator
turned ``secure_pod_defaults`` off).
"""

from __future__ import annotations

from typing import Any

#: Capabilities the "restricted" Pod Security Standard lets a container add.
ALLOWED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})


def _container_problems(kind: str, container: dict[str, Any]) -> list[str]:
    where = f"{kind} {container.get('name')!r}"
    ctx = container.get("securityContext") or {}
    problems = []
    if ctx.get("privileged"):
        problems.append(f"{where} is privileged")
    if ctx.get("allowPrivilegeEscalation") is True:
        problems.append(f"{where} allows privilege escalation")
    if ctx.get("runAsUser") == 0:
        problems.append(f"{where} runs as root (runAsUser 0)")
    if ctx.get("runAsGroup") == 0:
        problems.append(f"{where} runs in the root group (runAsGroup 0)")
    if ctx.get("runAsNonRoot") is False:
        problems.append(f"{where} sets runAsNonRoot false")
    added = set((ctx.get("capabilities") or {}).get("add") or []) - ALLOWED_CAPABILITIES
    if added:
        problems.append(f"{where} adds capabilities {', '.join(sorted(added))}")
    if (ctx.get("seccompProfile") or {}).get("type") == "Unconfined":
        problems.append(f"{where} runs without seccomp")
    if ctx.get("procMount") == "Unmasked":
        problems.append(f"{where} unmasks /proc")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            problems.append(f"{where} publishes host port {port['hostPort']}")
    for mount in container.get("volumeMounts") or []:
        if mount.get("mountPropagation") not in (None, "None"):
            problems.append(f"{where} propagates mount {mount.get('mountPath')!r} to the node")
    return problems


def pod_problems(pod: dict[str, Any]) -> list[str]:
    """What in ``pod`` (a serialized V1Pod, camelCase) breaks workspace isolation."""
    spec = pod.get("spec") or {}
    problems = [f"the pod sets {key}" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
    ctx = spec.get("securityContext") or {}
    if ctx.get("runAsUser") == 0:
        problems.append("the pod runs as root (runAsUser 0)")
    if ctx.get("runAsGroup") == 0:
        problems.append("the pod runs in the root group (runAsGroup 0)")
    if ctx.get("runAsNonRoot") is False:
        problems.append("the pod sets runAsNonRoot false")
    if ctx.get("fsGroup") == 0 or 0 in (ctx.get("supplementalGroups") or []):
        problems.append("the pod gives the root group to its processes or volumes")
    if spec.get("nodeName"):
        problems.append("the pod names its node (nodeName), bypassing the scheduler")
    for volume in spec.get("volumes") or []:
        if volume.get("hostPath"):
            problems.append(
                f"volume {volume.get('name')!r} mounts the node's {volume['hostPath'].get('path')!r}"
            )
    for kind, key in (
        ("container", "containers"),
        ("init container", "initContainers"),
        ("ephemeral container", "ephemeralContainers"),
    ):
        for container in spec.get(key) or []:
            problems += _container_problems(kind, container)
    return problems
