"""APExSpawner: per-user workspaces on Kubernetes, from a group-gated profiles catalogue.

``c.JupyterHub.spawner_class = "apex"`` selects it (entry point). The pieces:
``workspace`` (profile → manifests, pure), ``kube`` (server-side apply, retries),
``labels`` (ownership), ``conda_build`` (the init step that builds environments)
and ``spawner`` (the KubeSpawner subclass that ties them together).
"""

from __future__ import annotations

import importlib
from typing import Any

#: each public name and its module, imported on first use: ``apex_hub.spawner.escalation`` (the
#: catalogue checker's) or ``.conda_build`` then do not pull in KubeSpawner and kubernetes_asyncio
_LAZY = {
    "APExSpawner": "spawner",
    "Kube": "kube",
    "KubeError": "kube",
    "Owner": "workspace",
    "Plan": "workspace",
    "Settings": "workspace",
    "WorkspaceError": "workspace",
    "plan_workspace": "workspace",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "APExSpawner",
    "Kube",
    "KubeError",
    "Owner",
    "Plan",
    "Settings",
    "WorkspaceError",
    "plan_workspace",
]
