"""What a user's workspace is made of: manifests, plus what the pod needs to use them.

Why a pure module: turning a (rendered) profile into Kubernetes objects has no I/O,
so it is tested exhaustively without a cluster and every object can be checked
against the real Kubernetes schemas; ``provision`` (in ``spawner.py``) only sends
what ``plan_workspace`` decided.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..naming import is_dns_subdomain, object_name
from ..profiles import CONFIGMAP_MAX_BYTES, Profile
from ..profiles.eoepca import DEFAULT_MANIFEST_KINDS  # what manifests may create by default
from . import labels as L

CONDA_CONFIGMAP = "apex-conda-environments"
CONDA_VOLUME = "apex-conda"
CONDARC_CONFIGMAP = "apex-condarc"
CONDARC_VOLUME = "apex-condarc"
CONDA_INIT = "conda-environments"
NETWORK_POLICY = "apex-default-deny"
QUOTA = "apex-quota"
LIMIT_RANGE = "apex-limits"

#: Kubernetes' "restricted" Pod Security Standard for a container.
RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
#: ... and for the pod.
RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


class WorkspaceError(ValueError):
    """The profile cannot be turned into a workspace; the message says why and what to fix."""


@dataclass(frozen=True)
class Settings:
    """Operator settings (APExSpawner traits) that shape every workspace."""

    namespace_labels: dict[str, str] = field(default_factory=dict)
    namespace_annotations: dict[str, str] = field(default_factory=dict)
    service_account: str | None = "workspace"
    network_policy: bool = True
    hub_namespace: str = "default"
    hub_pod_labels: dict[str, str] = field(
        default_factory=lambda: {"hub.jupyter.org/network-access-singleuser": "true"}
    )
    network_policy_egress: bool = True
    egress_allowed_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    egress_blocked_cidrs: tuple[str, ...] = ("169.254.169.254/32",)
    resource_quota: dict | None = None
    limit_range: dict | None = None
    manifest_kinds: tuple[str, ...] = DEFAULT_MANIFEST_KINDS
    workspace_volume: str = "workspace"
    conda_builder: str = "auto"
    conda_specs_path: str = "/etc/apex/conda"
    condarc_path: str = "/etc/conda/.condarc"
    container_security_context: dict = field(default_factory=lambda: dict(RESTRICTED_CONTAINER))
    #: The server container's requests/limits (from the profile's guarantees and limits),
    #: given to init containers that bring none (``init_container_resources``).
    init_container_resources: dict | None = None


@dataclass(frozen=True)
class Owner:
    """Whose workspace: the raw name (annotation), its slug (labels), the namespace, the server."""

    username: str
    user_slug: str
    namespace: str
    server_name: str = ""


@dataclass
class Plan:
    """The result: objects to write, Secrets to copy, and the pod's additions."""

    namespace: dict
    objects: list[dict] = field(default_factory=list)
    claims: list[dict] = field(default_factory=list)
    copy_secrets: list[str] = field(default_factory=list)
    volumes: list[dict] = field(default_factory=list)
    volume_mounts: list[dict] = field(default_factory=list)
    env: list[dict] = field(default_factory=list)
    env_from: list[dict] = field(default_factory=list)
    init_containers: list[dict] = field(default_factory=list)
    image_pull_secrets: list[str] = field(default_factory=list)

    @property
    def scratch_claims(self) -> list[str]:
        """Names of the claims deleted at every stop of the server (``volumes[].scratch``)."""
        return [
            c["metadata"]["name"] for c in self.claims if c["metadata"]["labels"].get(L.SCRATCH) == "true"
        ]

    @property
    def server_kinds(self) -> list[str]:
        """``apiVersion/Kind`` of the per-server objects (to delete them on stop)."""
        kinds = {
            f"{o['apiVersion']}/{o['kind']}"
            for o in self.objects
            if o["metadata"]["labels"].get(L.PERSIST) == "false"
        }
        return sorted(kinds)


