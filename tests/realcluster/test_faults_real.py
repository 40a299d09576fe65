"""Faults between the hub and a real API server: connections refused and cut under the spawner.

A real kube-apiserver cannot be told to fail; a TCP proxy in front of it (tests/helpers/faultproxy.py)
closes connections the way a load balancer or an API server restart does. The spawner retries, and
nothing the user had is lost.
"""

import pytest
from kubespawner.clients import load_config

from apex_hub.spawner import labels as L
from tests.helpers.faultproxy import FaultProxy
from tests.realcluster.test_spawner_real import (  # noqa: F401 - pull_secret is an autouse fixture
    _gone,
    catalogue,
    eventually,
    pull_secret,
    read,
    spawner,
    user,
)

pytestmark = pytest.mark.realcluster


@pytest.fixture
def fresh_client_config():
    """KubeSpawner caches its global client configuration by host: forget it before and after, so
    that the proxy's address never outlives this test."""
    load_config.cache_clear()
    yield
    load_config.cache_clear()


async def test_connections_refused_and_cut_under_the_spawner_lose_nothing(
    hub, node, admin, fresh_client_config
):
    async with FaultProxy(hub.url) as proxy:
        s = spawner(hub, user(), catalogue(), k8s_api_host=proxy.url)
        ns = s.namespace
        try:
            proxy.drop(3)  # the first three connections of the spawn are closed at once
            url = await s.start()
            assert url and proxy.dropped == 3
            pod = await read(admin, f"/api/v1/namespaces/{ns}/pods/{s.pod_name}")
            assert pod["status"]["phase"] == "Running"
            cms = await read(
                admin, f"/api/v1/namespaces/{ns}/configmaps?labelSelector={L.MANAGED_BY}%3D{L.MANAGER}"
            )
            assert {"bashrc", "settings"} <= {c["metadata"]["name"] for c in cms["items"]}
            claims = await read(admin, f"/api/v1/namespaces/{ns}/persistentvolumeclaims")
            assert claims["items"]

            # every open connection (pooled ones, the watches) cut, the next two refused: the stop
            # still removes the pod and keeps the claims and the persistent ConfigMap
            proxy.cut()
            proxy.drop(2)
            await s.stop()
            await eventually(lambda: _gone(admin, f"/api/v1/namespaces/{ns}/pods/{s.pod_name}"))
            after = await read(admin, f"/api/v1/namespaces/{ns}/persistentvolumeclaims")
            assert [c["metadata"]["uid"] for c in after["items"]] == [
                c["metadata"]["uid"] for c in claims["items"]
            ]
            kept = await read(admin, f"/api/v1/namespaces/{ns}/configmaps/settings")
            assert kept["data"] == {"s.json": "{}"}, (
                "the persistent ConfigMap must survive the faults and the stop"
            )
            assert proxy.dropped == 5

            # a second spawn through the same faults finds everything in place and patches it
            proxy.cut()
            proxy.drop(1)
            assert await s.start()
            again = await read(admin, f"/api/v1/namespaces/{ns}/persistentvolumeclaims")
            assert [c["metadata"]["uid"] for c in again["items"]] == [
                c["metadata"]["uid"] for c in claims["items"]
            ]
        finally:
            await s.stop()
            s.delete_namespace_on_user_delete = True
            await s.delete_forever()
