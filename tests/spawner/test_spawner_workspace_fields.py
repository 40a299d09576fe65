"""APExSpawner on kubesim: the profile fields for workspaces that use Kubernetes themselves
(what the EOEPCA converter writes): ``workspace_volume``, ``service_account_token``,
``volumes[].scratch`` and ``workspace_image_pull_secrets``."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio import client
from tornado.web import HTTPError

from apex_hub.spawner import labels as L
from tests.helpers.spawner import make_spawner, obj, objects, refused_start, seed_hub_secret

CONDA = [{"name": "eo", "environment_yml": "name: eo\ndependencies: [python=3.11]\n"}]


def pod_spec(sim, spawner) -> dict:
    return obj(sim, "pods", spawner.namespace, spawner.pod_name)["spec"]


def pod_claims(sim, spawner) -> list[str]:
    return [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(sim, spawner)["volumes"]
        if "persistentVolumeClaim" in v
    ]


def claim_names(sim, namespace) -> set[str]:
    return {c["metadata"]["name"] for c in objects(sim, "persistentvolumeclaims", namespace)}


def writes(sim) -> list:
    return [r for r in sim.requests if r.verb in ("create", "patch", "update")]


# -- workspace_volume ----------------------------------------------------------------------

OWN_VOLUMES = {
    "profiles": [
        {
            "slug": "own",
            "display_name": "Own volumes only",
            "default": True,
            "workspace_volume": False,
            "volumes": [{"name": "data", "size": "1Gi", "mount_path": "/data"}],
        },
        {"slug": "lab", "display_name": "Lab"},
    ]
}


async def test_workspace_volume_false_gets_only_the_profiles_own_volumes(ksim):
    """ApplicationHub mounts only a profile's own volumes: the operator's claim at /home/jovyan
    would hide the image's home directory."""
    spawner = make_spawner(ksim, "wanda", catalogue=OWN_VOLUMES)
    await spawner.start()
    ns = spawner.namespace
    assert claim_names(ksim, ns) == {"data"}
    assert pod_claims(ksim, spawner) == ["data"]
    mounts = {m["mountPath"] for m in pod_spec(ksim, spawner)["containers"][0]["volumeMounts"]}
    assert "/data" in mounts and "/home/jovyan" not in mounts
    await spawner.stop()
    # the next spawn (same spawner object), of a profile without the field, gets it again
    spawner.user_options = {"profile": "lab"}
    await spawner.start()
    assert pod_claims(ksim, spawner) == ["workspace"]
    await spawner.stop()


async def test_conda_without_a_workspace_volume_is_refused_before_any_write(ksim, caplog):
    """Conda environments are built into the workspace volume: a profile that opted out of the
    operator's and has none of that name cannot build them; refused with what to do."""
    catalogue = {"profiles": [{**OWN_VOLUMES["profiles"][0], "conda_environments": CONDA}]}
    spawner = make_spawner(ksim, "wilma", catalogue=catalogue)
    ksim.reset_log()
    message = await refused_start(spawner, caplog)
    assert message.startswith("Profile 'own' cannot be started")
    assert "workspace_volume: false" in message and "add a volume named 'workspace'" in message
    assert "workspace_volume: false" in caplog.text
    assert not writes(ksim)


# -- service_account_token -----------------------------------------------------------------

TOKEN = {
    "profiles": [
        {
            "slug": "cwl",
            "display_name": "CWL runner",
            "default": True,
            "service_account_token": True,
            "role_bindings": [
                {
                    "name": "pod-manager",
                    "role": {"rules": [{"resources": ["pods"], "verbs": ["get", "list"]}]},
                    "subjects": [{"kind": "ServiceAccount", "name": "workspace"}],
                }
            ],
        },
        {"slug": "lab", "display_name": "Lab"},
    ]
}


async def test_service_account_token_mounts_the_workspace_accounts_token(ksim):
    """Code in the pod (Calrissian launching CWL steps) uses the API as the workspace account,
    with what the profile's role_bindings grant it in the user's namespace."""
    spawner = make_spawner(ksim, "tess", catalogue=TOKEN)
    await spawner.start()
    ns = spawner.namespace
    spec = pod_spec(ksim, spawner)
    assert spec["serviceAccountName"] == "workspace" and spec["automountServiceAccountToken"] is True
    binding = obj(ksim, "rolebindings", ns, "pod-manager", "rbac.authorization.k8s.io")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "workspace", "namespace": ns}]
    # the account itself stays without: only the pods of profiles that ask get the token
    assert obj(ksim, "serviceaccounts", ns, "workspace")["automountServiceAccountToken"] is False
    await spawner.stop()
    spawner.user_options = {"profile": "lab"}
    await spawner.start()
    spec = pod_spec(ksim, spawner)
    assert spec["serviceAccountName"] == "workspace" and spec["automountServiceAccountToken"] is False
    await spawner.stop()


