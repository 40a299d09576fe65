"""The resource types kubesim serves, and the discovery documents that describe them.

Everything in the store and the HTTP layer is generic over :class:`ResourceType`, so a
custom resource is one :meth:`Registry.register` call (or a CustomResourceDefinition
created through the API) away.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    # "label" for names that must be a DNS-1123 label (namespaces, services), else "subdomain".
    name_rule: str = "subdomain"
    # Types whose status is only written through the /status subresource.
    has_status: bool = False
    verbs: tuple[str, ...] = ALL_VERBS
    categories: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """One per resource, whatever the version it is served at; also how error messages name
        the resource (``pods``, ``roles.rbac.authorization.k8s.io``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


def _core(plural, kind, namespaced=True, short=(), **kw):
    return ResourceType("", "v1", plural, kind, namespaced, tuple(short), **kw)


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _core("namespaces", "Namespace", False, ("ns",), name_rule="label", has_status=True),
    _core("nodes", "Node", False, ("no",), has_status=True),
    _core("pods", "Pod", short=("po",), has_status=True, categories=("all",)),
    _core("configmaps", "ConfigMap", short=("cm",)),
    _core("secrets", "Secret"),
    _core("services", "Service", short=("svc",), name_rule="label", has_status=True, categories=("all",)),
    _core("endpoints", "Endpoints", short=("ep",)),
    _core("events", "Event", short=("ev",)),
    _core("serviceaccounts", "ServiceAccount", short=("sa",)),
    _core("persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",), has_status=True),
    _core("persistentvolumes", "PersistentVolume", False, ("pv",), has_status=True),
    _core("resourcequotas", "ResourceQuota", short=("quota",), has_status=True),
    _core("limitranges", "LimitRange", short=("limits",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    ResourceType("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), has_status=True),
    ResourceType(
        "apps", "v1", "deployments", "Deployment", True, ("deploy",), has_status=True, categories=("all",)
    ),
    ResourceType("batch", "v1", "jobs", "Job", True, has_status=True, categories=("all",)),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        has_status=True,
    ),
)


class Registry:
    """Maps (group, version, plural) and (apiVersion, kind) to resource types."""

    def __init__(self, types=BUILTIN_TYPES):
        self._by_path: dict[tuple[str, str, str], ResourceType] = {}
        self._by_kind: dict[tuple[str, str], ResourceType] = {}
        for rt in types:
            self.register(rt)

    def register(self, rt: ResourceType) -> ResourceType:
        self._by_path[(rt.group, rt.version, rt.plural)] = rt
        self._by_kind[(rt.api_version, rt.kind)] = rt
        return rt

    def register_crd(self, crd: dict) -> list[ResourceType]:
        """Serve every version of a CustomResourceDefinition (as the apiextensions server does)."""
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        namespaced = spec.get("scope", "Namespaced") == "Namespaced"
        added = []
        for v in spec.get("versions", []) or []:
            if v.get("served", True):
                added.append(
                    self.register(
                        ResourceType(
                            spec["group"],
                            v["name"],
                            names["plural"],
                            names["kind"],
                            namespaced,
                            tuple(names.get("shortNames", []) or ()),
                            has_status="status" in (v.get("subresources") or {}),
                            categories=tuple(names.get("categories", []) or ()),
                        )
                    )
                )
        return added

    def unregister_crd(self, crd: dict) -> None:
        spec = crd.get("spec", {})
        for key in [
            k
            for k in self._by_path
            if k[0] == spec.get("group") and k[2] == spec.get("names", {}).get("plural")
        ]:
            rt = self._by_path.pop(key)
            self._by_kind.pop((rt.api_version, rt.kind), None)

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        return self._by_kind.get((api_version, kind))

    def types(self) -> list[ResourceType]:
        return list(self._by_path.values())

    # -- discovery documents -------------------------------------------------------------

    def versions_of(self, group: str) -> list[str]:
        return sorted({rt.version for rt in self._by_path.values() if rt.group == group}, reverse=True)

    def api_versions(self) -> dict:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }

    def api_group(self, group: str) -> dict | None:
        versions = self.versions_of(group)
        if not versions:
            return None
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": gvs,
            "preferredVersion": gvs[0],
        }

    def api_group_list(self) -> dict:
        groups = sorted({rt.group for rt in self._by_path.values() if rt.group})
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {k: v for k, v in self.api_group(g).items() if k not in ("kind", "apiVersion")}
                for g in groups
            ],
        }

    def resource_list(self, group: str, version: str) -> dict | None:
        rts = [rt for rt in self._by_path.values() if rt.group == group and rt.version == version]
        if not rts:
            return None
        resources = []
        for rt in sorted(rts, key=lambda r: r.plural):
            entry = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            if rt.has_status:
                resources.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
            if rt.plural == "pods":
                resources.append(
                    {
                        "name": "pods/log",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "Pod",
                        "verbs": ["get"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": rt.api_version,
            "resources": resources,
        }

    # -- OpenAPI v3 (only what kubectl needs to hand validation to the server) --------------

    def openapi_v3_index(self) -> dict:
        gvs = sorted({(rt.group, rt.version) for rt in self._by_path.values()})
        paths = {}
        for group, version in gvs:
            prefix = f"apis/{group}/{version}" if group else f"api/{version}"
            paths[prefix] = {"serverRelativeURL": f"/openapi/v3/{prefix}?hash=kubesim{len(self._by_path)}"}
        return {"paths": paths}

    def openapi_v3_doc(self, group: str, version: str) -> dict | None:
        """Per group-version document whose PATCH operations advertise ``fieldValidation``.

        kubectl then sends ``fieldValidation=Strict`` and lets the server validate (kubesim
        checks writes against the real schemas), instead of downloading schemas itself.
        """
        rts = [rt for rt in self._by_path.values() if rt.group == group and rt.version == version]
        if not rts:
            return None
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        param = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        paths = {}
        for rt in rts:
            item = (
                f"{base}/namespaces/{{namespace}}/{rt.plural}/{{name}}"
                if rt.namespaced
                else f"{base}/{rt.plural}/{{name}}"
            )
            gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
            paths[item] = {
                "parameters": [param],
                "patch": {
                    "operationId": f"patch{rt.kind}",
                    "parameters": [param],
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "responses": {"200": {"description": "OK"}},
                },
            }
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (kubesim)", "version": version},
            "paths": paths,
            "components": {"schemas": {}},
        }
