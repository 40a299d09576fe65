"""APExSpawner: per-user workspaces on Kubernetes, from a group-gated profiles catalogue.

``c.JupyterHub.spawner_class = "apex"`` selects it (entry point). The pieces:
``workspace`` (profile → manifests, pure), ``kube`` (server-side apply, retries),
``labels`` (ownership), ``conda_build`` (the init step that builds environments)
and ``spawner`` (the KubeSpawner subclass that ties them together).
"""

from .kube import Kube, KubeError
from .spawner import APExSpawner
from .workspace import Owner, Plan, Settings, WorkspaceError, plan_workspace

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
