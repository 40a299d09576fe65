"""Migration from the EOEPCA ApplicationHub ``config.yml`` profile format.

Why: APEx and EOEPCA operators have catalogues in that format; ``convert`` maps
it to ours and reports, one line each, everything it could not carry over —
most importantly inline image-pull credentials, which we never keep in
configuration.  Jinja placeholders such as ``{{ spawner.user.name }}`` become
our ``{username}``/``{namespace}``/``{profile}`` where recognisable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from .errors import CatalogueError
from .items import cluster_scoped
from .overrides import ALLOWED_OVERRIDES
from .templating import escape, has_escapes, has_placeholders

#: The kinds a profile's ``manifests`` may create by default: the spawner's default ``manifest_kinds``
#: (apex_hub.spawner.workspace uses this tuple) and what the converter reports; other kinds need the
#: operator's consent.
DEFAULT_MANIFEST_KINDS = (
    "ConfigMap",
    "Secret",
    "Service",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "PersistentVolumeClaim",
    "NetworkPolicy",
)

_NOT_NAME = re.compile(r"[^a-z0-9]+")
_JINJA_EXPRESSION = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.S)
_JINJA_STATEMENT = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.S)
#: ApplicationHub's user namespace, written out (jupyterhub_config.py: ``jupyter-<user name>``).
_APPHUB_NAMESPACE = re.compile(r"jupyter-\{\{\s*(?:spawner\.)?user\.name\s*\}\}")
WORKSPACE_VOLUME_NOTE = "every profile"
#: Environment variable names whose literal values are credentials.
_CREDENTIAL_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|CRYPT|PRIVATE|ACCESS_KEY|API_KEY)", re.I)
#: Crossplane kinds ApplicationHub creates as cluster objects (create_cluster_custom_object).
_CROSSPLANE_OBJECT = ("kubernetes.crossplane.io", "Object")
_EXPRESSIONS = {
    "spawner.user.name": "{username}",
    "user.name": "{username}",
    "username": "{username}",
    "user_name": "{username}",
    "spawner.namespace": "{namespace}",
    "namespace": "{namespace}",
    "user_namespace": "{namespace}",
    "profile": "{profile}",
    "profile_slug": "{profile}",
    "spawner.user_options.profile": "{profile}",
    "spawner.user_options['profile']": "{profile}",
    'spawner.user_options["profile"]': "{profile}",
}
_PROFILE_KEYS = {
    "id",
    "groups",
    "definition",
    "config_maps",
    "volumes",
    "pod_env_vars",
    "default_url",
    "node_selector",
    "role_bindings",
    "image_pull_secrets",
    "init_containers",
    "manifests",
    "env_from_config_maps",
    "env_from_secrets",
    "secret_mounts",
}
_DEFINITION_KEYS = {"display_name", "description", "slug", "default", "kubespawner_override"}
_RESOURCE_KEYS = (
    "image",
    "cpu_limit",
    "cpu_guarantee",
    "mem_limit",
    "mem_guarantee",
    "extra_resource_limits",
    "extra_resource_guarantees",
)
_AS_FIELD = {
    "node_selector": "node_selector",
    "tolerations": "tolerations",
    "default_url": "default_url",
    "environment": "env",
}


class _Octal(int):
    """A file mode, written back as ``'0644'``."""


class _Dumper(yaml.SafeDumper):
    """Block literals for multi-line text, octal file modes, keys in our order."""


_Dumper.add_representer(
    str,
    lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None),
)
# Quoted ('0644'): YAML 1.1 reads a bare 0644 as octal but YAML 1.2 tools as decimal.
_Dumper.add_representer(
    _Octal, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", f"0{int(v):o}", style="'")
)


def dump_yaml(data: Any) -> str:
    """Our catalogue as readable YAML."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _name(value: Any, fallback: str) -> str:
    text = _NOT_NAME.sub("-", str(value or "").lower()).strip("-")[:63].rstrip("-")
    return text or fallback


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _camel_keys(obj: Any) -> Any:
    """Kubernetes python-client spelling (``volume_mounts``) to the API's (``volumeMounts``)."""
    if isinstance(obj, Mapping):
        return {_camel(k) if isinstance(k, str) else k: _camel_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_camel_keys(v) for v in obj]
    return obj


def _file_mode(value: Any) -> int | None:
    if isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{1,4}", value.strip()):
        return _Octal(int(value.strip().replace("o", ""), 8))
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return _Octal(value)
    return None