def content_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class _Builder:
    def __init__(self, owner: Owner, profile: Profile, settings: Settings, image: str | None):
        self.owner, self.profile, self.settings, self.image = owner, profile, settings, image
        self.plan = Plan(namespace=self._namespace())
        self.renamed: dict[str, str] = {}

    def name(self, name: str, persist: bool) -> str:
        """The object name: a named server's own objects get its name appended.

        Servers of one user share the namespace; without this, a second server would
        take over (and its stop would delete) the first one's ConfigMaps, Roles and
        manifest objects. References inside the plan (volumes, env, secret mounts,
        roleRef and subjects) follow the new name.
        """
        if persist or not self.owner.server_name:
            return name
        new = object_name(name, L.server_label(self.owner.server_name))
        self.renamed[name] = new
        return new

    def ref(self, name: str) -> str:
        """A reference to an object of this workspace, renamed if the object was."""
        return self.renamed.get(name, name)

    def manifest_names(self) -> None:
        """Register the per-server names of manifest objects before references are written."""
        for item in self.profile.manifests:
            for doc in item.documents():
                self.name(doc["metadata"]["name"], item.persist)

    # -- metadata -----------------------------------------------------------------------

    def meta(
        self, name: str, *, per_user: bool = False, persist: bool = False, annotations: dict | None = None
    ) -> dict:
        server = None if per_user else self.owner.server_name
        meta = {
            "name": name,
            "namespace": self.owner.namespace,
            "labels": L.ownership(self.owner.user_slug, server, self.profile.slug, persist or per_user),
            "annotations": {L.USERNAME_ANNOTATION: self.owner.username, **(annotations or {})},
        }
        return meta

    def add(self, api_version: str, kind: str, metadata: dict, **body) -> dict:
        obj = {"apiVersion": api_version, "kind": kind, "metadata": metadata, **body}
        self.plan.objects.append(obj)
        return obj

    def _namespace(self) -> dict:
        s = self.settings
        labels = {**s.namespace_labels, **L.ownership(self.owner.user_slug, None, None, True)}
        labels.pop(L.PERSIST)
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": self.owner.namespace,
                "labels": labels,
                "annotations": {**s.namespace_annotations, L.USERNAME_ANNOTATION: self.owner.username},
            },
        }

    # -- guard rails ----------------------------------------------------------------------

    def guard_rails(self) -> None:
        s, p = self.settings, self.profile
        if s.service_account:
            self.add(
                "v1",
                "ServiceAccount",
                self.meta(s.service_account, per_user=True),
                automountServiceAccountToken=False,
            )
        if s.network_policy:
            self.add(
                "networking.k8s.io/v1",
                "NetworkPolicy",
                self.meta(NETWORK_POLICY, per_user=True),
                spec=network_policy_spec(s),
            )
        quota = p.resource_quota if p.resource_quota is not None else s.resource_quota
        if quota:
            self.add("v1", "ResourceQuota", self.meta(QUOTA, per_user=True), spec=_stringify(quota))
        limits = p.limit_range if p.limit_range is not None else s.limit_range
        if limits:
            self.add("v1", "LimitRange", self.meta(LIMIT_RANGE, per_user=True), spec=_stringify(limits))
        for binding in p.role_bindings:
            role_name = self.name(binding.role_name, binding.persist)
            meta = self.meta(role_name, persist=binding.persist)
            self.add(
                "rbac.authorization.k8s.io/v1", "Role", meta, rules=[r.to_k8s() for r in binding.role.rules]
            )
            subjects = []
            for subject in binding.subjects:
                item = {"kind": subject.kind, "name": subject.name}
                if subject.kind == "ServiceAccount":
                    item["namespace"] = subject.namespace or self.owner.namespace
                else:
                    item["apiGroup"] = "rbac.authorization.k8s.io"
                subjects.append(item)
            self.add(
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                self.meta(self.name(binding.name, binding.persist), persist=binding.persist),
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
                subjects=subjects,
            )
        for name in p.image_pull_secrets:
            self.plan.copy_secrets.append(name)
            self.plan.image_pull_secrets.append(name)
        made = self.made_secrets()
        for name in p.workspace_image_pull_secrets:  # used where the manifests make them
            if made.get(name, name) not in self.plan.image_pull_secrets:
                self.plan.image_pull_secrets.append(made.get(name, name))

    def made_secrets(self) -> dict[str, str]:
        """Secrets the profile's manifests make: catalogue name -> name in the namespace.

        A Secret manifest is renamed for a named server (``name``) and so is an
        ExternalSecret without a target (its Secret takes the ExternalSecret's name); an
        ExternalSecret's ``spec.target.name`` is used as it is written.
        """
        made: dict[str, str] = {}
        for item in self.profile.manifests:
            for doc in item.documents():
                name = doc["metadata"]["name"]
                target = ((doc.get("spec") or {}).get("target") or {}).get("name")
                if doc["kind"] == "Secret" or (doc["kind"] == "ExternalSecret" and not target):
                    made[name] = self.ref(name)
                elif doc["kind"] == "ExternalSecret" and target:
                    made[target] = target
        return made

    # -- files, storage, env --------------------------------------------------------------

    def config_maps(self) -> None:
        for item in self.profile.config_maps:
            name = self.ref(item.name)
            if item.content is not None:
                name = self.name(item.name, item.persist)
                data = {item.key: item.content}
                self.add(
                    "v1",
                    "ConfigMap",
                    self.meta(
                        name,
                        persist=item.persist,
                        annotations={L.CONTENT_HASH_ANNOTATION: content_hash(data)},
                    ),
                    data=data,
                )
            if item.mount_path:
                self.plan.volumes.append(
                    {"name": item.name, "configMap": {"name": name, "defaultMode": item.default_mode}}
                )
                self.plan.volume_mounts.append(
                    {
                        "name": item.name,
                        "mountPath": item.mount_path,
                        "subPath": item.key,
                        "readOnly": item.readonly,
                    }
                )

    def volumes(self) -> None:
        for item in self.profile.volumes:
            if item.scratch:  # one server's: a named server's gets its own, deleted at its stops
                claim = self.name(item.claim_name or item.name, False)
            elif item.claim_name:
                claim = self.ref(item.claim_name)
            else:
                claim = self.name(item.name, item.persist)
            if item.size is not None:
                spec = {
                    "accessModes": list(item.access_modes),
                    "resources": {"requests": {"storage": item.size}},
                }
                if item.storage_class:
                    spec["storageClassName"] = item.storage_class
                meta = self.meta(
                    claim, per_user=item.persist, persist=item.persist, annotations=dict(item.annotations)
                )
                if item.scratch:
                    meta["labels"][L.SCRATCH] = "true"
                self.plan.claims.append(
                    {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}
                )
            self.plan.volumes.append(
                {"name": item.name, "persistentVolumeClaim": {"claimName": claim, "readOnly": item.readonly}}
            )
            mount = {"name": item.name, "mountPath": item.mount_path, "readOnly": item.readonly}
            if item.sub_path:
                mount["subPath"] = item.sub_path
            self.plan.volume_mounts.append(mount)
        for secret in self.profile.secret_mounts:
            volume = f"secret-{secret.name}"[:63].rstrip("-.")
            self.plan.volumes.append({"name": volume, "secret": {"secretName": self.ref(secret.name)}})
            mount = {"name": volume, "mountPath": secret.mount_path, "readOnly": True}
            if secret.sub_path:
                mount["subPath"] = secret.sub_path
            self.plan.volume_mounts.append(mount)

    def env(self) -> None:
        for name, value in self.profile.env.items():
            if isinstance(value, str):
                self.plan.env.append({"name": name, "value": value})
            elif value.from_config_map is not None:
                ref = value.from_config_map
                self.plan.env.append(
                    {
                        "name": name,
                        "valueFrom": {"configMapKeyRef": {"name": self.ref(ref.name), "key": ref.key}},
                    }
                )
            else:
                secret = value.from_secret
                assert secret is not None  # the model allows exactly one of the two
                self.plan.env.append(
                    {
                        "name": name,
                        "valueFrom": {"secretKeyRef": {"name": self.ref(secret.name), "key": secret.key}},
                    }
                )
        self.plan.env_from += [
            {"configMapRef": {"name": self.ref(n)}} for n in self.profile.env_from_config_maps
        ]
        self.plan.env_from += [{"secretRef": {"name": self.ref(n)}} for n in self.profile.env_from_secrets]

    def init_containers(self) -> None:
        for container in self.profile.init_containers:
            container = dict(container)
            # the restricted defaults are always underneath: a container that brings a partial
            # securityContext (allowed only with allow_security_overrides) keeps the rest
            context = {
                **self.settings.container_security_context,
                **(self.profile.security_context or {}),
                **(container.get("securityContext") or {}),
            }
            if context:
                container["securityContext"] = context
            if not container.get("resources") and init_resources(self.settings):
                container["resources"] = init_resources(self.settings)
            self.plan.init_containers.append(container)

    def manifests(self) -> None:
        allowed = set(self.settings.manifest_kinds)
        for item in self.profile.manifests:
            for doc in item.documents():
                kind, version = doc["kind"], doc["apiVersion"]
                if kind not in allowed and f"{version}/{kind}" not in allowed:
                    raise WorkspaceError(
                        f"profile {self.profile.slug!r}: manifests[{item.name}]: kind {kind!r} is not"
                        f" allowed; the operator allows: {', '.join(sorted(allowed)) or 'none'}"
                        " (APExSpawner.manifest_kinds)"
                    )
                meta = dict(doc["metadata"])
                ns = meta.get("namespace")
                if ns not in (None, self.owner.namespace):
                    raise WorkspaceError(
                        f"profile {self.profile.slug!r}: manifests[{item.name}]: {kind}"
                        f" {meta['name']!r} names namespace {ns!r}; manifests are applied in the"
                        " user's own namespace only: remove metadata.namespace"
                    )
                mine = self.meta(self.name(meta["name"], item.persist), persist=item.persist)
                mine["labels"] = {**(meta.get("labels") or {}), **mine["labels"]}
                mine["annotations"] = {**(meta.get("annotations") or {}), **mine["annotations"]}
                body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
                if kind == "RoleBinding" and version.startswith("rbac.authorization.k8s.io/"):
                    body = self._binding_refs(body)
                self.add(version, kind, {**meta, **mine}, **body)

    def _binding_refs(self, body: dict) -> dict:
        """A manifest RoleBinding's roleRef and ServiceAccount subjects follow renamed objects."""
        body = dict(body)
        if isinstance(body.get("roleRef"), dict) and body["roleRef"].get("kind") == "Role":
            body["roleRef"] = {**body["roleRef"], "name": self.ref(body["roleRef"].get("name", ""))}
        body["subjects"] = [
            {**s, "name": self.ref(s.get("name", ""))}
            if isinstance(s, dict)
            and s.get("kind") == "ServiceAccount"
            and s.get("namespace") in (None, self.owner.namespace)
            else s
            for s in body.get("subjects") or []
        ]
        return body

    # -- Conda ----------------------------------------------------------------------------

    def conda(self) -> None:
        p, s = self.profile, self.settings
        root = self._workspace_root() if p.conda_environments else None
        if p.condarc is None and root is not None:  # generated: `conda activate <name>` finds them
            p = self.profile = p.model_copy(
                update={
                    "condarc": (
                        f"envs_dirs:\n  - {root}/.apex/conda/envs\npkgs_dirs:\n  - {root}/.apex/conda/pkgs\n"
                    )
                }
            )
        if p.condarc is not None:
            condarc = self.name(CONDARC_CONFIGMAP, False)
            self.add("v1", "ConfigMap", self.meta(condarc), data={"condarc": p.condarc})
            self.plan.volumes.append({"name": CONDARC_VOLUME, "configMap": {"name": condarc}})
            self.plan.volume_mounts.append(
                {"name": CONDARC_VOLUME, "mountPath": s.condarc_path, "subPath": "condarc", "readOnly": True}
            )
        if not p.conda_environments:
            return
        workspace = next(m for m in self.plan.volume_mounts if m["name"] == s.workspace_volume)
        data = {f"{env.name}.yml": env.environment_yml for env in p.conda_environments}
        script = (Path(__file__).parent / "conda_build.py").read_text()
        data["build.py"] = script
        conda = self.name(CONDA_CONFIGMAP, False)
        self.add(
            "v1",
            "ConfigMap",
            self.meta(conda, annotations={L.CONTENT_HASH_ANNOTATION: content_hash(data)}),
            data=data,
        )
        self.plan.volumes.append({"name": CONDA_VOLUME, "configMap": {"name": conda}})
        envs, kernels = f"{root}/.apex/conda/envs", f"{root}/.apex/jupyter/kernels"
        env = [
            {"name": "APEX_CONDA_ENVS", "value": envs},
            {"name": "APEX_KERNELS_DIR", "value": kernels},
            {"name": "APEX_CONDA_BUILDER", "value": s.conda_builder},
            {
                "name": "APEX_CONDA_TITLES",
                "value": json.dumps({e.name: e.title for e in p.conda_environments}),
            },
        ]
        mounts = [dict(workspace), {"name": CONDA_VOLUME, "mountPath": s.conda_specs_path, "readOnly": True}]
        if p.condarc is not None:
            env.append({"name": "CONDARC", "value": s.condarc_path})
            mounts.append(
                {"name": CONDARC_VOLUME, "mountPath": s.condarc_path, "subPath": "condarc", "readOnly": True}
            )
        context = {**s.container_security_context, **(p.security_context or {})}
        init = {
            "name": CONDA_INIT,
            "image": self.image,
            "command": ["python3", f"{s.conda_specs_path}/build.py"],
            "workingDir": root,
            "env": env,
            "volumeMounts": mounts,
            "securityContext": context,
        }
        if init_resources(s):
            init["resources"] = init_resources(s)
        self.plan.init_containers.insert(0, init)
        jupyter_path = f"{root}/.apex/jupyter"
        existing = next((e for e in self.plan.env if e["name"] == "JUPYTER_PATH"), None)
        if existing is not None and "value" in existing:
            existing["value"] = f"{jupyter_path}:{existing['value']}"
        else:
            self.plan.env.append({"name": "JUPYTER_PATH", "value": jupyter_path})

    def _workspace_root(self) -> str:
        s, p = self.settings, self.profile
        workspace = next((m for m in self.plan.volume_mounts if m["name"] == s.workspace_volume), None)
        if workspace is None and not p.workspace_volume:
            raise WorkspaceError(
                f"profile {p.slug!r}: conda_environments are built into the workspace volume"
                f" {s.workspace_volume!r}, and this profile has workspace_volume: false (no"
                " operator workspace claim) and no volume of that name; add a volume named"
                f" {s.workspace_volume!r} to the profile, or remove workspace_volume: false"
                " (or set APExSpawner.workspace_volume_name to one of its volumes)"
            )
        if workspace is None:
            raise WorkspaceError(
                f"profile {p.slug!r}: conda_environments are built into the workspace volume"
                f" {s.workspace_volume!r}, which this profile does not mount; add a volume named"
                f" {s.workspace_volume!r} (or set APExSpawner.workspace_volume_name)"
            )
        return workspace["mountPath"].rstrip("/")

    def check_names(self) -> None:
        names = [v["name"] for v in self.plan.volumes]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise WorkspaceError(
                f"profile {self.profile.slug!r}: more than one pod volume is named"
                f" {', '.join(clash)}; rename the profile's item"
            )
        for obj in self.plan.objects + self.plan.claims:
            size = sum(
                len(k.encode()) + len(v.encode())
                for k, v in (obj.get("data") or {}).items()
                if isinstance(v, str)
            )
            if obj["kind"] == "ConfigMap" and size > CONFIGMAP_MAX_BYTES:
                raise WorkspaceError(
                    f"profile {self.profile.slug!r}: ConfigMap {obj['metadata']['name']!r} would hold"
                    f" {size} bytes, over Kubernetes' limit of {CONFIGMAP_MAX_BYTES} (1 MiB); split"
                    " the environments over profiles or ship large files in the image"
                )
            if not is_dns_subdomain(obj["metadata"]["name"]):
                raise WorkspaceError(
                    f"profile {self.profile.slug!r}: {obj['kind']} name"
                    f" {obj['metadata']['name']!r} is not a valid Kubernetes name"
                )


