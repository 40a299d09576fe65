"""APExSpawner in process on kubesim: the workspace it writes, reuse, stop, delete, names."""

from __future__ import annotations

import asyncio
import copy

import kubernetes_validate
import pytest
import yaml

from apex_hub.naming import is_dns_label
from apex_hub.profiles import convert_eoepca
from apex_hub.spawner import labels as L
from apex_hub.spawner.escalation import DEFAULT_HUB_RULES
from apex_hub.spawner.workspace import NETWORK_POLICY
from tests.helpers.spawner import CATALOGUE, make_spawner, obj, seed_hub_secret, write_catalogue

K8S_VERSION = "1.30.0"
FULL = {
    "defaults": {"image_pull_secrets": ["apex-registry"]},
    "profiles": [
        {
            "slug": "full",
            "display_name": "Everything",
            "default": True,
            "cpu_limit": 2,
            "cpu_guarantee": 0.5,
            "mem_limit": "4G",
            "mem_guarantee": "1G",
            "extra_resource_limits": {"nvidia.com/gpu": "1"},
            "node_selector": {"pool": "user"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "config_maps": [
                {
                    "name": "bashrc",
                    "key": ".bashrc",
                    "mount_path": "/home/jovyan/.bashrc",
                    "content": "export NS={namespace}\n",
                    "default_mode": 0o600,
                },
                {
                    "name": "settings",
                    "key": "settings.json",
                    "mount_path": "/etc/apex/settings.json",
                    "content": '{"theme": "dark", "user": "{username}"}',
                    "persist": True,
                },
                {"name": "existing-cm", "key": "a", "mount_path": "/etc/existing/a"},
            ],
            "volumes": [
                {
                    "name": "scratch",
                    "size": "5Gi",
                    "storage_class": "fast",
                    "access_modes": ["ReadWriteMany"],
                    "mount_path": "/scratch",
                    "annotations": {"backup": "no"},
                    "persist": False,
                },
                {"name": "shared", "claim_name": "team-data", "mount_path": "/data", "readonly": True},
            ],
            "env": {
                "LITERAL": "x",
                "FROM_CM": {"from_config_map": {"name": "settings", "key": "settings.json"}},
                "FROM_SECRET": {"from_secret": {"name": "creds", "key": "token"}},
            },
            "env_from_config_maps": ["settings"],
            "secret_mounts": [{"name": "creds", "mount_path": "/var/run/secrets/apex"}],
            "init_containers": [{"name": "prepare", "image": "busybox:1.36", "command": ["true"]}],
            "role_bindings": [
                {
                    "name": "pod-reader",
                    "role": {"rules": [{"resources": ["pods"], "verbs": ["get", "list"]}]},
                    "subjects": [{"kind": "ServiceAccount", "name": "workspace"}],
                }
            ],
            "manifests": [
                {
                    "name": "svc",
                    "content": {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": "dask-{username}"},
                        "spec": {"selector": {"app": "dask"}, "ports": [{"port": 8786}]},
                    },
                }
            ],
            "resource_quota": {"hard": {"requests.cpu": 8, "persistentvolumeclaims": "5"}},
            "limit_range": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "100m"}}]},
            "conda_environments": [
                {
                    "name": "eo",
                    "display_name": "Python (EO)",
                    "environment_yml": "name: eo\ndependencies: [python=3.11, ipykernel]\n",
                }
            ],
            "condarc": "channels: [conda-forge]\n",
        }
    ],
}


async def provide_in_workspace(sim, spawner, start, objects):
    """Run ``start`` while creating ``objects`` ((plural, body), ...) in the user's namespace as soon as
    the spawn has made it: what the profile expects someone else (the operator) to provide. A kubelet
    leaves the pod waiting (FailedMount / CreateContainerConfigError) until they exist."""
    from kubernetes_asyncio import client

    task = asyncio.ensure_future(start)
    for _ in range(400):
        if obj(sim, "namespaces", "", spawner.namespace) is not None or task.done():
            break
        await asyncio.sleep(0.05)
    async with sim.api_client() as api:
        v1 = client.CoreV1Api(api)
        create = {
            "configmaps": v1.create_namespaced_config_map,
            "secrets": v1.create_namespaced_secret,
            "persistentvolumeclaims": v1.create_namespaced_persistent_volume_claim,
        }
        for plural, body in objects:
            await create[plural](spawner.namespace, body)
    return await task


