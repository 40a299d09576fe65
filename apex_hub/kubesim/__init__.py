"""kubesim: a local Kubernetes API server and kubelet, for tests, benchmarks and local mode.

Real HTTP on loopback, spoken to by kubernetes_asyncio, kubectl and KubeSpawner as to a
cluster. See :class:`KubeSim` and the README section "kubesim".
"""

from .errors import ApiError
from .faults import Fault, Faults
from .registry import Registry, ResourceType
from .sim import KubeSim
from .store import Store

__all__ = ["ApiError", "Fault", "Faults", "KubeSim", "Registry", "ResourceType", "Store"]
