"""APExSpawner: per-user workspaces on Kubernetes.

PLACEHOLDER until the spawner issue lands: ``APExSpawner`` is currently plain
KubeSpawner with no additions, registered under the ``apex`` entry point so that
``c.JupyterHub.spawner_class = "apex"`` already resolves.
"""

from kubespawner import KubeSpawner


class APExSpawner(KubeSpawner):
    """Placeholder: behaves exactly like KubeSpawner for now (see module docstring)."""


__all__ = ["APExSpawner"]