#: What FULL refers to without creating it: an existing ConfigMap and claim mounted, a Secret read and mounted.
FULL_PROVIDED = [
    ("configmaps", {"metadata": {"name": "existing-cm"}, "data": {"a": "1"}}),
    ("secrets", {"metadata": {"name": "creds"}, "stringData": {"token": "t0k"}}),
    (
        "persistentvolumeclaims",
        {
            "metadata": {"name": "team-data"},
            "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    ),
]


async def started_full(sim, name):
    """A spawner of the FULL profile, started (its pull secret waiting in the hub namespace, and what it
    mounts from outside provided in the user's namespace)."""
    await seed_hub_secret(sim)
    spawner = make_spawner(sim, name, catalogue=FULL)
    await provide_in_workspace(sim, spawner, spawner.start(), FULL_PROVIDED)
    return spawner


def _quantities(resources):
    """CPU (cores) and memory (bytes) of a container's resources, whatever their notation."""
    from apex_hub.profiles import memory_bytes

    def cores(v):
        v = str(v)
        return float(v[:-1]) / 1000 if v.endswith("m") else float(v)

    return {
        kind: {
            k: cores(v) if k == "cpu" else memory_bytes(str(v))
            for k, v in (resources.get(kind) or {}).items()
            if k in ("cpu", "memory")
        }
        for kind in ("requests", "limits")
    }


async def test_init_containers_get_the_servers_cpu_and_memory_for_quota_admission(ksim):
    """A quota on requests.cpu without a LimitRange refuses a pod whose init container states
    no requests (found against the real API server): they mirror the server container's."""
    catalogue = copy.deepcopy(FULL)
    profile = catalogue["profiles"][0]
    profile["init_containers"].append(
        {
            "name": "sized",
            "image": "busybox:1.36",
            "command": ["true"],
            "resources": {"requests": {"cpu": "10m"}},
        }
    )
    del profile["limit_range"]
    await seed_hub_secret(ksim)
    spawner = make_spawner(ksim, "ivy", catalogue=catalogue)
    await provide_in_workspace(ksim, spawner, spawner.start(), FULL_PROVIDED)
    spec = obj(ksim, "pods", spawner.namespace, spawner.pod_name)["spec"]
    init = {c["name"]: c for c in spec["initContainers"]}
    assert list(init) == ["conda-environments", "prepare", "sized"]
    expected = {"requests": {"cpu": 0.5, "memory": 2**30}, "limits": {"cpu": 2, "memory": 4 * 2**30}}
    assert _quantities(init["conda-environments"]["resources"]) == expected
    assert _quantities(init["prepare"]["resources"]) == expected
    assert init["sized"]["resources"] == {"requests": {"cpu": "10m"}}  # its own, untouched
    assert _quantities(spec["containers"][0]["resources"]) == expected


async def test_init_containers_state_no_resources_when_the_server_states_none(ksim):
    catalogue = {
        "profiles": [
            {
                "slug": "bare",
                "display_name": "Bare",
                "default": True,
                "init_containers": [{"name": "prepare", "image": "busybox:1.36"}],
            }
        ]
    }
    spawner = make_spawner(ksim, "jon", catalogue=catalogue, workspace_volume=None)
    await spawner.start()
    spec = obj(ksim, "pods", spawner.namespace, spawner.pod_name)["spec"]
    assert "resources" not in spec["initContainers"][0] or not any(
        spec["initContainers"][0]["resources"].values()
    )


async def test_first_spawn_creates_every_object_with_the_right_fields(ksim):
    spawner = await started_full(ksim, "alice")
    ns = spawner.namespace
    assert ns == "apex-alice"

    namespace = obj(ksim, "namespaces", "", ns)
    assert namespace["metadata"]["labels"][L.MANAGED_BY] == "apex-hub"
    assert namespace["metadata"]["annotations"][L.USERNAME_ANNOTATION] == "alice"

    sa = obj(ksim, "serviceaccounts", ns, "workspace")
    assert sa["automountServiceAccountToken"] is False
    policy = obj(ksim, "networkpolicies", ns, NETWORK_POLICY, "networking.k8s.io")
    assert policy["spec"]["podSelector"] == {} and policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    peer = policy["spec"]["ingress"][0]["from"][0]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "jhub"}
    assert peer["podSelector"]["matchLabels"] == {"hub.jupyter.org/network-access-singleuser": "true"}
    assert obj(ksim, "resourcequotas", ns, "apex-quota")["spec"]["hard"] == {
        "requests.cpu": "8",
        "persistentvolumeclaims": "5",
    }
    assert obj(ksim, "limitranges", ns, "apex-limits")["spec"]["limits"][0]["type"] == "Container"

    bashrc = obj(ksim, "configmaps", ns, "bashrc")
    assert bashrc["data"] == {".bashrc": "export NS=apex-alice\n"}
    labels = bashrc["metadata"]["labels"]
    assert labels == {
        L.MANAGED_BY: "apex-hub",
        L.PART_OF: "apex-workspace",
        L.USER: "alice",
        L.SERVER: "default",
        L.PROFILE: "full",
        L.PERSIST: "false",
    }
    assert obj(ksim, "configmaps", ns, "settings")["metadata"]["labels"][L.PERSIST] == "true"
    assert obj(ksim, "configmaps", ns, "settings")["data"]["settings.json"].endswith('"user": "alice"}')
    existing = obj(ksim, "configmaps", ns, "existing-cm")  # mounted, not created: the operator's
    assert existing["data"] == {"a": "1"} and L.MANAGED_BY not in (existing["metadata"].get("labels") or {})

    scratch = obj(ksim, "persistentvolumeclaims", ns, "scratch")
    assert scratch["spec"]["storageClassName"] == "fast"
    assert scratch["spec"]["accessModes"] == ["ReadWriteMany"]
    assert scratch["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert scratch["metadata"]["annotations"]["backup"] == "no"
    workspace = obj(ksim, "persistentvolumeclaims", ns, "workspace")
    assert workspace["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert L.SERVER not in workspace["metadata"]["labels"]  # per user, shared by servers
    claim = obj(ksim, "persistentvolumeclaims", ns, "team-data")  # existing claim: mounted only
    assert L.MANAGED_BY not in (claim["metadata"].get("labels") or {})

    role = obj(ksim, "roles", ns, "pod-reader", "rbac.authorization.k8s.io")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    binding = obj(ksim, "rolebindings", ns, "pod-reader", "rbac.authorization.k8s.io")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "workspace", "namespace": ns}]
    assert binding["roleRef"]["name"] == "pod-reader"
    service = obj(ksim, "services", ns, "dask-alice")
    assert service["metadata"]["labels"][L.MANAGED_BY] == "apex-hub"
    copied = obj(ksim, "secrets", ns, "apex-registry")
    assert copied["type"] == "kubernetes.io/dockerconfigjson"
    assert copied["data"] == {".dockerconfigjson": "eyJhdXRocyI6e319"}
    conda = obj(ksim, "configmaps", ns, "apex-conda-environments")
    assert set(conda["data"]) == {"eo.yml", "build.py"}
    assert obj(ksim, "configmaps", ns, "apex-condarc")["data"] == {"condarc": "channels: [conda-forge]\n"}

    pod = obj(ksim, "pods", ns, spawner.pod_name)
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "workspace" and spec["automountServiceAccountToken"] is False
    assert spec["imagePullSecrets"] == [{"name": "apex-registry"}]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["nodeSelector"] == {"pool": "user"}
    assert [c["name"] for c in spec["initContainers"]] == ["conda-environments", "prepare"]
    assert spec["initContainers"][1]["securityContext"]["allowPrivilegeEscalation"] is False
    main = spec["containers"][0]
    assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert mounts["/home/jovyan/.bashrc"] == {
        "name": "bashrc",
        "mountPath": "/home/jovyan/.bashrc",
        "subPath": ".bashrc",
        "readOnly": True,
    }
    assert mounts["/data"]["readOnly"] is True and mounts["/home/jovyan"]["name"] == "workspace"
    assert mounts["/etc/conda/.condarc"]["subPath"] == "condarc"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["bashrc"]["configMap"] == {"name": "bashrc", "defaultMode": 0o600}
    assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == "team-data"
    assert volumes["secret-creds"]["secret"]["secretName"] == "creds"
    env = {e["name"]: e for e in main["env"]}
    assert env["LITERAL"]["value"] == "x"
    assert env["FROM_CM"]["valueFrom"]["configMapKeyRef"] == {"name": "settings", "key": "settings.json"}
    assert env["FROM_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "creds", "key": "token"}
    assert env["JUPYTER_PATH"]["value"] == "/home/jovyan/.apex/jupyter"
    assert main["envFrom"] == [{"configMapRef": {"name": "settings"}}]
    assert pod["metadata"]["labels"][L.PROFILE] == "full"
    assert pod["metadata"]["labels"][L.MANAGED_BY] == "apex-hub"  # not KubeSpawner's "kubespawner"
    await spawner.stop()


async def test_every_planned_manifest_passes_the_kubernetes_schemas(ksim):
    spawner = await started_full(ksim, "schema-check")
    plan = spawner.plan
    manifests = [plan.namespace, *plan.objects, *plan.claims]
    assert {m["kind"] for m in manifests} >= {
        "Namespace",
        "ServiceAccount",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Role",
        "RoleBinding",
        "Service",
    }
    pod = spawner.api.api_client.sanitize_for_serialization(await spawner.get_pod_manifest())
    manifests.append({"apiVersion": "v1", "kind": "Pod", **pod})
    for manifest in manifests:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    await spawner.stop()


async def test_second_spawn_reuses_and_patches_what_changed(ksim, tmp_path):
    path = write_catalogue(tmp_path / "profiles.yml", CATALOGUE)
    spawner = make_spawner(ksim, "bob", catalogue=path, resource_quota={"hard": {"pods": "5"}})
    await spawner.start()
    ns = spawner.namespace
    claim_uid = obj(ksim, "persistentvolumeclaims", ns, "workspace")["metadata"]["uid"]
    await spawner.stop()

    changed = copy.deepcopy(CATALOGUE)
    changed["profiles"][0]["config_maps"][0]["content"] = "export CHANGED=1\n"
    changed["profiles"][0]["resource_quota"] = {"hard": {"pods": "3"}}
    write_catalogue(tmp_path / "profiles.yml", changed)
    ksim.reset_log()
    second = make_spawner(ksim, "bob", catalogue=path, resource_quota={"hard": {"pods": "5"}})
    await second.start()
    assert obj(ksim, "configmaps", ns, "bashrc")["data"] == {".bashrc": "export CHANGED=1\n"}
    assert obj(ksim, "resourcequotas", ns, "apex-quota")["spec"]["hard"] == {"pods": "3"}
    assert obj(ksim, "persistentvolumeclaims", ns, "workspace")["metadata"]["uid"] == claim_uid
    counts = ksim.counts()
    # a new spawner (no state): the create-first of the namespace answers 409, then the read
    # checks ownership and the namespace is patched with everything else
    assert counts["create namespaces"] == 1 and counts["patch namespaces"] == 1
    assert [r.status for r in ksim.requests if r.resource == "namespaces"][:2] == [409, 200]
    assert counts["create persistentvolumeclaims"] == 1  # answered 409: the claim is kept as is
    assert [r.status for r in ksim.requests if r.resource == "persistentvolumeclaims"] == [409]
    await second.stop()


async def test_stop_keeps_claims_and_persistent_objects_and_sweeps_the_rest(ksim):
    spawner = await started_full(ksim, "carol")
    ns = spawner.namespace
    # an object from an earlier spawn with another profile, found only by its labels
    stale = copy.deepcopy(obj(ksim, "configmaps", ns, "bashrc"))
    stale["metadata"] = {
        "name": "from-old-profile",
        "labels": {**stale["metadata"]["labels"], L.PROFILE: "old"},
    }
    ksim.store.create(ksim.store._rt("configmaps"), ns, stale)
    await spawner.stop()

    for plural, name in [
        ("persistentvolumeclaims", "workspace"),
        ("persistentvolumeclaims", "scratch"),
        ("configmaps", "settings"),
        ("serviceaccounts", "workspace"),
        ("secrets", "apex-registry"),
    ]:
        assert obj(ksim, plural, ns, name) is not None, (plural, name)
    assert obj(ksim, "networkpolicies", ns, NETWORK_POLICY, "networking.k8s.io") is not None
    assert obj(ksim, "namespaces", "", ns) is not None
    for name in ("bashrc", "apex-conda-environments", "from-old-profile"):
        assert obj(ksim, "configmaps", ns, name) is None, name
    assert obj(ksim, "roles", ns, "pod-reader", "rbac.authorization.k8s.io") is None
    assert obj(ksim, "services", ns, "dask-carol") is None  # manifest kind recorded in state
    assert obj(ksim, "pods", ns, spawner.pod_name) is None
    assert "v1/Service" in spawner.get_state()["apex_server_kinds"]


async def test_stop_sweeps_only_its_own_server(ksim):
    first = make_spawner(ksim, "dora", server_name="")
    second = make_spawner(ksim, "dora", server_name="gpu-run", uid=1)
    await first.start()
    await second.start()
    assert first.namespace == second.namespace
    ns = first.namespace
    own = obj(ksim, "configmaps", ns, "bashrc-named-gpu-run")
    assert own["metadata"]["labels"][L.SERVER] == "named-gpu-run"
    pod = obj(ksim, "pods", ns, second.pod_name)
    assert {"name": "bashrc", "configMap": {"name": "bashrc-named-gpu-run", "defaultMode": 0o644}} in pod[
        "spec"
    ]["volumes"]
    await second.stop()
    assert obj(ksim, "configmaps", ns, "bashrc-named-gpu-run") is None
    assert obj(ksim, "configmaps", ns, "bashrc")["metadata"]["labels"][L.SERVER] == "default"
    await first.stop()
    assert obj(ksim, "configmaps", ns, "bashrc") is None


async def test_delete_forever_keeps_the_namespace_unless_enabled(ksim):
    spawner = make_spawner(ksim, "erin")
    await spawner.start()
    await spawner.stop()
    await spawner.delete_forever()
    assert obj(ksim, "namespaces", "", "apex-erin") is not None
    assert obj(ksim, "persistentvolumeclaims", "apex-erin", "workspace") is not None

    doomed = make_spawner(ksim, "frank", delete_namespace_on_user_delete=True)
    await doomed.start()
    await doomed.stop()
    await doomed.delete_forever()
    namespace = obj(ksim, "namespaces", "", "apex-frank")
    assert namespace is None or namespace["metadata"].get("deletionTimestamp")


async def test_delete_forever_of_a_named_server_removes_only_that_servers_scratch(ksim):
    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"][0]["volumes"] = [
        {
            "name": "scratch",
            "size": "1Gi",
            "mount_path": "/scratch",
            "claim_name": "scratch-{profile}",
            "persist": False,
        }
    ]
    named = make_spawner(
        ksim, "gil", server_name="run1", catalogue=catalogue, delete_namespace_on_user_delete=True
    )
    await named.start()
    await named.stop()
    assert obj(ksim, "persistentvolumeclaims", "apex-gil", "scratch-lab") is not None  # stop keeps it
    await named.delete_forever()
    assert obj(ksim, "persistentvolumeclaims", "apex-gil", "scratch-lab") is None
    assert obj(ksim, "persistentvolumeclaims", "apex-gil", "workspace") is not None
    assert obj(ksim, "namespaces", "", "apex-gil") is not None  # a named server never takes it


HOSTILE = [
    "Alice",
    "alice",
    "a.lice",
    "alice@x.org",
    "ü" * 3 + "zoë",
    "x" * 200,
    "robert'); DROP TABLE--",
    "日本語",
]


async def test_hostile_names_get_distinct_valid_namespaces_and_spawn(ksim):
    spawners = [make_spawner(ksim, name, uid=n) for n, name in enumerate(HOSTILE)]
    namespaces = [s.namespace for s in spawners]
    assert len(set(namespaces)) == len(HOSTILE)
    assert all(is_dns_label(ns) and ns.startswith("apex-") for ns in namespaces)
    for spawner in spawners:
        await spawner.start()
        assert obj(ksim, "pods", spawner.namespace, spawner.pod_name) is not None
        cm = obj(ksim, "configmaps", spawner.namespace, "bashrc")
        # placeholders get the slug, never the raw name
        assert cm["data"][".bashrc"] == f"export PS1='{spawner.user_slug}@{spawner.namespace} $ '\n"
        ns = obj(ksim, "namespaces", "", spawner.namespace)
        assert ns["metadata"]["annotations"][L.USERNAME_ANNOTATION] == spawner.user.name
    # stable: a new spawner object (a hub restart) computes the same namespace
    assert [make_spawner(ksim, name, uid=n).namespace for n, name in enumerate(HOSTILE)] == namespaces
    for spawner in spawners:
        await spawner.stop()


async def test_a_converted_applicationhub_config_spawns(ksim):
    with open("examples/eoepca-config.yml") as f:
        converted, report = convert_eoepca(yaml.safe_load(f))
    assert report  # the converter says what it could not carry over
    await seed_hub_secret(ksim, "cr-config")
    # its pod-reader Role grants create/delete on pods/log: the operator grants the hub those
    # too (helm-values/rbac.yaml lists the EOEPCA extras) and says so in hub_rules
    extra = {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["create", "delete"]}
    spawner = make_spawner(
        ksim,
        "hana",
        groups=["apex-dev"],
        catalogue=converted,
        user_options={"profile": converted["profiles"][0]["slug"]},
        hub_rules=[*map(dict, DEFAULT_HUB_RULES), extra],
    )
    # the S3 credentials its secret_mounts name and the endpoints its env reads are the operator's to
    # provide in the workspace (a kubelet leaves the pod waiting until they exist)
    await provide_in_workspace(
        ksim,
        spawner,
        spawner.start(),
        [
            ("secrets", {"metadata": {"name": "apex-s3-credentials"}, "stringData": {"key": "k"}}),
            (
                "configmaps",
                {"metadata": {"name": "apex-endpoints"}, "data": {"stac": "https://stac.example.org/"}},
            ),
        ],
    )
    ns = spawner.namespace
    bash = obj(ksim, "configmaps", ns, "bash-rc")
    assert 'export WORKSPACE_NAMESPACE="apex-hana"' in bash["data"]["bash-rc"]
    assert obj(ksim, "persistentvolumeclaims", ns, "workspace-claim") is not None
    pod = obj(ksim, "pods", ns, spawner.pod_name)
    assert pod["spec"]["containers"][0]["image"] == "ghcr.io/esa-apex/pde-code-server:1.4.0"
    assert pod["spec"]["nodeSelector"] == {"node-pool": "user-large"}
    await spawner.stop()


async def test_progress_shows_each_workspace_step_then_pod_events(ksim):
    spawner = make_spawner(ksim, "ivan")
    messages = []

    async def read():
        async for event in spawner.progress():
            messages.append((event.get("progress"), event["message"]))

    reader = asyncio.ensure_future(read())
    await spawner.start()
    await asyncio.wait_for(reader, 10)
    texts = [m for _, m in messages]
    assert texts[0] == "Preparing your workspace (namespace apex-ivan)"
    assert any(t.startswith("Writing ") and "volume claims" in t for t in texts)
    assert any(t.startswith("Storage workspace created") for t in texts)
    assert any(t.startswith("Workspace ready (") for t in texts)
    assert any("Started container" in t for t in texts)
    numbers = [p for p, _ in messages if p is not None]
    assert numbers == sorted(numbers)  # the bar never goes back
    await spawner.stop()


@pytest.mark.parametrize(
    "manifest, message",
    [
        (
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "miner"},
                "spec": {"selector": {}, "template": {}},
            },
            "kind 'Deployment' is not allowed",
        ),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}},
            "names namespace 'kube-system'",
        ),
    ],
)
async def test_manifests_outside_the_allow_list_are_refused_before_any_write(ksim, manifest, message):
    from tornado.web import HTTPError

    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"][0]["manifests"] = [{"name": "extra", "content": manifest}]
    spawner = make_spawner(ksim, "jack", catalogue=catalogue)
    ksim.reset_log()
    with pytest.raises(HTTPError) as e:
        await spawner.start()
    assert e.value.status_code == 500 and message in e.value.log_message
    assert not [r for r in ksim.requests if r.verb in ("create", "patch")]


