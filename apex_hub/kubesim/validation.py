"""Admission checks that a real API server makes and that our code must not get wrong.

Names (DNS-1123), required fields, label syntax and the 1 MiB ConfigMap/Secret limit are
always checked. Full OpenAPI schema validation with ``kubernetes-validate`` is optional
(``KubeSim(validate_schemas=True)``), because loading the schemas costs time.
"""

from __future__ import annotations

import base64
import functools
import json
import re

from .errors import invalid

# The API server's own name rules (apimachinery's IsDNS1123Label / IsDNS1123Subdomain). kubesim keeps its
# copy rather than importing the product's (apex_hub.naming): a mistake there must be caught here, not
# mirrored (the import-linter contract in pyproject.toml keeps kubesim free of product imports).
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
MAX_CONFIG_BYTES = 1024 * 1024  # ConfigMap and Secret total size limit
MAX_ANNOTATION_BYTES = 256 * 1024

LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc')"
)
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
)


def check_name(name: str, rule: str) -> str | None:
    """Return why ``name`` is not a valid object name under ``rule`` ("label"/"subdomain"), or None."""
    if rule == "label":
        if len(name) > 63:
            return "must be no more than 63 characters"
        if not DNS1123_LABEL.match(name):
            return LABEL_MSG
    else:
        if len(name) > 253:
            return "must be no more than 253 characters"
        if not DNS1123_SUBDOMAIN.match(name):
            return SUBDOMAIN_MSG
    return None


def _check_qualified_key(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return "prefix part " + SUBDOMAIN_MSG
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            "with an alphanumeric character, at most 63 characters"
        )
    return None


def validate(rtype, obj: dict, schema_validator=None) -> None:
    """Raise 422 Invalid, naming each bad field, when ``obj`` would be refused by Kubernetes."""
    causes: list[tuple[str, str]] = []
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    else:
        why = check_name(name, rtype.name_rule)
        if why:
            causes.append(("metadata.name", f'Invalid value: "{name}": {why}'))
    for key, value in (meta.get("labels") or {}).items():
        why = _check_qualified_key(key)
        if why:
            causes.append(("metadata.labels", f'Invalid value: "{key}": {why}'))
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            causes.append(
                (
                    "metadata.labels",
                    f'Invalid value: "{value}": a valid label must be an empty string '
                    "or consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                    "with an alphanumeric character, at most 63 characters",
                )
            )
    annotations = meta.get("annotations") or {}
    for key, value in annotations.items():
        why = _check_qualified_key(key)
        if why:
            causes.append(("metadata.annotations", f'Invalid value: "{key}": {why}'))
        if not isinstance(value, str):
            causes.append(
                ("metadata.annotations", f"Invalid value: {key}: annotation values must be strings")
            )
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > MAX_ANNOTATION_BYTES:
        causes.append(("metadata.annotations", f"Too long: must have at most {MAX_ANNOTATION_BYTES} bytes"))
    checker = _KIND_CHECKS.get(rtype.kind)
    if checker:
        causes.extend(checker(obj))
    if not causes and schema_validator is not None:
        causes.extend(schema_validator(obj))
    if causes:
        raise invalid(rtype, name or meta.get("generateName", ""), causes)


def _pod_spec_causes(spec: dict | None, path: str) -> list[tuple[str, str]]:
    causes = []
    if not isinstance(spec, dict):
        return [(path, "Required value")]
    containers = spec.get("containers") or []
    if not containers:
        causes.append((f"{path}.containers", "Required value"))
    seen = set()
    for field in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(field) or []):
            cname = c.get("name", "")
            where = f"{path}.{field}[{i}]"
            if not cname:
                causes.append((f"{where}.name", "Required value"))
            elif not DNS1123_LABEL.match(cname) or len(cname) > 63:
                causes.append((f"{where}.name", f'Invalid value: "{cname}": {LABEL_MSG}'))
            elif cname in seen:
                causes.append((f"{where}.name", f'Duplicate value: "{cname}"'))
            seen.add(cname)
            if not c.get("image"):
                causes.append((f"{where}.image", "Required value"))
            volume_names = {v.get("name") for v in spec.get("volumes") or []}
            for j, vm in enumerate(c.get("volumeMounts") or []):
                if vm.get("name") not in volume_names:
                    causes.append((f"{where}.volumeMounts[{j}].name", f'Not found: "{vm.get("name")}"'))
                if not vm.get("mountPath"):
                    causes.append((f"{where}.volumeMounts[{j}].mountPath", "Required value"))
    vnames = set()
    for i, v in enumerate(spec.get("volumes") or []):
        vname = v.get("name", "")
        if vname in vnames:
            causes.append((f"{path}.volumes[{i}].name", f'Duplicate value: "{vname}"'))
        vnames.add(vname)
    return causes


