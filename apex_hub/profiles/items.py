"""Workspace items of a profile: ConfigMaps, volumes, env, RBAC, manifests, Conda.

Why: each item is turned into Kubernetes objects in the user's namespace, so
everything Kubernetes would reject later (bad names, oversized ConfigMaps,
manifests that are not objects) is rejected here, when the catalogue loads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Annotated, Any, Literal, cast

import yaml
from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from . import yamlsafe
from .fields import (
    CONFIGMAP_MAX_BYTES,
    AbsolutePath,
    ConfigKey,
    DNSLabel,
    FileMode,
    LooseStr,
    ObjectName,
    Quantity,
    StrictModel,
    SubPath,
    TemplatedName,
)
from .templating import EXAMPLE_VALUES, render, render_tree


def _check_size(content: str, what: str) -> str:
    size = len(content.encode("utf-8"))
    if size > CONFIGMAP_MAX_BYTES:
        raise ValueError(
            f"{what} of {size} bytes is over the Kubernetes limit of {CONFIGMAP_MAX_BYTES}"
            " bytes (1 MiB) for one ConfigMap; put the file in the image or on a volume"
        )
    return content


class ConfigMapItem(StrictModel):
    """A file from a ConfigMap; without ``content`` an existing ConfigMap is mounted."""

    name: DNSLabel
    key: ConfigKey
    content: str | None = None
    mount_path: AbsolutePath | None = None
    default_mode: FileMode = 0o644
    readonly: bool = True
    persist: bool = False
    template: bool = True

    @model_validator(mode="before")
    @classmethod
    def _key_defaults_to_name(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("key") is None and "name" in data:
            data = {**data, "key": data["name"]}
        return data

    @field_validator("content")
    @classmethod
    def _fits(cls, content: str | None) -> str | None:
        return None if content is None else _check_size(content, "the content")


AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]


def _read_write_once() -> list[AccessMode]:
    return ["ReadWriteOnce"]


class VolumeItem(StrictModel):
    """A PVC mounted in the pod: created with ``size``, or an existing ``claim_name``."""

    name: DNSLabel
    claim_name: TemplatedName | None = None
    size: Quantity | None = None
    storage_class: str | None = None
    access_modes: list[AccessMode] = Field(default_factory=_read_write_once, min_length=1)
    annotations: dict[str, LooseStr] = Field(default_factory=dict)
    mount_path: AbsolutePath
    sub_path: SubPath | None = None
    readonly: bool = False
    persist: bool = True
    #: Deleted at every stop of the server (ApplicationHub's ``persist: false`` claims).
    scratch: bool = False

    @model_validator(mode="after")
    def _size_or_claim(self) -> VolumeItem:
        if self.scratch and (self.size is None or self.persist):
            raise ValueError(
                f"volume {self.name!r}: a scratch claim is created with 'size' and deleted at"
                " every stop, so it needs 'size' and 'persist: false'"
            )
        if self.size is None and self.claim_name is None:
            raise ValueError(
                f"volume {self.name!r}: give 'size' to create a claim, or 'claim_name'"
                " to mount an existing one"
            )
        return self


class KeyRef(StrictModel):
    """A key of a ConfigMap or Secret in the user's namespace."""

    name: ObjectName
    key: ConfigKey


class EnvReference(StrictModel):
    """An environment value read from a ConfigMap or Secret key."""

    from_config_map: KeyRef | None = None
    from_secret: KeyRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvReference:
        if (self.from_config_map is None) == (self.from_secret is None):
            raise ValueError("give exactly one of 'from_config_map' or 'from_secret'")
        return self


def _env_kind(value: Any) -> str:
    return "<reference>" if isinstance(value, Mapping | EnvReference) else "<literal>"


EnvValue = Annotated[
    Annotated[LooseStr, Tag("<literal>")] | Annotated[EnvReference, Tag("<reference>")],
    Discriminator(_env_kind),
]


class SecretMount(StrictModel):
    """An existing Secret in the user's namespace mounted as files (name templated)."""

    name: TemplatedName
    mount_path: AbsolutePath
    sub_path: SubPath | None = None


class PolicyRule(StrictModel):
    """One rule of a namespaced Role."""

    api_groups: list[str] = Field(default_factory=lambda: [""])
    resources: list[str] = Field(min_length=1)
    verbs: list[
        Literal["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
    ] = Field(min_length=1)
    resource_names: list[str] = Field(default_factory=list)

    def to_k8s(self) -> dict:
        """The rule as Kubernetes expects it (camelCase)."""
        rule = {"apiGroups": self.api_groups, "resources": self.resources, "verbs": self.verbs}
        if self.resource_names:
            rule["resourceNames"] = self.resource_names
        return rule


class RoleItem(StrictModel):
    """The Role a binding grants; its name defaults to the binding's name."""

    name: ObjectName | None = None
    rules: list[PolicyRule] = Field(min_length=1)


class Subject(StrictModel):
    """Who the binding applies to (usually the user's ServiceAccount)."""

    kind: Literal["ServiceAccount", "User", "Group"]
    name: str = Field(min_length=1)
    namespace: str | None = None


class RoleBindingItem(StrictModel):
    """A Role plus RoleBinding in the user's namespace."""

    name: ObjectName
    role: RoleItem
    subjects: list[Subject] = Field(min_length=1)
    persist: bool = False

    @property
    def role_name(self) -> str:
        return self.role.name or self.name


def _documents(content: str | dict | list, values: Mapping[str, str] | None) -> list[dict]:
    if isinstance(content, str):
        text = render(content, values) if values else content
        try:
            docs = [d for d in yamlsafe.load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            raise ValueError(f"content is not valid YAML: {exc}") from None
    else:
        tree = render_tree(content, values) if values else content
        docs = [tree] if isinstance(tree, Mapping) else list(cast(list, tree))
    if not docs:
        raise ValueError("content holds no Kubernetes object")
    for number, doc in enumerate(docs, 1):
        where = f"document {number}" if len(docs) > 1 else "the manifest"
        if not isinstance(doc, Mapping):
            raise ValueError(f"{where} is not a mapping (a Kubernetes object)")
        missing = [k for k in ("apiVersion", "kind") if not isinstance(doc.get(k), str)]
        metadata = doc.get("metadata")
        if not (isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str)):
            missing.append("metadata.name")
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}")
    return [dict(d) for d in docs]