def _is_templated(path: tuple) -> bool:
    """Fields where apex-hub substitutes placeholders (see ``Profile.render``)."""
    head = path[0]
    if head in ("env", "init_containers"):
        return True
    if head in ("config_maps", "manifests"):
        return len(path) > 2 and path[2] == "content"
    if head == "volumes":
        return len(path) > 2 and path[2] in ("claim_name", "annotations")
    if head == "role_bindings":
        return len(path) > 4 and path[2] == "subjects" and path[4] in ("name", "namespace")
    if head == "secret_mounts":
        return len(path) > 2 and path[2] == "name"
    return head == "workspace_image_pull_secrets"


def _meta_name(doc: Mapping) -> Any:
    return (doc.get("metadata") or {}).get("name")


def _path_text(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _Converter:
    """Converts one profile; ``notes`` collects what could not be mapped."""

    def __init__(self, index: int, raw: Mapping[str, Any], taken: set[str]):
        self.raw, self.index, self.taken = raw, index, taken
        self.label = str(raw.get("id") or f"profiles[{index}]")
        self.notes: list[str] = []
        self.renamed: dict[str, str] = {}
        self.service_account = False

    def note(self, message: str) -> None:
        self.notes.append(f"profile {self.label!r}: {message}")

    def unknown(self, where: str, data: Mapping, known: set[str]) -> None:
        for key in data:
            if key not in known:
                self.note(f"{where}{key}: no equivalent in apex-hub; not converted")

    def convert(self) -> dict[str, Any]:
        raw = self.raw
        self.unknown("", raw, _PROFILE_KEYS)
        definition = raw.get("definition") or {}
        self.unknown("definition.", definition, _DEFINITION_KEYS)
        out: dict[str, Any] = {"slug": self._slug(definition)}
        out["display_name"] = definition.get("display_name") or out["slug"]
        if definition.get("description"):
            out["description"] = definition["description"]
        if definition.get("default"):
            out["default"] = True
        if raw.get("groups"):
            out["groups"] = list(raw["groups"])
        elif isinstance(raw.get("groups"), list):
            self.note(
                "groups: [] offered this profile to nobody in ApplicationHub; here an empty"
                " list means everyone: it is now OPEN TO EVERY USER (add groups, or"
                " session_mode: off, to keep it closed)"
            )
        self._overrides(definition.get("kubespawner_override") or {}, out)
        if raw.get("node_selector"):
            out["node_selector"] = {**out.get("node_selector", {}), **raw["node_selector"]}
        if out.get("node_selector"):
            out["node_selector"] = self._node_selector(out["node_selector"])
        if raw.get("default_url"):
            url = str(raw["default_url"])
            out["default_url"] = url if url.startswith("/") else "/" + url
        self._env(raw.get("pod_env_vars") or {}, out)
        for key in (
            "config_maps",
            "volumes",
            "secret_mounts",
            "init_containers",
            "role_bindings",
            "image_pull_secrets",
            "manifests",
        ):
            items = getattr(self, "_" + key)(raw.get(key) or [])
            if items:
                out[key] = items
        if self.service_account:
            out["service_account_token"] = True
        for key in ("env_from_config_maps", "env_from_secrets"):
            if raw.get(key):
                out[key] = [self._renamed(f"{key}[{n}]", name) for n, name in enumerate(raw[key])]
        for name, value in (out.get("env") or {}).items():
            ref = value.get("from_config_map") if isinstance(value, dict) else None
            if ref and ref.get("name"):
                ref["name"] = self._renamed(f"pod_env_vars.{name}", ref["name"])
                self.note(
                    f"pod_env_vars.{name} reads ConfigMap {ref['name']!r}, which the profile"
                    " does not create: it must exist in each user's namespace before the spawn"
                )
        self._credentials(out)
        # ApplicationHub gives a pod only the profile's own volumes (no default claim).
        out["workspace_volume"] = False
        out = self._placeholders(out, ())
        self._workspace_pull_secrets(out)
        for item in out.get("config_maps", []):
            content = item.get("content") or ""
            item["template"] = has_placeholders(content) or has_escapes(content)
        return out

    def _workspace_pull_secrets(self, out: dict) -> None:
        """Pull Secrets the profile's own manifests make in the namespace are not copied."""
        made = set()
        for manifest in out.get("manifests") or []:
            content = manifest["content"]
            docs = (
                yaml.safe_load_all(content)
                if isinstance(content, str)
                else content
                if isinstance(content, list)
                else [content]
            )
            for doc in docs:
                if isinstance(doc, Mapping) and doc.get("kind") in ("Secret", "ExternalSecret"):
                    target = ((doc.get("spec") or {}).get("target") or {}).get("name")
                    made |= {_meta_name(doc), target} - {None}
        inside = [n for n in out.get("image_pull_secrets", []) if n in made]
        if inside:
            out["image_pull_secrets"] = [n for n in out["image_pull_secrets"] if n not in inside]
            if not out["image_pull_secrets"]:
                del out["image_pull_secrets"]
            out["workspace_image_pull_secrets"] = inside
            self.note(
                f"image_pull_secrets {', '.join(inside)}: made by the profile's own manifests"
                " in the user's namespace, so listed in workspace_image_pull_secrets (used"
                " there, not copied from the hub namespace)"
            )

    def _renamed(self, where: str, name: Any) -> Any:
        """Follow a ConfigMap renamed for DNS validity in the fields that refer to it."""
        new = self.renamed.get(str(name))
        if new is not None:
            self.note(f"{where}: refers to {name!r}, now {new!r}")
            return new
        return name

    def _node_selector(self, selector: Mapping) -> dict:
        result = {}
        for key, value in selector.items():
            text = "true" if value is True else "false" if value is False else str(value)
            stripped = text.strip().strip("\\\"' ")
            if stripped != text:
                self.note(
                    f"node_selector.{key}: value {text!r} is not a label value (the API server"
                    f" refuses such a pod, so ApplicationHub could not start this profile);"
                    f" now {stripped!r}"
                )
            result[key] = stripped
        return result

    def _credentials(self, out: dict) -> None:
        """Warn loudly about credentials written in clear in the source."""
        for name, value in (out.get("env") or {}).items():
            if isinstance(value, str) and value and _CREDENTIAL_NAME.search(name):
                self.note(
                    f"WARNING: CREDENTIAL IN CLEAR: env.{name} holds a literal value that"
                    " looks like a secret; it was carried over as is. Put it in a Secret and"
                    f" write env.{name}: {{from_secret: {{name: ..., key: ...}}}}"
                )
        for n, manifest in enumerate(out.get("manifests") or []):
            content = manifest["content"]
            docs = content if isinstance(content, list) else [content]
            for doc in docs:
                if (
                    isinstance(doc, Mapping)
                    and doc.get("kind") == "Secret"
                    and (doc.get("data") or doc.get("stringData"))
                ):
                    self.note(
                        f"WARNING: CREDENTIALS IN CLEAR: manifests[{n}] is a Secret"
                        f" {(doc.get('metadata') or {}).get('name')!r} with its data inline"
                        " (base64 is not encryption); it was carried over as is. Create it"
                        " out of band (or with an ExternalSecret) and refer to it by name"
                    )

    def _slug(self, definition: Mapping) -> str:
        original = definition.get("slug") or self.raw.get("id") or ""
        slug = base = _name(original, f"profile-{self.index}")
        number = 2
        while slug in self.taken:
            slug = f"{base[:60]}-{number}"
            number += 1
        self.taken.add(slug)
        if slug != original:
            self.note(f"slug {original!r} is now {slug!r} (slugs are DNS labels)")
        return slug

    def _overrides(self, overrides: Mapping, out: dict) -> None:
        for key, value in overrides.items():
            if value is None or value == {}:
                continue
            if key in _RESOURCE_KEYS:
                out[key] = value
            elif key in _AS_FIELD:
                out[_AS_FIELD[key]] = value
            elif key in ALLOWED_OVERRIDES:
                out.setdefault("kubespawner_override", {})[key] = value
            else:
                self.note(
                    f"definition.kubespawner_override.{key}: not an allowed override in"
                    " apex-hub; not converted"
                )

    def _env(self, variables: Mapping, out: dict) -> None:
        env: dict[str, Any] = {}
        for name, value in {**(out.pop("env", {}) or {}), **variables}.items():
            ref = value.get("valueFrom") if isinstance(value, Mapping) and len(value) == 1 else None
            if isinstance(ref, Mapping) and len(ref) == 1:
                kind, key_ref = next(iter(ref.items()))
                ours = {"configMapKeyRef": "from_config_map", "secretKeyRef": "from_secret"}
                if kind in ours and isinstance(key_ref, Mapping):
                    value = {ours[kind]: key_ref}
            if isinstance(value, bool):
                env[name] = "true" if value else "false"
            elif isinstance(value, str | int | float):
                env[name] = str(value)
                if str(value) != str(value).strip():
                    self.note(f"pod_env_vars.{name}: value {value!r} has surrounding spaces; kept")
            elif isinstance(value, Mapping) and set(value) <= {"from_config_map", "from_secret"}:
                env[name] = {
                    k: {"name": v.get("name"), "key": v.get("key")}
                    for k, v in value.items()
                    if isinstance(v, Mapping)
                }
            else:
                self.note(f"pod_env_vars.{name}: unsupported value {value!r}; not converted")
        if env:
            out["env"] = env

    def _rename(self, where: str, original: Any, fallback: str) -> str:
        name = _name(original, fallback)
        if name != original:
            self.note(f"{where}: name {original!r} is now {name!r}")
            self.renamed[str(original)] = name
        return name

    def _config_maps(self, items: list) -> list[dict]:
        result = []
        for n, cm in enumerate(items):
            where = f"config_maps[{n}]"
            self.unknown(
                where + ".",
                cm,
                {"name", "key", "content", "mount_path", "default_mode", "readonly", "persist"},
            )
            item = {
                "name": self._rename(where, cm.get("name"), f"config-{n}"),
                "key": cm.get("key") or cm.get("name"),
            }
            for key in ("content", "mount_path"):
                if cm.get(key) is not None:
                    item[key] = cm[key]
            if cm.get("default_mode") is not None:
                mode = _file_mode(cm["default_mode"])
                if mode is None:
                    self.note(
                        f"{where}.default_mode {cm['default_mode']!r} is not a file mode;"
                        " the default 0644 is used"
                    )
                else:
                    item["default_mode"] = mode
            item["readonly"] = bool(cm.get("readonly", True))
            item["persist"] = bool(cm.get("persist", True))
            if item.get("content") is None:
                self.note(
                    f"{where}: no content, so ConfigMap {item['name']!r} is mounted, not"
                    " created: it must exist in each user's namespace before the spawn (the pod"
                    " waits for it)"
                )
            result.append(item)
        return result

    def _volumes(self, items: list) -> list[dict]:
        result = []
        for n, vol in enumerate(items):
            where = f"volumes[{n}]"
            self.unknown(
                where + ".",
                vol,
                {
                    "name",
                    "claim_name",
                    "size",
                    "storage_class",
                    "access_modes",
                    "volume_mount",
                    "persist",
                    "annotations",
                },
            )
            mount = vol.get("volume_mount") or {}
            mount_path = mount.get("mount_path") or mount.get("mountPath")
            if not mount_path:
                self.note(f"{where}: no volume_mount.mount_path; volume not converted")
                continue
            item: dict[str, Any] = {"name": self._rename(where, vol.get("name"), f"volume-{n}")}
            for key in ("claim_name", "size", "storage_class", "access_modes", "annotations"):
                if vol.get(key):
                    item[key] = vol[key]
            item["mount_path"] = mount_path
            sub_path = mount.get("sub_path") or mount.get("subPath")
            if sub_path:
                item["sub_path"] = sub_path
            if mount.get("name") not in (None, vol.get("name")):
                self.note(
                    f"{where}.volume_mount.name {mount['name']!r}: ignored (a mount always uses its volume)"
                )
            item["persist"] = bool(vol.get("persist", True))
            if not item["persist"]:
                if item.get("size"):
                    item["scratch"] = True
                    self.note(
                        f"{where}: persist: false: a scratch claim (scratch: true), deleted"
                        " at every stop as in ApplicationHub"
                    )
                else:
                    self.note(f"{where}: persist: false on an existing claim: kept, not deleted")
            result.append(item)
        return result

    def _secret_mounts(self, items: list) -> list[dict]:
        result = []
        for n, mount in enumerate(items):
            self.unknown(f"secret_mounts[{n}].", mount, {"name", "mount_path", "sub_path"})
            result.append(
                {k: mount[k] for k in ("name", "mount_path", "sub_path") if mount.get(k) is not None}
            )
        return result

    def _init_containers(self, items: list) -> list[dict]:
        result = []
        for container in items:
            container = _camel_keys(container)
            for mount in container.get("volumeMounts") or []:
                if isinstance(mount, dict) and mount.get("name") in self.renamed:
                    mount["name"] = self.renamed[mount["name"]]
            result.append(container)
        return result

    def _role_bindings(self, items: list) -> list[dict]:
        result = []
        for n, binding in enumerate(items):
            where = f"role_bindings[{n}]"
            self.unknown(where + ".", binding, {"name", "subjects", "role", "persist"})
            role = binding.get("role") or {}
            self.unknown(where + ".role.", role, {"name", "resources", "verbs", "api_groups", "api_group"})
            if "api_group" in role:
                self.note(f"{where}.role.api_group {role['api_group']!r}: ignored; the rule uses api_groups")
            rule = {
                "api_groups": list(role.get("api_groups") or [""]),
                "resources": list(role.get("resources") or []),
                "verbs": list(role.get("verbs") or []),
            }
            subjects = [
                {k: s[k] for k in ("kind", "name", "namespace") if s.get(k)}
                for s in binding.get("subjects") or []
            ]
            for subject in subjects:
                if subject.get("kind") == "ServiceAccount" and subject.get("name") == "default":
                    subject["name"] = "workspace"
                    self.service_account = True
                    self.note(
                        f"{where}.subjects: the 'default' ServiceAccount is now 'workspace',"
                        " the account the pod runs as here (service_account_token: true"
                        " mounts its token; without it the pod has no API access)"
                    )
            role_name = _name(role.get("name"), f"role-{n}")
            if role_name != role.get("name"):
                self.note(f"{where}.role: name {role.get('name')!r} is now {role_name!r}")
            result.append(
                {
                    "name": self._rename(where, binding.get("name"), f"binding-{n}"),
                    "role": {"name": role_name, "rules": [rule]},
                    "subjects": subjects,
                    "persist": bool(binding.get("persist", True)),
                }
            )
        return result

    def _image_pull_secrets(self, items: list) -> list[str]:
        names = []
        for n, secret in enumerate(items):
            where = f"image_pull_secrets[{n}]"
            if not isinstance(secret, Mapping) or not secret.get("name"):
                self.note(f"{where}: no name; dropped (there is no Secret to refer to)")
                continue
            name = self._rename(where, secret.get("name"), f"pull-secret-{n}")
            names.append(name)
            if secret.get("data"):
                self.note(
                    f"{where} ({name!r}): the inline credentials in 'data' were NOT carried"
                    " over (apex-hub never keeps credentials in its configuration); create a"
                    f" Secret named {name!r} of type kubernetes.io/dockerconfigjson in the hub"
                    " namespace and list its name here; it is copied to each user's namespace"
                )
            if "persist" in secret:
                self.note(f"{where}.persist: not needed; copies follow the hub's Secret")
            self.unknown(where + ".", secret, {"name", "data", "persist"})
        return names

    def _manifests(self, items: list) -> list[dict]:
        result = []
        for n, manifest in enumerate(items):
            where = f"manifests[{n}]"
            self.unknown(where + ".", manifest, {"name", "key", "content", "persist"})
            if manifest.get("content") in (None, "", []):
                self.note(f"{where}: no content; not converted")
                continue
            if manifest.get("key"):
                self.note(f"{where}.key: not needed; ignored")
            content = self._manifest_content(where, manifest["content"])
            if content in (None, []):
                continue
            name = _name(manifest.get("name"), f"manifest-{n}")
            if name != manifest.get("name"):
                self.note(f"{where}: name {manifest.get('name')!r} is now {name!r}")
            result.append({"name": name, "content": content, "persist": bool(manifest.get("persist", True))})
        return result

    def _manifest_content(self, where: str, content: Any) -> Any:
        """Unwrap Crossplane Objects, drop other cluster-scoped objects, name unusual kinds."""
        if isinstance(content, str):
            try:
                docs = [d for d in yaml.safe_load_all(content) if d is not None]
            except yaml.YAMLError:
                return content
            was_text = True
        else:
            docs, was_text = (content if isinstance(content, list) else [content]), False
        kept = []
        for number, doc in enumerate(docs):
            if not isinstance(doc, Mapping):
                kept.append(doc)
                continue
            at = f"{where}.content[{number}]"
            api, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
            inner = ((doc.get("spec") or {}).get("forProvider") or {}).get("manifest")
            if (api.split("/")[0], kind) == _CROSSPLANE_OBJECT and isinstance(inner, Mapping):
                self.note(
                    f"{at}: Crossplane Object {_meta_name(doc)!r} (cluster-scoped) is"
                    f" replaced by the {inner.get('kind')} it wraps, created in the user's"
                    " namespace itself"
                )
                doc, api, kind = inner, str(inner.get("apiVersion", "")), str(inner.get("kind", ""))
            if api.split("/")[0].endswith("crossplane.io") or cluster_scoped(api, kind):
                self.note(
                    f"{at}: NOT CONVERTED: {kind} {_meta_name(doc)!r} ({api}) is a"
                    " cluster-scoped object, which apex-hub never creates for a user (it"
                    " would reach beyond the user's namespace); deploy it another way"
                )
                continue
            if kind not in DEFAULT_MANIFEST_KINDS:
                self.note(
                    f"{at}: kind {kind} is not in the spawner's default manifest_kinds; the"
                    f" operator must allow it (c.APExSpawner.manifest_kinds) or the spawn is"
                    " refused"
                )
            kept.append(doc)
        if was_text:
            return (
                content
                if len(kept) == len(docs) and kept == docs
                else (yaml.safe_dump_all(kept, sort_keys=False) if kept else None)
            )
        return kept if isinstance(content, list) else (kept[0] if kept else None)

    def _placeholders(self, obj: Any, path: tuple) -> Any:
        if isinstance(obj, Mapping):
            return {k: self._placeholders(v, path + (k,)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._placeholders(v, path + (n,)) for n, v in enumerate(obj)]
        if not isinstance(obj, str):
            return obj
        where = _path_text(path)
        templated = _is_templated(path)
        if templated and has_placeholders(obj.replace("{{", "\0").replace("}}", "\0")):
            self.note(
                f"{where}: a literal {{username}}/{{namespace}}/{{profile}} (ApplicationHub"
                " left it alone) is escaped ({{{{namespace}}}}) so that it stays literal"
            )
        if "{{" not in obj and "{%" not in obj:
            return escape(obj) if templated else obj
        if _APPHUB_NAMESPACE.search(obj):
            obj = _APPHUB_NAMESPACE.sub("{{ namespace }}", obj)
            self.note(
                f"{where}: ApplicationHub's namespace 'jupyter-<user name>' is now"
                " {namespace}, the user's namespace here"
            )
        for statement in _JINJA_STATEMENT.findall(obj):
            self.note(f"{where}: Jinja statement {statement!r} is not supported; edit by hand")

        def replace(match: re.Match) -> str:
            expression = re.sub(r"\s+", "", match.group(1))
            mapped = _EXPRESSIONS.get(expression) or _EXPRESSIONS.get(match.group(1).strip())
            if mapped is None:
                self.note(
                    f"{where}: placeholder {match.group(0)!r} has no equivalent; kept as is, edit by hand"
                )
                return match.group(0)
            return mapped

        pieces, last = [], 0
        for match in _JINJA_EXPRESSION.finditer(obj):
            literal = obj[last : match.start()]
            pieces += [escape(literal) if templated else literal, replace(match)]
            last = match.end()
        literal = obj[last:]
        text = "".join(pieces + [escape(literal) if templated else literal])
        if has_placeholders(text) and not templated:
            self.note(f"{where}: placeholders are not substituted in this field")
        return text


def convert(data: Any) -> tuple[dict[str, Any], list[str]]:
    """Convert a parsed EOEPCA ``config.yml``; return ``(our catalogue dict, report)``."""
    if not isinstance(data, Mapping) or not isinstance(data.get("profiles"), list):
        raise CatalogueError(["not an EOEPCA ApplicationHub config: no 'profiles' list"])
    report = [
        f"{key}: top-level field with no equivalent; not converted" for key in data if key != "profiles"
    ]
    taken: set[str] = set()
    profiles = []

    for index, raw in enumerate(data["profiles"]):
        if not isinstance(raw, Mapping):
            report.append(f"profiles[{index}]: not a mapping; skipped")
            continue
        converter = _Converter(index, raw, taken)
        profiles.append(converter.convert())
        report.extend(converter.notes)
    if profiles:
        report.append(
            f"{WORKSPACE_VOLUME_NOTE}: workspace_volume: false: ApplicationHub mounts only"
            " a profile's own volumes, so converted profiles do not get the operator's"
            " default workspace claim at /home/jovyan (set it to true to add it)"
        )
    return {"profiles": profiles}, report