def init_resources(s: Settings) -> dict:
    """An init container's resources: the same as the server container's.

    Why the same: a quota that limits ``requests.cpu`` (with no LimitRange to default
    them) admits only pods whose *every* container states requests; and the pod's
    effective request is the larger of its biggest init container and the sum of its
    containers, so mirroring the server container costs no quota and no scheduling room,
    while a Conda build gets the CPU and memory the user's server would have.
    """
    res = s.init_container_resources or {}
    return {k: dict(v) for k, v in res.items() if k in ("requests", "limits") and v}


def network_policy_spec(s: Settings) -> dict:
    """Default deny for the user namespace, with what a workspace needs let through.

    Peers are namespace + pod selectors (never pod IP ranges), which Cilium and every other
    NetworkPolicy implementation match: in, the hub and proxy pods and the user's own pods;
    out, DNS, the hub and proxy, the user's own pods, and the internet except the cloud
    metadata endpoint (``egress_blocked_cidrs``).
    """
    hub = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": s.hub_namespace}},
        "podSelector": {"matchLabels": dict(s.hub_pod_labels)},
    }
    own: dict[str, Any] = {"podSelector": {}}
    spec = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [hub, own]}]}
    if s.network_policy_egress:
        dns = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
        egress = [dns, {"to": [hub, own]}]
        internet: list[dict[str, Any]] = [
            {
                "ipBlock": {
                    "cidr": cidr,
                    "except": [b for b in s.egress_blocked_cidrs if _same_family(b, cidr)],
                }
            }
            for cidr in s.egress_allowed_cidrs
        ]
        for peer in internet:
            if not peer["ipBlock"]["except"]:
                del peer["ipBlock"]["except"]
        if internet:
            egress.append({"to": internet})
        spec["policyTypes"] = ["Ingress", "Egress"]
        spec["egress"] = egress
    return spec


