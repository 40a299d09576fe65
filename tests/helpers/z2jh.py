"""The Zero-to-JupyterHub 4.4.0 chart's configuration path, for tests: defaults, merge, jupyterhub_config.

The chart files are not in this repository. What is here is our own reading of what chart 4.4.0 does
with the keys that decide whether apex-hub works (read from the chart's values.yaml and
files/hub/jupyterhub_config.py of tag 4.4.0):

* ``CHART_DEFAULTS``: the chart's default values for those keys;
* :func:`merge_values`: Helm's merge of an operator's values over them (maps merged key by key, a
  ``null`` deletes the default, anything else replaces it);
* :func:`chart_config`: the hub's ``jupyterhub_config.py`` for those keys, in the chart's order —
  its own KubeSpawner settings from ``singleuser.*`` (``profile_list`` from ``singleuser.profileList``,
  the privileged ``block-cloud-metadata`` init container from ``singleuser.cloudMetadata``, the user
  scheduler's name, the 1G memory guarantee, its common labels), ``services``/``load_roles`` reset then
  filled from ``cull``, ``hub.services`` and ``hub.loadRoles``, then ``hub.config`` section by section,
  then every ``hub.extraConfig`` snippet in key order, each ``exec``'d with the chart's globals.

A test that passes here exercises the same traits in the same order as the chart; keys we do not model
are listed in ``UNMODELLED`` so that a reader knows where the emulation stops.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from traitlets.config import Config

CHART_VERSION = "4.4.0"
ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "helm-values" / "values.yaml"

#: Chart 4.4.0's defaults for the keys the emulation models (values.yaml of the chart).
CHART_DEFAULTS: dict[str, Any] = {
    "fullnameOverride": "",
    "hub": {
        "config": {"JupyterHub": {"admin_access": True, "authenticator_class": "dummy"}},
        "services": {},
        "loadRoles": {},
        "db": {"type": "sqlite-pvc"},
        "extraConfig": {},
        "extraFiles": {},
        "networkPolicy": {"enabled": True, "interNamespaceAccessLabels": "ignore"},
        "consecutiveFailureLimit": 5,
    },
    "singleuser": {
        "profileList": [],
        "cloudMetadata": {"blockWithIptables": True, "ip": "169.254.169.254"},
        "networkTools": {
            "image": {"name": "quay.io/jupyterhub/k8s-network-tools", "tag": CHART_VERSION},
            "resources": {},
        },
        "memory": {"limit": None, "guarantee": "1G"},
        "cpu": {"limit": None, "guarantee": None},
        "extraLabels": {"hub.jupyter.org/network-access-hub": "true"},
        "extraAnnotations": {},
        "startTimeout": 300,
        "events": True,
        "uid": 1000,
        "fsGid": 100,
        "cmd": "jupyterhub-singleuser",
        "defaultUrl": None,
        "allowPrivilegeEscalation": False,
        "image": {"name": "quay.io/jupyterhub/k8s-singleuser-sample", "tag": CHART_VERSION},
        "storage": {"type": "dynamic", "capacity": "10Gi", "homeMountPath": "/home/jovyan"},
        "networkPolicy": {"enabled": True},
        "initContainers": [],
        "extraContainers": [],
    },
    "scheduling": {"userScheduler": {"enabled": True}, "podPriority": {"enabled": False}},
    "cull": {
        "enabled": True,
        "users": False,
        "adminUsers": True,
        "removeNamedServers": False,
        "timeout": 3600,
        "every": 600,
        "concurrency": 10,
        "maxAge": 0,
    },
    "debug": {"enabled": False},
}

UNMODELLED = (
    "proxy.*",
    "ingress.*",
    "prePuller.*",
    "singleuser.storage.dynamic/static details",
    "scheduling.userPods.nodeAffinity",
    "imagePullSecret(s)",
    "hub.jupyter_config.d files",
)


def merge_values(defaults: dict, values: dict) -> dict:
    """Helm's coalescing of user values over chart defaults."""
    out = copy.deepcopy(defaults)
    for key, value in (values or {}).items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_values(path: Path = VALUES) -> dict:
    """Our helm-values merged over the chart's defaults."""
    return merge_values(CHART_DEFAULTS, yaml.safe_load(path.read_text()))


def _get(values: dict, dotted: str, default: Any = None) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _set_if_not_none(section: Any, trait: str, value: Any) -> None:
    if value is not None:
        section[trait] = copy.deepcopy(value)


def write_extra_files(values: dict, directory: str | None = None) -> dict[str, str]:
    """Write every ``hub.extraFiles`` item to ``directory``: {mountPath: local path}."""
    directory = directory or tempfile.mkdtemp(prefix="apex-extrafiles-")
    mounts = {}
    for key, item in (_get(values, "hub.extraFiles") or {}).items():
        local = Path(directory) / key
        local.write_text(item["stringData"])
        mounts[item["mountPath"]] = str(local)
    return mounts