#: Kinds known to be cluster-scoped, by API group: one object shared by every user, so never
#: a profile manifest. Unknown kinds are checked at spawn time (API discovery says the scope).
CLUSTER_SCOPED_KINDS: dict[str, frozenset[str]] = {
    "": frozenset({"Namespace", "Node", "PersistentVolume", "ComponentStatus"}),
    "rbac.authorization.k8s.io": frozenset({"ClusterRole", "ClusterRoleBinding"}),
    "storage.k8s.io": frozenset(
        {"StorageClass", "CSIDriver", "CSINode", "VolumeAttachment", "VolumeAttributesClass"}
    ),
    "apiextensions.k8s.io": frozenset({"CustomResourceDefinition"}),
    "apiregistration.k8s.io": frozenset({"APIService"}),
    "scheduling.k8s.io": frozenset({"PriorityClass"}),
    "node.k8s.io": frozenset({"RuntimeClass"}),
    "networking.k8s.io": frozenset({"IngressClass", "IPAddress", "ServiceCIDR"}),
    "certificates.k8s.io": frozenset({"CertificateSigningRequest", "ClusterTrustBundle"}),
    "admissionregistration.k8s.io": frozenset(
        {
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "MutatingAdmissionPolicy",
            "MutatingAdmissionPolicyBinding",
        }
    ),
    "flowcontrol.apiserver.k8s.io": frozenset({"FlowSchema", "PriorityLevelConfiguration"}),
    "policy": frozenset({"PodSecurityPolicy"}),
}


def cluster_scoped(api_version: str, kind: str) -> bool:
    """True for a kind known to be cluster-scoped (and ``Cluster<Name>`` kinds of any group,
    the convention of operators such as cert-manager's ClusterIssuer)."""
    group = api_version.rpartition("/")[0]
    if kind in CLUSTER_SCOPED_KINDS.get(group, ()):
        return True
    return kind.startswith("Cluster") and kind[7:8].isupper()


class ManifestItem(StrictModel):
    """Extra Kubernetes objects applied in the user's namespace (YAML text or objects)."""

    name: DNSLabel
    content: str | dict[str, Any] | list[dict[str, Any]]
    persist: bool = False

    @field_validator("content")
    @classmethod
    def _parses(cls, content: Any) -> Any:
        for doc in _documents(content, EXAMPLE_VALUES):
            if cluster_scoped(doc["apiVersion"], doc["kind"]):
                raise ValueError(
                    f"{doc['kind']} ({doc['apiVersion']}) is cluster-scoped: one object shared by"
                    " every user, which one user's spawn would take over and whose stop would"
                    " delete it; profile manifests must be namespaced objects (they are created"
                    " in the user's own namespace)"
                )
        return content

    def documents(self, values: Mapping[str, str] | None = None) -> list[dict]:
        """The objects, with placeholders replaced by ``values`` (escaped)."""
        return _documents(self.content, values)

    @property
    def kinds(self) -> list[str]:
        return [d["kind"] for d in self.documents(EXAMPLE_VALUES)]


class CondaEnvironment(StrictModel):
    """An ``environment.yml`` built once into the workspace and registered as a kernel."""

    name: DNSLabel
    environment_yml: str = Field(min_length=1)
    display_name: str | None = None

    @field_validator("environment_yml")
    @classmethod
    def _is_environment(cls, text: str) -> str:
        _check_size(text, "the file")
        try:
            spec = yamlsafe.load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"environment_yml is not valid YAML: {exc}") from None
        if not isinstance(spec, Mapping):
            raise ValueError("environment_yml must be a mapping with 'dependencies'")
        if not isinstance(spec.get("dependencies"), list):
            raise ValueError("environment_yml needs a 'dependencies' list")
        return text

    @property
    def content_hash(self) -> str:
        """SHA-256 of the file: the environment is rebuilt when this changes."""
        return hashlib.sha256(self.environment_yml.encode("utf-8")).hexdigest()

    @property
    def title(self) -> str:
        return self.display_name or self.name


class Toleration(StrictModel):
    """A pod toleration, in Kubernetes' own spelling."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: LooseStr | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")

    def to_k8s(self) -> dict:
        return self.model_dump(by_alias=True, exclude_none=True)