@pytest.mark.parametrize("account", [None, ""])
async def test_a_token_without_the_workspace_account_is_refused(ksim, caplog, account):
    """The namespace's `default` account is no stand-in: the profile's bindings do not name it."""
    spawner = make_spawner(ksim, "uma", catalogue=TOKEN, workspace_service_account=account)
    ksim.reset_log()
    message = await refused_start(spawner, caplog)
    assert message.startswith("Profile 'cwl' cannot be started")
    assert "service_account_token: true" in message
    assert "APExSpawner.workspace_service_account" in message
    assert "APExSpawner.workspace_service_account" in caplog.text
    assert not writes(ksim)
    # and the form does not offer what would be refused
    assert "cwl" not in [e["slug"] for e in spawner._profile_entries()]
    assert "cwl" in [e["slug"] for e in make_spawner(ksim, "uma", catalogue=TOKEN)._profile_entries()]


# -- volumes[].scratch ---------------------------------------------------------------------

SCRATCH = {
    "profiles": [
        {
            "slug": "cwl",
            "display_name": "CWL runner",
            "default": True,
            "workspace_volume": False,
            "volumes": [
                {
                    "name": "calrissian",
                    "claim_name": "calrissian-claim",
                    "size": "1Gi",
                    "mount_path": "/calrissian",
                    "persist": False,
                    "scratch": True,
                },
                {"name": "work", "claim_name": "workspace-claim", "size": "1Gi", "mount_path": "/workspace"},
                {"name": "tmp", "size": "1Gi", "mount_path": "/tmp/run", "persist": False},
            ],
        }
    ]
}


async def test_a_stop_deletes_its_servers_scratch_claims_and_nothing_else(ksim):
    """ApplicationHub's `persist: false` claims are gone at every stop of their server; every
    other claim stays, and so do the scratch claims of the user's other servers and of other
    users (selected by the ownership labels)."""
    default = make_spawner(ksim, "vera", catalogue=SCRATCH)
    named = make_spawner(ksim, "vera", catalogue=SCRATCH, server_name="run2")
    other = make_spawner(ksim, "walt", catalogue=SCRATCH)
    for spawner in (default, named, other):
        await spawner.start()
    ns = default.namespace
    scratch = obj(ksim, "persistentvolumeclaims", ns, "calrissian-claim")
    assert scratch["metadata"]["labels"][L.SCRATCH] == "true"
    assert scratch["metadata"]["labels"][L.SERVER] == "default"
    # a named server's scratch claim is its own (another server's stop would delete a shared one)
    assert "calrissian-claim-named-run2" in pod_claims(ksim, named)
    assert "calrissian-claim" in pod_claims(ksim, default)
    assert L.SCRATCH not in obj(ksim, "persistentvolumeclaims", ns, "workspace-claim")["metadata"]["labels"]
    kept = {"workspace-claim", "tmp", "tmp-named-run2", "calrissian-claim-named-run2"}
    assert claim_names(ksim, ns) == kept | {"calrissian-claim"}

    await default.stop()
    assert claim_names(ksim, ns) == kept
    assert claim_names(ksim, other.namespace) == {"calrissian-claim", "workspace-claim", "tmp"}
    assert default.get_state()["apex_scratch_claims"] is True
    await named.stop()
    assert claim_names(ksim, ns) == {"workspace-claim", "tmp", "tmp-named-run2"}

    # made again at the next spawn, empty
    uid = scratch["metadata"]["uid"]
    await default.start()
    assert obj(ksim, "persistentvolumeclaims", ns, "calrissian-claim")["metadata"]["uid"] != uid
    await default.stop()
    await other.stop()
    assert claim_names(ksim, other.namespace) == {"workspace-claim", "tmp"}