async def test_an_allowed_custom_kind_is_applied(ksim):
    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"][0]["manifests"] = [
        {
            "name": "job",
            "persist": True,
            "content": (
                "apiVersion: batch/v1\nkind: Job\nmetadata: {name: warmup-{username}}\n"
                "spec: {template: {spec: {restartPolicy: Never, containers: [{name: w, image: 'busybox:1'}]}}}\n"
            ),
        }
    ]
    spawner = make_spawner(ksim, "kim", catalogue=catalogue, manifest_kinds=["ConfigMap", "batch/v1/Job"])
    await spawner.start()
    job = obj(ksim, "jobs", "apex-kim", "warmup-kim", "batch")
    assert job["metadata"]["labels"][L.PERSIST] == "true"
    await spawner.stop()
    assert obj(ksim, "jobs", "apex-kim", "warmup-kim", "batch") is not None  # persist: true


async def test_missing_image_pull_secret_is_a_clear_error(ksim):
    from tornado.web import HTTPError

    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"][0]["image_pull_secrets"] = ["nowhere"]
    spawner = make_spawner(ksim, "lena", catalogue=catalogue)
    with pytest.raises(HTTPError) as e:
        await spawner.start()
    assert "image pull secret nowhere not found in the hub namespace jhub" in e.value.log_message