def _pod(obj):
    return _pod_spec_causes(obj.get("spec"), "spec")


def _template_owner(obj):
    spec = obj.get("spec") or {}
    return _pod_spec_causes((spec.get("template") or {}).get("spec"), "spec.template.spec")


def _config_data(obj):
    causes = []
    size = 0
    for field in ("data", "binaryData", "stringData"):
        for key, value in (obj.get(field) or {}).items():
            if not CONFIG_KEY.match(key) or len(key) > 253:
                causes.append(
                    (
                        f"{field}[{key}]",
                        f'Invalid value: "{key}": a valid config key must consist of '
                        "alphanumeric characters, '-', '_' or '.'",
                    )
                )
            if field == "data" and obj.get("kind") == "Secret":
                try:
                    size += len(base64.b64decode(value or "", validate=True))
                except ValueError:
                    causes.append((f"data[{key}]", "Invalid value: must be base64-encoded"))
            else:
                size += len(value.encode() if isinstance(value, str) else json.dumps(value).encode())
    if size > MAX_CONFIG_BYTES:
        causes.append(("[]", f"Too long: must have at most {MAX_CONFIG_BYTES} bytes"))
    return causes


def _pvc(obj):
    spec = obj.get("spec") or {}
    causes = []
    if not spec.get("accessModes"):
        causes.append(("spec.accessModes", "Required value: at least 1 access mode is required"))
    if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
        causes.append(("spec.resources[storage]", "Required value"))
    return causes


def _binding(obj):
    if not (obj.get("roleRef") or {}).get("name"):
        return [("roleRef.name", "Required value")]
    return []


_KIND_CHECKS = {
    "Pod": _pod,
    "Deployment": _template_owner,
    "Job": _template_owner,
    "ConfigMap": _config_data,
    "Secret": _config_data,
    "PersistentVolumeClaim": _pvc,
    "RoleBinding": _binding,
    "ClusterRoleBinding": _binding,
}


def schema_validator(kubernetes_version: str | None = None):
    """A validator backed by the real Kubernetes OpenAPI schemas (``kubernetes-validate``).

    Uses kubernetes-validate's strict JSON schemas, with one compiled validator per kind
    cached (its own ``validate()`` re-reads the schema files on every call). Returns None
    when kubernetes-validate is not installed (it is a test extra).
    """
    try:
        import jsonschema
        import kubernetes_validate
        from kubernetes_validate import utils
        from referencing import Registry, Resource
    except ImportError:
        return None
    version = kubernetes_version or kubernetes_validate.latest_version()
    schema_dir = (
        f"v{[v for v in utils.all_versions() if utils.major_minor(v) <= utils.major_minor(version)][-1]}"
    )
    schema_dir += "-local-strict"

    @functools.cache
    def compiled(api_version: str, kind: str):
        gv = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        try:
            schema = utils.schema_contents(
                f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{gv}.json", version
            )
        except FileNotFoundError:
            return None  # custom resources: nothing to check against
        defs = utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", version)
        registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
        return jsonschema.validators.Draft202012Validator(schema, registry=registry)

    def check(obj: dict) -> list[tuple[str, str]]:
        validator = compiled(obj.get("apiVersion", ""), obj.get("kind", ""))
        if validator is None:
            return []
        error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
        if error is None:
            return []
        return [(".".join(str(p) for p in error.absolute_path) or "<root>", error.message)]

    return check
