"""helm-values/admission-policy.yaml on a real API server: the hub writes only where it manages.

The hub's token (a ServiceAccount bound to exactly what helm-values/ grants) is refused, with
the policy's message, in kube-system, in a namespace it did not create, on a foreign namespace's
labels; it may write in a namespace carrying the managed-by label, and in its own.
"""

import asyncio
import json
import uuid

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from apex_hub.spawner.kube import Kube
from tests.helpers.cluster import HUB_NAMESPACE, log

pytestmark = pytest.mark.realcluster
POLICY = "ValidatingAdmissionPolicy 'apex-hub-confinement' with binding 'apex-hub-confinement' denied request"
MANAGED = {"app.kubernetes.io/managed-by": "apex-hub"}


def configmap(namespace, name="probe"):
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"a": "b"},
    }


async def refused(call) -> str:
    with pytest.raises(ApiException) as info:
        await call
    assert info.value.status == 403, info.value.body
    return json.loads(info.value.body)["message"]


@pytest.fixture
async def hub_kube(real_cluster):
    async with await real_cluster.hub_client() as api:
        yield Kube(api, log, retry_timeout=10)


@pytest.fixture
async def foreign(admin):
    """A namespace someone else made (no managed-by label), with a Secret in it."""
    v1 = client.CoreV1Api(admin)
    name = f"team-{uuid.uuid4().hex[:8]}"
    await v1.create_namespace({"metadata": {"name": name}})
    await v1.create_namespaced_secret(
        name, {"metadata": {"name": "db"}, "stringData": {"password": "s3cret"}}
    )
    yield name
    await v1.delete_namespace(name)


async def test_the_hub_cannot_write_in_kube_system(hub_kube):
    message = await refused(hub_kube.apply(configmap("kube-system")))
    assert POLICY in message and "not in kube-system" in message, message
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x", "namespace": "kube-system"},
        "spec": {"containers": [{"name": "x", "image": "busybox"}]},
    }
    message = await refused(
        hub_kube._call("POST", "/api/v1/namespaces/kube-system/pods", body=pod, what="create a pod")
    )
    assert POLICY in message, message


async def test_the_hub_cannot_patch_and_so_read_a_foreign_secret(hub_kube, foreign):
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": foreign},
        "stringData": {"password": "mine now"},
    }
    message = await refused(hub_kube.apply(secret))
    assert POLICY in message and f"not in {foreign}" in message, message
    assert "s3cret" not in message


async def test_the_hub_cannot_take_over_or_delete_a_foreign_namespace(hub_kube, foreign):
    takeover = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": foreign, "labels": MANAGED}}
    message = await refused(hub_kube.apply(takeover))
    assert POLICY in message and f"(namespace {foreign})" in message, message
    message = await refused(hub_kube._call("DELETE", f"/api/v1/namespaces/{foreign}", what="delete"))
    assert POLICY in message, message
    message = await refused(hub_kube._call("DELETE", "/api/v1/namespaces/kube-node-lease", what="delete"))
    assert POLICY in message, message


async def test_the_hub_writes_in_namespaces_it_manages_and_cannot_unlabel_them(hub_kube, admin):
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apex-confined", "labels": MANAGED}}
    await hub_kube.apply(ns)
    try:
        created = await hub_kube.apply(configmap("apex-confined"))
        assert created["data"] == {"a": "b"}
        await hub_kube.apply(configmap(HUB_NAMESPACE))  # its own namespace too
        unlabelled = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "apex-confined", "labels": {"app.kubernetes.io/managed-by": "other"}},
        }
        message = await refused(hub_kube.apply(unlabelled))
        assert "may not remove that label" in message, message
        message = await refused(
            hub_kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apex-unlabelled"}})
        )
        assert POLICY in message, message
    finally:
        await client.CoreV1Api(admin).delete_namespace("apex-confined")


async def test_cluster_scoped_writes_are_refused(hub_kube):
    # RBAC already refuses a ClusterRole to the hub; the policy refuses it too (defence in depth
    # against a wider ClusterRole an operator might add)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "mine"},
        "rules": [],
    }
    message = await refused(hub_kube.apply(role))
    assert "forbidden" in message.lower(), message


async def test_exec_granted_by_an_operator_is_still_confined(real_cluster, admin, foreign):
    """rbac.yaml tells operators which rules EOEPCA profiles need (pods/exec among them): the
    policy confines those CONNECT requests as well."""
    rbac = client.RbacAuthorizationV1Api(admin)
    name = f"apex-test-exec-{uuid.uuid4().hex[:6]}"
    await rbac.create_cluster_role(
        {
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]}],
        }
    )
    await rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": HUB_NAMESPACE}],
        }
    )
    try:
        async with await real_cluster.hub_client() as api:
            for namespace in (foreign, "kube-system"):
                for _ in range(240):  # RBAC sees the new binding within moments
                    with pytest.raises(ApiException) as info:
                        await api.call_api(
                            f"/api/v1/namespaces/{namespace}/pods/any/exec",
                            "POST",
                            query_params=[("command", "true"), ("stdout", "true")],
                            auth_settings=["BearerToken"],
                            response_types_map={},
                            header_params={"Accept": "application/json"},
                        )
                    if "cannot create resource" not in (info.value.body or ""):
                        break
                    await asyncio.sleep(0.5)
                message = json.loads(info.value.body)["message"]
                assert info.value.status == 403 and POLICY in message, message
    finally:
        await rbac.delete_cluster_role_binding(name)
        await rbac.delete_cluster_role(name)
