"""The profile model: what a user can pick on the spawn page, and what it builds.

Why: one validated, immutable object per profile is what the spawner, the form
and the services read; ``render()`` makes the per-user copy (placeholders
filled in) and ``kubespawner_traits()`` the KubeSpawner settings, so neither
re-parses raw YAML.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .fields import (
    Cpu,
    DNSLabel,
    EnvName,
    LabelValue,
    Memory,
    NonEmptyStr,
    ObjectName,
    Quantity,
    ResourceName,
    SessionMode,
    StrictModel,
    TemplatedName,
)
from .items import (
    CondaEnvironment,
    ConfigMapItem,
    EnvValue,
    ManifestItem,
    RoleBindingItem,
    SecretMount,
    Toleration,
    VolumeItem,
)
from .overrides import container_problems, override_problems, security_context_problems
from .quantities import check_quantity, memory_bytes
from .templating import EXAMPLE_VALUES, render, render_tree

_QUOTA_KEYS = {"hard", "scopes", "scopeSelector"}
_LIMIT_RANGE_KEYS = {"limits"}


def _duplicates(values: list[str]) -> list[str]:
    return [v for v, n in Counter(values).items() if n > 1]


class Profile(StrictModel):
    """One entry of the catalogue (see examples/profiles.yml for every field)."""

    slug: DNSLabel
    display_name: NonEmptyStr
    description: str = ""
    default: bool = False
    groups: list[NonEmptyStr] = Field(default_factory=list)
    image: NonEmptyStr | None = None
    cpu_limit: Cpu | None = None
    cpu_guarantee: Cpu | None = None
    mem_limit: Memory | None = None
    mem_guarantee: Memory | None = None
    extra_resource_limits: dict[ResourceName, Quantity] = Field(default_factory=dict)
    extra_resource_guarantees: dict[ResourceName, Quantity] = Field(default_factory=dict)
    node_selector: dict[str, LabelValue] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    default_url: str | None = None
    session_mode: SessionMode = "on-demand"
    config_maps: list[ConfigMapItem] = Field(default_factory=list)
    volumes: list[VolumeItem] = Field(default_factory=list)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    env_from_config_maps: list[ObjectName] = Field(default_factory=list)
    env_from_secrets: list[ObjectName] = Field(default_factory=list)
    secret_mounts: list[SecretMount] = Field(default_factory=list)
    init_containers: list[dict[str, Any]] = Field(default_factory=list)
    manifests: list[ManifestItem] = Field(default_factory=list)
    conda_environments: list[CondaEnvironment] = Field(default_factory=list)
    condarc: str | None = None
    role_bindings: list[RoleBindingItem] = Field(default_factory=list)
    image_pull_secrets: list[ObjectName] = Field(default_factory=list)
    #: Pull Secrets the profile's own manifests create in the user's namespace (not copied).
    workspace_image_pull_secrets: list[TemplatedName] = Field(default_factory=list)
    #: The pod runs as the workspace ServiceAccount *with* its API token, so code in it can
    #: use what ``role_bindings`` grant that account (in the user's namespace only).
    service_account_token: bool = False
    #: False: no operator-wide workspace claim for this profile (its own volumes only).
    workspace_volume: bool = True
    resource_quota: dict[str, Any] | None = None
    limit_range: dict[str, Any] | None = None
    kubespawner_override: dict[str, Any] = Field(default_factory=dict)
    security_context: dict[str, Any] | None = None

    # ---- field checks -------------------------------------------------------------

    @field_validator("default_url")
    @classmethod
    def _local_path(cls, url: str | None) -> str | None:
        if url is not None and (
            not url.startswith("/") or url.startswith("//") or any(c.isspace() for c in url)
        ):
            raise ValueError(
                f"{url!r} must be a path on the user's server starting with one '/',"
                " e.g. '/lab', '/vscode' or '/desktop'"
            )
        return url

    @field_validator("init_containers")
    @classmethod
    def _containers(cls, containers: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        problems = []
        for number, container in enumerate(containers):
            name = container.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"init container {number} needs a 'name'")
            if not isinstance(container.get("image"), str):
                raise ValueError(f"init container {name!r} needs an 'image'")
            problems += container_problems(container, name, _allow_security(info))
        if problems:
            raise ValueError("\n".join(problems))
        return containers

    @field_validator("condarc")
    @classmethod
    def _condarc(cls, text: str | None) -> str | None:
        import yaml

        from . import yamlsafe

        if text is not None:
            try:
                parsed = yamlsafe.load(text)
            except yaml.YAMLError as exc:
                raise ValueError(f"not valid YAML: {exc}") from None
            if parsed is not None and not isinstance(parsed, Mapping):
                raise ValueError("must be a YAML mapping such as 'channels: [conda-forge]'")
        return text

    @field_validator("resource_quota")
    @classmethod
    def _quota(cls, spec: dict[str, Any] | None) -> dict[str, Any] | None:
        if spec is not None:
            unknown = set(spec) - _QUOTA_KEYS
            if unknown:
                raise ValueError(f"unknown ResourceQuota spec fields: {', '.join(sorted(unknown))}")
            hard = spec.get("hard", {})
            if not isinstance(hard, Mapping):
                raise ValueError("'hard' must map resource names to quantities")
            for resource, amount in hard.items():
                try:
                    check_quantity(amount)
                except ValueError as exc:
                    raise ValueError(f"hard.{resource}: {exc}") from None
        return spec

    @field_validator("limit_range")
    @classmethod
    def _limit_range(cls, spec: dict[str, Any] | None) -> dict[str, Any] | None:
        if spec is not None:
            unknown = set(spec) - _LIMIT_RANGE_KEYS
            if unknown:
                raise ValueError(f"unknown LimitRange spec fields: {', '.join(sorted(unknown))}")
            limits = spec.get("limits")
            if not isinstance(limits, list) or not all(
                isinstance(item, Mapping) and "type" in item for item in limits
            ):
                raise ValueError("'limits' must be a list of entries with a 'type'")
        return spec

    @field_validator("kubespawner_override")
    @classmethod
    def _overrides(cls, overrides: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        problems = override_problems(overrides, _allow_security(info))
        if problems:
            raise ValueError("\n".join(problems))
        return overrides

    @field_validator("security_context")
    @classmethod
    def _security(cls, context: dict[str, Any] | None, info: ValidationInfo) -> Any:
        if context is not None:
            problems = security_context_problems(context, _allow_security(info))
            if problems:
                raise ValueError("\n".join(problems))
        return context

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        problems = []
        if self.cpu_limit and self.cpu_guarantee and self.cpu_guarantee > self.cpu_limit:
            problems.append(
                f"cpu_guarantee: {self.cpu_guarantee:g} is more than cpu_limit"
                f" {self.cpu_limit:g}; a guarantee cannot exceed the limit"
            )
        if (
            self.mem_limit
            and self.mem_guarantee
            and memory_bytes(self.mem_guarantee) > memory_bytes(self.mem_limit)
        ):
            problems.append(
                f"mem_guarantee: {self.mem_guarantee} is more than mem_limit"
                f" {self.mem_limit}; a guarantee cannot exceed the limit"
            )
        for field in ("config_maps", "volumes", "manifests", "conda_environments", "role_bindings"):
            for name in _duplicates([item.name for item in getattr(self, field)]):
                problems.append(f"{field}: the name {name!r} is used more than once")
        shared = {c.name for c in self.config_maps} & {v.name for v in self.volumes}
        for name in sorted(shared):
            problems.append(
                f"config_maps/volumes: {name!r} names both a config map and a volume;"
                " pod volumes are named after them, so rename one"
            )
        paths = [c.mount_path for c in self.config_maps if c.mount_path]
        paths += [v.mount_path for v in self.volumes]
        paths += [s.mount_path for s in self.secret_mounts]
        for path in _duplicates(paths):
            problems.append(f"mount_path: {path!r} is used by more than one mount")
        if self.conda_environments and not self.workspace_volume and not self.volumes:
            problems.append(
                "conda_environments: they are built into the workspace volume, but this profile"
                " has workspace_volume: false and no volumes at all; add a volume named"
                " 'workspace' (the spawner's workspace_volume_name) to 'volumes', or remove"
                " workspace_volume: false"
            )
        produced = set()
        for manifest in self.manifests:
            for doc in manifest.documents(EXAMPLE_VALUES):
                target = ((doc.get("spec") or {}).get("target") or {}).get("name")
                if doc["kind"] in ("Secret", "ExternalSecret"):
                    produced |= {doc["metadata"]["name"], target} - {None}
        for name in self.workspace_image_pull_secrets:
            if render(name, EXAMPLE_VALUES) not in produced:
                problems.append(
                    f"workspace_image_pull_secrets: {name!r} is not made by any of this profile's"
                    " manifests (a Secret, or an ExternalSecret's target); list Secrets of the hub"
                    " namespace in image_pull_secrets instead"
                )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # ---- use ------------------------------------------------------------------------

    def allows(self, groups: set[str]) -> bool:
        """True when the profile is open to everyone or shares a group with ``groups``."""
        return not self.groups or not groups.isdisjoint(self.groups)

    def render(self, **values: str) -> Profile:
        """A copy with ``{username}``, ``{namespace}``, ``{profile}`` filled in.

        Templated: ConfigMap content (when ``template``), manifests, literal env
        values, init containers, volume claim names and annotations, role binding
        subjects.  Values must be escaped (slugs); see ``templating``.
        """
        values.setdefault("profile", self.slug)

        def text(value: str | None) -> str | None:
            return None if value is None else render(value, values)

        update = {
            "config_maps": [
                c.model_copy(update={"content": text(c.content)}) if c.template else c
                for c in self.config_maps
            ],
            "manifests": [
                m.model_copy(update={"content": render_tree(m.content, values)}) for m in self.manifests
            ],
            "env": {k: text(v) if isinstance(v, str) else v for k, v in self.env.items()},
            "init_containers": render_tree(self.init_containers, values),
            "volumes": [
                v.model_copy(
                    update={
                        "claim_name": text(v.claim_name),
                        "annotations": render_tree(v.annotations, values),
                    }
                )
                for v in self.volumes
            ],
            "secret_mounts": [s.model_copy(update={"name": text(s.name)}) for s in self.secret_mounts],
            "workspace_image_pull_secrets": [text(n) for n in self.workspace_image_pull_secrets],
            "role_bindings": [
                b.model_copy(
                    update={
                        "subjects": [
                            s.model_copy(update={"name": text(s.name), "namespace": text(s.namespace)})
                            for s in b.subjects
                        ]
                    }
                )
                for b in self.role_bindings
            ],
        }
        return self.model_copy(update=update)

    def kubespawner_traits(self) -> dict[str, Any]:
        """KubeSpawner trait values for this profile (memory in bytes, as KubeSpawner wants)."""
        traits: dict[str, Any] = {}
        for name in ("image", "cpu_limit", "cpu_guarantee", "default_url"):
            if getattr(self, name) is not None:
                traits[name] = getattr(self, name)
        for name in ("mem_limit", "mem_guarantee"):
            if getattr(self, name) is not None:
                traits[name] = memory_bytes(getattr(self, name))
        for name in ("extra_resource_limits", "extra_resource_guarantees", "node_selector"):
            if getattr(self, name):
                traits[name] = dict(getattr(self, name))
        if self.tolerations:
            traits["tolerations"] = [t.to_k8s() for t in self.tolerations]
        traits.update(self.kubespawner_override)
        return traits

    def profile_list_entry(self) -> dict[str, Any]:
        """The entry for KubeSpawner's ``profile_list`` (the spawn form)."""
        return {
            "slug": self.slug,
            "display_name": self.display_name,
            "description": self.description,
            "default": self.default,
            "kubespawner_override": self.kubespawner_traits(),
        }


def _allow_security(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get("allow_security_overrides", False))
