"""Issue 14.4 and 14.5: profile manifests are namespaced and per server.

A cluster-scoped object would be one object for every user (bob's spawn takes over
alice's, bob's stop deletes it); a manifest named as written would be shared by a
user's servers (stopping ``run2`` deleted what the default server still used).
"""

from __future__ import annotations

import copy

import pytest
from kubernetes_asyncio import client
from tornado.web import HTTPError

from apex_hub.profiles import Catalogue, CatalogueError
from apex_hub.spawner import labels as L
from tests.helpers.spawner import CATALOGUE, make_spawner, obj

RBAC = "rbac.authorization.k8s.io"


def with_manifests(*docs, **profile_fields):
    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"][0]["manifests"] = [{"name": f"m{n}", "content": d} for n, d in enumerate(docs)]
    catalogue["profiles"][0].update(profile_fields)
    return catalogue


@pytest.mark.parametrize(
    "api_version, kind",
    [
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("v1", "Namespace"),
        ("v1", "PersistentVolume"),
        ("storage.k8s.io/v1", "StorageClass"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("cert-manager.io/v1", "ClusterIssuer"),
    ],
)
def test_known_cluster_scoped_kinds_are_refused_at_catalogue_load(api_version, kind):
    data = with_manifests({"apiVersion": api_version, "kind": kind, "metadata": {"name": "shared"}})
    with pytest.raises(CatalogueError) as e:
        Catalogue.from_dict(data)
    (problem,) = e.value.problems
    assert problem.startswith("profile 'lab': manifests[0] ('m0').content: ")
    assert f"{kind} ({api_version}) is cluster-scoped" in problem


async def register_cluster_crd(sim):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "releases.example.org"},
        "spec": {
            "group": "example.org",
            "scope": "Cluster",
            "names": {"plural": "releases", "singular": "release", "kind": "Release"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    async with sim.api_client() as api:
        await client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)


async def test_a_crd_the_cluster_serves_cluster_wide_is_refused_at_spawn_before_any_write(ksim, caplog):
    await register_cluster_crd(ksim)
    release = {
        "apiVersion": "example.org/v1",
        "kind": "Release",
        "metadata": {"name": "shared"},
        "spec": {"chart": "x"},
    }
    catalogue = with_manifests(release)
    Catalogue.from_dict(catalogue)  # an unknown kind passes the catalogue: discovery decides
    spawner = make_spawner(
        ksim, "bob", catalogue=catalogue, manifest_kinds=["ConfigMap", "example.org/v1/Release"]
    )
    ksim.reset_log()
    with pytest.raises(HTTPError) as e:
        await spawner.start()
    assert e.value.status_code == 500
    assert (
        "Profile 'lab' cannot be started: its manifest Release 'shared' (example.org/v1) is cluster-scoped"
    ) in e.value.log_message
    assert "profile lab: Release shared (example.org/v1) is cluster-scoped" in caplog.text
    assert not [r for r in ksim.requests if r.verb in ("create", "patch", "update")]
    await spawner.stop()


async def test_named_servers_get_their_own_manifest_objects_and_references_resolve(ksim):
    docs = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "dask-config"},
            "data": {"workers": "2"},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "dask"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "dask"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "dask"},
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "dask"},
            "subjects": [{"kind": "ServiceAccount", "name": "dask"}],
        },
    ]
    catalogue = with_manifests(
        *docs,
        env={"WORKERS": {"from_config_map": {"name": "dask-config", "key": "workers"}}},
        env_from_config_maps=["dask-config"],
    )
    default = make_spawner(ksim, "carl", catalogue=catalogue)
    run2 = make_spawner(ksim, "carl", server_name="run2", catalogue=catalogue)
    await default.start()
    await run2.start()
    ns = default.namespace
    assert obj(ksim, "configmaps", ns, "dask-config")["metadata"]["labels"][L.SERVER] == "default"
    own = obj(ksim, "configmaps", ns, "dask-config-named-run2")
    assert own["metadata"]["labels"][L.SERVER] == "named-run2" and own["data"] == {"workers": "2"}
    binding = obj(ksim, "rolebindings", ns, "dask-named-run2", RBAC)
    assert binding["roleRef"]["name"] == "dask-named-run2"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dask-named-run2"}]
    assert obj(ksim, "serviceaccounts", ns, "dask-named-run2") is not None
    container = obj(ksim, "pods", ns, run2.pod_name)["spec"]["containers"][0]
    workers = next(e for e in container["env"] if e["name"] == "WORKERS")
    assert workers["valueFrom"]["configMapKeyRef"]["name"] == "dask-config-named-run2"
    assert {"configMapRef": {"name": "dask-config-named-run2"}} in container["envFrom"]

    await run2.stop()  # deletes only what is run2's
    assert obj(ksim, "configmaps", ns, "dask-config-named-run2") is None
    assert obj(ksim, "configmaps", ns, "dask-config")["data"] == {"workers": "2"}
    assert obj(ksim, "rolebindings", ns, "dask", RBAC)["roleRef"]["name"] == "dask"
    await default.stop()