def chart_config(
    values: dict, *, mounts: dict[str, str] | None = None, release: str = "apex", c: Config | None = None
) -> Config:
    """The Config chart 4.4.0's jupyterhub_config.py builds from merged ``values``.

    ``mounts`` maps ``hub.extraFiles`` mount paths to local files: references to a mount path in the
    snippets are pointed there (the chart mounts them into the hub container).
    """
    c = c if c is not None else Config()
    hub, single = values.get("hub", {}), values.get("singleuser", {})
    # -- the chart's own settings (before hub.config) ----------------------------------------------
    c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.last_activity_interval = 60
    db = hub.get("db", {})
    if db.get("type") == "sqlite-pvc":
        c.JupyterHub.db_url = "sqlite:///jupyterhub.sqlite"
    elif db.get("type") == "sqlite-memory":
        c.JupyterHub.db_url = "sqlite://"
    else:
        _set_if_not_none(c.JupyterHub, "db_url", db.get("url"))
    c.JupyterHub.hub_bind_url = "http://:8081"
    c.JupyterHub.hub_connect_url = "http://hub:8081"
    c.KubeSpawner.common_labels = {
        "app": "jupyterhub",
        "app.kubernetes.io/name": "jupyterhub",
        "app.kubernetes.io/instance": release,
        "release": release,
        "heritage": "jupyterhub",
        "chart": f"jupyterhub-{CHART_VERSION}",
        "helm.sh/chart": f"jupyterhub-{CHART_VERSION}",
        "app.kubernetes.io/managed-by": "kubespawner",
    }
    c.KubeSpawner.namespace = os.environ.get("POD_NAMESPACE", "default")
    _set_if_not_none(c.Spawner, "consecutive_failure_limit", hub.get("consecutiveFailureLimit"))
    for trait, key in (
        ("start_timeout", "startTimeout"),
        ("events_enabled", "events"),
        ("extra_labels", "extraLabels"),
        ("extra_annotations", "extraAnnotations"),
        ("uid", "uid"),
        ("fs_gid", "fsGid"),
        ("service_account", "serviceAccountName"),
        ("node_selector", "nodeSelector"),
        ("init_containers", "initContainers"),
        ("extra_containers", "extraContainers"),
        ("mem_limit", "memory.limit"),
        ("mem_guarantee", "memory.guarantee"),
        ("cpu_limit", "cpu.limit"),
        ("cpu_guarantee", "cpu.guarantee"),
        ("environment", "extraEnv"),
        ("profile_list", "profileList"),
        ("extra_pod_config", "extraPodConfig"),
    ):
        _set_if_not_none(c.KubeSpawner, trait, _get(single, key))
    image = _get(single, "image.name")
    if image:
        tag = _get(single, "image.tag")
        c.KubeSpawner.image = f"{image}:{tag}" if tag else image
    c.KubeSpawner.allow_privilege_escalation = single.get("allowPrivilegeEscalation")
    if _get(values, "scheduling.userScheduler.enabled"):
        c.KubeSpawner.scheduler_name = f"{release}-user-scheduler"
    if _get(single, "storage.type") == "dynamic":
        c.KubeSpawner.storage_pvc_ensure = True
        c.KubeSpawner.storage_capacity = _get(single, "storage.capacity")
    c.JupyterHub.services = []
    c.JupyterHub.load_roles = []
    cull = values.get("cull", {})
    if cull.get("enabled"):
        c.JupyterHub.services.append(
            {
                "name": "cull-idle",
                "command": ["python3", "-m", "jupyterhub_idle_culler", f"--timeout={cull.get('timeout')}"],
            }
        )
        c.JupyterHub.load_roles.append(
            {
                "name": "cull-idle",
                "services": ["cull-idle"],
                "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            }
        )
    for name, service in (hub.get("services") or {}).items():
        c.JupyterHub.services.append({"name": name, **{k: v for k, v in service.items() if k != "apiToken"}})
    for name, role in (hub.get("loadRoles") or {}).items():
        c.JupyterHub.load_roles.append({"name": name, **role})
    if "cmd" in single:
        c.Spawner.cmd = single["cmd"]
    _set_if_not_none(c.Spawner, "default_url", single.get("defaultUrl"))
    metadata = single.get("cloudMetadata") or {}
    if metadata.get("blockWithIptables") is True:
        tools = _get(single, "networkTools.image") or {}
        c.KubeSpawner.init_containers = list(c.KubeSpawner.get("init_containers") or []) + [
            {
                "name": "block-cloud-metadata",
                "image": f"{tools.get('name')}:{tools.get('tag')}",
                "command": [
                    "iptables",
                    "--append",
                    "OUTPUT",
                    "--protocol",
                    "tcp",
                    "--destination",
                    metadata["ip"],
                    "--destination-port",
                    "80",
                    "--jump",
                    "DROP",
                ],
                "securityContext": {
                    "privileged": True,
                    "runAsUser": 0,
                    "capabilities": {"add": ["NET_ADMIN"]},
                },
            }
        ]
    if _get(values, "debug.enabled"):
        c.JupyterHub.log_level = "DEBUG"
    c.CryptKeeper.keys = ["cd" * 32]  # the chart seeds a key of its own in its Secret
    # -- hub.config, section by section (the chart drops seeded secrets from it) --------------------
    for section, settings in copy.deepcopy(hub.get("config") or {}).items():
        if not section[:1].isupper():
            raise SystemExit(f"FATAL: Invalid hub.config section name: {section}")
        if section == "JupyterHub":
            for secret in ("proxy_auth_token", "cookie_secret", "services"):
                settings.pop(secret, None)
        c[section].update(settings)
    # -- hub.extraConfig, in key order, exec'd with the config file's globals -----------------------
    namespace = {"c": c, "os": os, "get_config": lambda key, default=None: _get(values, key, default)}
    for key, snippet in sorted((hub.get("extraConfig") or {}).items()):
        for mount_path, local in (mounts or {}).items():
            snippet = snippet.replace(mount_path, local)
        exec(compile(snippet, f"hub.extraConfig.{key}", "exec"), namespace)
    return c


__all__ = [
    "CHART_DEFAULTS",
    "CHART_VERSION",
    "chart_config",
    "load_values",
    "merge_values",
    "write_extra_files",
]
