"""Fixtures of the real lane (skipped unless --cluster real or kubeconfig:PATH; see tests/conftest.py)."""

import pytest
from kubespawner import KubeSpawner

from tests.helpers.cluster import NodeProcess


@pytest.fixture(scope="session")
def node(real_cluster, tmp_path_factory):
    """kubesim's process kubelet as the cluster's node, for the session."""
    proc = NodeProcess(real_cluster, tmp_path_factory.mktemp("node"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def hub(real_cluster, monkeypatch):
    """The cluster as the hub sees it: in-process clients (KubeSpawner's) use the hub's token."""
    monkeypatch.setenv("KUBECONFIG", str(real_cluster.hub_kubeconfig))
    real_cluster.make_default()
    yield real_cluster
    await KubeSpawner._stop_all_reflectors()


@pytest.fixture
async def admin(real_cluster):
    async with await real_cluster.admin_client() as api:
        yield api
