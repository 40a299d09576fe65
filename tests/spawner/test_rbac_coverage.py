"""helm-values/rbac.yaml covers every request APExSpawner makes, and nothing it does not.

APExSpawner runs in process on kubesim through a realistic lifecycle (a profile
with every kind of workspace object; start, stop, start, stop; a named server and
its deletion; the user's deletion with the namespace). Every request in kubesim's
log is then put to the RBAC rules the hub holds: the ClusterRole of rbac.yaml
(cluster-wide) plus, in the hub's own namespace, the Role the Z2JH chart gives it.
In reverse, every permission of the ClusterRole must have been used in the run or
be listed, with its reason, in ``NOT_REQUESTED`` - so the role stays least-privilege.
"""

from __future__ import annotations

import copy
from collections import Counter

from tests.helpers.spawner import make_spawner, obj, seed_hub_secret
from tests.test_helm_values import allows, cluster_role_rules, grants

HUB_NAMESPACE = "jhub"
RBAC_GROUP = "rbac.authorization.k8s.io"
#: The hub's Role in its own namespace, as Z2JH 4.x templates/hub/rbac.yaml ships it.
Z2JH_HUB_ROLE = [
    {
        "apiGroups": [""],
        "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
        "verbs": ["get", "watch", "list", "create", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
]
#: Permissions of the ClusterRole that no request of the run uses, and why they are there.
NOT_REQUESTED = {
    # Not a request verb: the API server checks it when the hub writes a RoleBinding
    # to a Role (profiles' role_bindings).
    (RBAC_GROUP, "roles", "bind"): "checked when RoleBindings are written",
    # Held only so that profiles' role_bindings may grant them: Kubernetes refuses a
    # Role whose rules its creator does not hold (there is no "escalate").
    ("", "pods", "get"): "granted on to workspace Roles",
    ("", "pods/log", "get"): "granted on to workspace Roles",
    ("", "pods/log", "list"): "named by the example catalogue's pod-reader Role",
    ("", "pods/log", "watch"): "named by the example catalogue's pod-reader Role",
    # The accounting service runs in the hub pod with the hub's account.
    ("", "persistentvolumeclaims", "get"): "the accounting service reads claim sizes",
}


def _manifest(name, kind, api_version="v1", persist=False, **body):
    return {
        "name": name,
        "persist": persist,
        "content": {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **body},
    }


#: A profile that makes the spawner write every kind of object it can write.
EVERYTHING = {
    "defaults": {"image_pull_secrets": ["apex-registry"]},
    "profiles": [
        {
            "slug": "everything",
            "display_name": "Everything",
            "default": True,
            "cpu_limit": 1,
            "mem_limit": "1G",
            "config_maps": [
                {
                    "name": "bashrc",
                    "key": ".bashrc",
                    "mount_path": "/home/jovyan/.bashrc",
                    "content": "export NS={namespace}\n",
                },
                {
                    "name": "settings",
                    "key": "s.json",
                    "mount_path": "/etc/apex/s.json",
                    "content": "{}",
                    "persist": True,
                },
            ],
            "volumes": [{"name": "scratch", "size": "1Gi", "mount_path": "/scratch", "persist": False}],
            "role_bindings": [
                {
                    "name": "pod-reader",
                    "role": {
                        "rules": [
                            {"resources": ["pods"], "verbs": ["get", "list", "watch"]},
                            {"resources": ["pods/log"], "verbs": ["get"]},
                        ]
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": "workspace"}],
                }
            ],
            # One manifest of each kind APExSpawner allows by default.
            "manifests": [
                _manifest("dask", "Service", spec={"selector": {"app": "dask"}, "ports": [{"port": 8786}]}),
                _manifest("extra-cm", "ConfigMap", data={"a": "b"}),
                _manifest("extra-secret", "Secret", stringData={"token": "x"}),
                _manifest("dask-worker", "ServiceAccount"),
                _manifest(
                    "dask-role",
                    "Role",
                    RBAC_GROUP + "/v1",
                    rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
                ),
                _manifest(
                    "dask-binding",
                    "RoleBinding",
                    RBAC_GROUP + "/v1",
                    roleRef={"apiGroup": RBAC_GROUP, "kind": "Role", "name": "dask-role"},
                    subjects=[{"kind": "ServiceAccount", "name": "dask-worker", "namespace": "{namespace}"}],
                ),
                _manifest(
                    "allow-dask",
                    "NetworkPolicy",
                    "networking.k8s.io/v1",
                    spec={
                        "podSelector": {"matchLabels": {"app": "dask"}},
                        "policyTypes": ["Ingress"],
                        "ingress": [{}],
                    },
                ),
                # persist: a stop must never delete a claim (see the report on persist: false)
                _manifest(
                    "dask-data",
                    "PersistentVolumeClaim",
                    persist=True,
                    spec={"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                ),
            ],
            "conda_environments": [
                {
                    "name": "eo",
                    "display_name": "Python (EO)",
                    "environment_yml": "name: eo\ndependencies: [python=3.11, ipykernel]\n",
                }
            ],
            "resource_quota": {"hard": {"requests.cpu": "8", "persistentvolumeclaims": "10"}},
            "limit_range": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "100m"}}]},
        }
    ],
}


def _group(path: str) -> str:
    parts = [p for p in path.split("?")[0].split("/") if p]
    return "" if parts[0] == "api" else parts[1]


def _authorised_as(r) -> tuple[str, ...]:
    """The verbs the API server checks for a request: a server-side apply that creates the
    object (kubesim, like kube-apiserver, answers it 201) is authorised as "create" as well as
    "patch" (found against the real API server: rbac.yaml had "patch" only)."""
    if r.verb == "patch" and r.status == 201:
        return ("patch", "create")
    return (r.verb,)


async def _lifecycle(sim) -> None:
    await seed_hub_secret(sim)
    sim.reset_log()  # what the test itself wrote is not the hub's doing
    catalogue = copy.deepcopy(EVERYTHING)
    default = make_spawner(sim, "ada", catalogue=catalogue, delete_namespace_on_user_delete=True)
    await default.start()
    await default.stop()
    await default.start()  # the second start finds everything in place
    await default.stop()
    named = make_spawner(
        sim, "ada", catalogue=catalogue, server_name="run1", delete_namespace_on_user_delete=True
    )
    await named.start()
    await named.stop()
    await named.delete_forever()  # the named server's objects, its claims included
    await default.delete_forever()  # the user: the namespace goes
    namespace = obj(sim, "namespaces", "", "apex-ada")
    assert namespace is None or namespace["metadata"].get("deletionTimestamp")


async def test_rbac_allows_every_request_and_holds_nothing_unused(ksim):
    await _lifecycle(ksim)
    requests = list(ksim.requests)
    counts = Counter(
        (r.verb, _group(r.path) if r.verb != "discovery" else "", r.resource, r.namespace) for r in requests
    )
    summary = "\n".join(f"{n:3} {k}" for k, n in sorted(counts.items(), key=str))
    rules = cluster_role_rules()

    used: set[tuple[str, str, str]] = set()
    denied = []
    for r in requests:
        if r.verb == "discovery":
            # /api, /apis, /version: every authenticated client may read them
            # (the default system:discovery ClusterRole).
            assert r.resource.startswith(("/api", "/version")), r.resource
            continue
        group = _group(r.path)
        assert r.namespace in (None, HUB_NAMESPACE) or r.namespace.startswith("apex-"), r
        for verb in _authorised_as(r):
            if allows(rules, group, r.resource, verb):
                used.add((group, r.resource, verb))
            elif not (r.namespace == HUB_NAMESPACE and allows(Z2JH_HUB_ROLE, group, r.resource, verb)):
                denied.append(f"{verb} {r.resource} ({group or 'core'}) in {r.namespace or 'all namespaces'}")
        assert r.status < 400 or (r.verb, r.resource, r.status) in (
            ("create", "persistentvolumeclaims", 409),  # a kept claim
            ("create", "namespaces", 409),  # create-first of a namespace that exists: then read
            ("get", "namespaces", 404),
        ), r  # the ownership check (legacy names, stop)
    assert not denied, (
        "requests the hub's RBAC would refuse:\n"
        + "\n".join(sorted(set(denied)))
        + "\n\nall requests:\n"
        + summary
    )

    unused = sorted(set(grants(rules)) - used - set(NOT_REQUESTED))
    assert not unused, (
        f"ClusterRole permissions never used (remove them or justify them): {unused}"
        f"\n\nall requests:\n{summary}"
    )
    stale = sorted(k for k in NOT_REQUESTED if k in used or k not in grants(rules))
    assert not stale, f"NOT_REQUESTED entries that are used or not granted: {stale}"

    # The lifecycle really went through every step.
    assert counts[("create", "", "pods", "apex-ada")] == 3
    assert counts[("delete", "", "namespaces", None)] == 1
    assert any(k[0] == "deletecollection" and k[2] == "persistentvolumeclaims" for k in counts)
    assert counts[("get", "", "secrets", HUB_NAMESPACE)] >= 3  # pull secret read in the hub namespace


def test_profile_roles_only_grant_what_the_hub_holds():
    """Kubernetes refuses a Role whose rules its creator does not hold (no "escalate")."""
    rules = cluster_role_rules()
    profile = EVERYTHING["profiles"][0]
    roles = [b["role"]["rules"] for b in profile["role_bindings"]]
    roles += [m["content"]["rules"] for m in profile["manifests"] if m["content"]["kind"] == "Role"]
    for role in roles:
        for rule in role:
            for group in rule.get("apiGroups", [""]):
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert allows(rules, group, resource, verb), (group, resource, verb)