async def test_a_warm_spawn_writes_the_namespace_with_everything_else(ksim):
    spawner = make_spawner(ksim, "otto")
    ksim.reset_log()
    await spawner.start()
    await spawner.stop()
    assert spawner.get_state()["apex_namespace_verified"] == "apex-otto"
    # the namespace apply (when it is not the last to go out) is not answered before every other write
    # of the first spawn has arrived again: a spawner that waited for its answer would never send them
    # (the hold then times out)
    expected = {
        (r.resource, r.name)
        for r in ksim.requests
        if r.verb in ("patch", "create") and r.resource not in ("namespaces", "pods")
    }
    arrived: set = set()

    def all_arrived(r) -> bool:
        if r.verb in ("patch", "create"):
            arrived.add((r.resource, r.name))
        return expected <= arrived

    hold = ksim.hold(holds=lambda r: r.verb == "patch" and r.resource == "namespaces", until=all_arrived)
    ksim.reset_log()
    await spawner.start()
    assert not hold.timed_out
    writes = [r for r in ksim.requests if r.verb in ("patch", "create") and r.resource != "pods"]
    namespace = next(r for r in writes if r.resource == "namespaces")
    others = [r for r in writes if r is not namespace]
    # all sent together: each started before the namespace apply was answered
    assert all(r.started < namespace.started + namespace.duration for r in others)
    await spawner.stop()


