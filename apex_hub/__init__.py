"""apex-hub: ESA APEx User Workspaces on Zero-to-JupyterHub.

Subpackages, one per concern:

- ``apex_hub.spawner``  – APExSpawner (KubeSpawner subclass), per-user workspaces
- ``apex_hub.kubesim``  – local Kubernetes API server + kubelet simulator (tests, benchmarks, local mode)
"""

__version__ = "0.1.0.dev0"