async def terminating_scratch_claim(sim, spawner) -> str:
    """Start and stop ``spawner`` while a finalizer (Kubernetes' pvc-protection, while a pod of the
    workspace still uses the claim) holds its scratch claim: left being deleted. Its uid."""
    await spawner.start()
    async with sim.api_client() as api:
        await client.CoreV1Api(api).patch_namespaced_persistent_volume_claim(
            "calrissian-claim",
            spawner.namespace,
            {"metadata": {"finalizers": ["kubernetes.io/pvc-protection"]}},
        )
    await spawner.stop()
    claim = obj(sim, "persistentvolumeclaims", spawner.namespace, "calrissian-claim")
    assert claim["metadata"]["deletionTimestamp"]
    return claim["metadata"]["uid"]


async def test_a_spawn_waits_for_the_last_stops_scratch_claim_to_go(ksim):
    """A quick restart finds the last scratch claim still being deleted; a pod would never start
    on it, so the spawn waits for it to go and makes it anew."""
    spawner = make_spawner(ksim, "xena", catalogue=SCRATCH)
    old = await terminating_scratch_claim(ksim, spawner)
    start = asyncio.ensure_future(spawner.start())
    events = spawner.progress()
    async for event in events:
        if "still being deleted" in event["message"]:
            break
    await events.aclose()
    assert not start.done()
    async with ksim.api_client() as api:  # the last pod using it is gone: deletion completes
        await client.CoreV1Api(api).patch_namespaced_persistent_volume_claim(
            "calrissian-claim", spawner.namespace, {"metadata": {"finalizers": None}}
        )
    await start
    claim = obj(ksim, "persistentvolumeclaims", spawner.namespace, "calrissian-claim")
    assert claim["metadata"]["uid"] != old and not claim["metadata"].get("deletionTimestamp")
    assert "calrissian-claim" in pod_claims(ksim, spawner)
    await spawner.stop()


async def test_a_scratch_claim_that_stays_being_deleted_fails_the_spawn_clearly(ksim):
    """Bounded by namespace_deletion_wait, like a namespace still being deleted."""
    spawner = make_spawner(ksim, "yara", catalogue=SCRATCH, namespace_deletion_wait=0.3)
    await terminating_scratch_claim(ksim, spawner)
    with pytest.raises(HTTPError) as info:
        await spawner.start()
    assert info.value.status_code == 500
    assert (
        "the scratch storage calrissian-claim of your previous session is still being deleted"
        in info.value.log_message
    )
    assert obj(ksim, "pods", spawner.namespace, spawner.pod_name) is None


# -- workspace_image_pull_secrets ----------------------------------------------------------

PULL = {
    "defaults": {"image_pull_secrets": ["apex-registry"]},
    "profiles": [
        {
            "slug": "own-registry",
            "display_name": "Own registry",
            "default": True,
            "workspace_image_pull_secrets": ["regcred-{username}"],
            "manifests": [
                {
                    "name": "regcred",
                    "content": {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": "regcred-{username}"},
                        "type": "kubernetes.io/dockerconfigjson",
                        "data": {".dockerconfigjson": "e30="},
                    },
                }
            ],
        }
    ],
}


async def test_workspace_pull_secrets_are_used_where_the_manifests_make_them(ksim):
    """A pull Secret the profile makes in the user's namespace (an ExternalSecret's target, a
    Secret) is named in the pod as it is, not looked for in the hub namespace and copied."""
    await seed_hub_secret(ksim)
    default = make_spawner(ksim, "yuri", catalogue=PULL)
    named = make_spawner(ksim, "yuri", catalogue=PULL, server_name="gpu")
    await default.start()
    await named.start()
    ns = default.namespace
    assert pod_spec(ksim, default)["imagePullSecrets"] == [
        {"name": "apex-registry"},
        {"name": "regcred-yuri"},
    ]
    # a named server's copy of the manifest is renamed, and the pod follows it
    assert pod_spec(ksim, named)["imagePullSecrets"] == [
        {"name": "apex-registry"},
        {"name": "regcred-yuri-named-gpu"},
    ]
    made = obj(ksim, "secrets", ns, "regcred-yuri")
    assert made["metadata"]["labels"][L.PROFILE] == "own-registry"
    assert "apex.esa.int/copied-from" not in made["metadata"]["annotations"]
    assert (
        obj(ksim, "secrets", ns, "apex-registry")["metadata"]["annotations"]["apex.esa.int/copied-from"]
        == "jhub/apex-registry"
    )
    assert obj(ksim, "secrets", "jhub", "regcred-yuri") is None
    await named.stop()
    await default.stop()