async def test_a_namespace_deleted_behind_the_hubs_back_is_recreated(ksim):
    spawner = make_spawner(ksim, "pete")
    await spawner.start()
    await spawner.stop()
    ksim.store.delete(ksim.store._rt("namespaces"), "", "apex-pete")
    for _ in range(100):  # namespace termination finishes in the background
        if obj(ksim, "namespaces", "", "apex-pete") is None:
            break
        await asyncio.sleep(0.05)
    ksim.reset_log()
    ksim.inject(verb="patch", resource="namespaces", status=503)  # so the others arrive first
    await spawner.start()
    assert 404 in [r.status for r in ksim.requests if r.verb == "patch"]  # the one-wave try failed
    assert obj(ksim, "configmaps", "apex-pete", "bashrc") is not None
    assert obj(ksim, "persistentvolumeclaims", "apex-pete", "workspace") is not None
    await spawner.stop()


async def test_a_stop_keeps_claims_made_by_non_persistent_manifests_too(ksim):
    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"][0]["manifests"] = [
        {
            "name": "extra",
            "content": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "extra"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            },
        }
    ]
    catalogue["profiles"][0]["volumes"] = [
        {"name": "scratch", "size": "1Gi", "mount_path": "/scratch", "persist": False}
    ]
    spawner = make_spawner(ksim, "quincy", catalogue=catalogue)
    await spawner.start()
    await spawner.stop()
    assert "v1/PersistentVolumeClaim" in spawner.get_state()["apex_server_kinds"]
    for claim in ("extra", "scratch", "workspace"):
        assert obj(ksim, "persistentvolumeclaims", "apex-quincy", claim) is not None, claim
    assert not [
        r for r in ksim.requests if r.resource == "persistentvolumeclaims" and r.verb.startswith("delete")
    ]
