"""The accounting service's pod watch on a real API server, as the hub's ServiceAccount: a
workspace started by APExSpawner (run by kubesim's node) becomes a ledger session with its claim's
size (the hub's "get persistentvolumeclaims"), and its stop closes the session."""

import asyncio

import pytest
from kubernetes_asyncio import client

from apex_hub.services.accounting.db import Ledger
from apex_hub.services.accounting.service import AccountingService, kube_factory
from apex_hub.services.culler.service import HubClient
from tests.helpers.wait import until
from tests.realcluster.test_spawner_real import catalogue, pull_secret, spawner, user  # noqa: F401

pytestmark = pytest.mark.realcluster


async def test_a_real_workspace_is_accounted_and_closed(hub, node, admin, tmp_path):
    name = user()
    svc = AccountingService(
        Ledger(f"sqlite:///{tmp_path}/ledger.sqlite"),
        hub=HubClient("http://127.0.0.1:9", "unused", tries=1),
        kube=kube_factory(str(hub.hub_kubeconfig)),
        interval=3600,
        watch_timeout=30,
    )
    svc.groups = {name: ["apex-small"]}  # what the hub round would have said
    task = asyncio.create_task(svc.watch_pods())
    s = spawner(hub, name, catalogue())
    try:
        await s.start()
        [session] = await until(lambda: [x for x in svc.ledger.sessions() if x["pod"] == s.pod_name])
        assert session["group"] == "apex-small" and session["stop"] is None
        claims = (await client.CoreV1Api(admin).list_namespaced_persistent_volume_claim(s.namespace)).items
        sizes = sorted(c.spec.resources.requests["storage"] for c in claims)
        assert sizes == ["10Gi", "1Gi"]  # the workspace volume and the profile's scratch
        assert session["pvc_bytes"] == 11 * 2**30  # read as the hub ("get persistentvolumeclaims")
        assert session["cpu"] > 0
        await s.stop()
        await until(lambda: svc.ledger.session(session["id"])["stop"] is not None)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        s.delete_namespace_on_user_delete = True
        await s.delete_forever()