def _same_family(a: str, b: str) -> bool:
    net_a, net_b = ipaddress.ip_network(a, strict=False), ipaddress.ip_network(b, strict=False)
    if isinstance(net_a, ipaddress.IPv4Network) and isinstance(net_b, ipaddress.IPv4Network):
        return net_a.subnet_of(net_b)
    if isinstance(net_a, ipaddress.IPv6Network) and isinstance(net_b, ipaddress.IPv6Network):
        return net_a.subnet_of(net_b)
    return False  # another family


def _stringify(spec: Any) -> Any:
    """Quantities as strings (YAML gives ``10`` for ``"10"``; Kubernetes wants strings)."""
    if isinstance(spec, dict):
        return {
            k: _stringify(v)
            if k not in ("hard", "max", "min", "default", "defaultRequest", "maxLimitRequestRatio")
            else {r: str(q) for r, q in v.items()}
            for k, v in spec.items()
        }
    if isinstance(spec, list):
        return [_stringify(v) for v in spec]
    return spec


def plan_workspace(owner: Owner, profile: Profile, settings: Settings, image: str | None) -> Plan:
    """Every object of the workspace of ``owner`` for the (rendered) ``profile``.

    Raises ``WorkspaceError`` for what only shows once a profile meets an operator's
    settings (a manifest kind that is not allowed, Conda without a workspace volume).
    """
    builder = _Builder(owner, profile, settings, image)
    builder.manifest_names()
    builder.guard_rails()
    builder.config_maps()
    builder.volumes()
    builder.env()
    builder.init_containers()
    builder.manifests()
    builder.conda()
    builder.check_names()
    return builder.plan
