"""APExSpawner against a real API server, as the hub's ServiceAccount (exactly helm-values/).

Each test provisions a workspace through the real RBAC, admission and controllers, with
kubesim's process kubelet as the node (tests/realcluster/conftest.py). The pod's command is a
tiny HTTP server on the pod's own 127.0.0.N, so a spawn ends with a ready server.
"""

import copy
import sys
import time
import uuid

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from apex_hub.spawner import labels as L
from tests.helpers.cluster import HUB_NAMESPACE
from tests.helpers.spawner import make_spawner
from tests.helpers.wait import until

pytestmark = pytest.mark.realcluster
SERVE = [sys.executable, "-m", "http.server", "8888", "--bind", "0.0.0.0"]
PROFILE = {
    "slug": "full",
    "display_name": "Everything",
    "default": True,
    "cpu_limit": 1,
    "cpu_guarantee": 0.1,
    "mem_limit": "512M",
    "mem_guarantee": "128M",
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
    "env": {"APEX_PROFILE": "{profile}"},
    "role_bindings": [
        {
            "name": "pod-reader",
            "role": {
                "rules": [
                    {"resources": ["pods"], "verbs": ["get", "list", "watch"]},
                    {"resources": ["pods/log"], "verbs": ["get"]},
                ]
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default"}],
        }
    ],
    "manifests": [
        {
            "name": "dask",
            "content": {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "dask"},
                "spec": {"selector": {"app": "dask"}, "ports": [{"port": 8786}]},
            },
        }
    ],
    "limit_range": {
        "limits": [
            {
                "type": "Container",
                "defaultRequest": {"cpu": "50m", "memory": "64Mi"},
                "default": {"cpu": "500m", "memory": "256Mi"},
            }
        ]
    },
    "resource_quota": {"hard": {"requests.cpu": "4", "persistentvolumeclaims": "5"}},
}


def catalogue(**changes):
    profile = copy.deepcopy(PROFILE)
    profile.update(changes)
    return {"defaults": {"image_pull_secrets": ["apex-registry"]}, "profiles": [profile]}


def user():
    return f"u{uuid.uuid4().hex[:8]}"


def spawner(cluster, name, cat, **traits):
    traits.setdefault("cmd", SERVE)
    traits.setdefault("start_timeout", 120)
    traits.setdefault("http_timeout", 120)
    return make_spawner(cluster, name, catalogue=cat, **{**cluster.spawner_traits, **traits})


@pytest.fixture(autouse=True)
async def pull_secret(real_cluster):
    async with await real_cluster.admin_client() as api:
        v1 = client.CoreV1Api(api)
        try:
            await v1.create_namespaced_secret(
                HUB_NAMESPACE,
                {
                    "metadata": {"name": "apex-registry"},
                    "type": "kubernetes.io/dockerconfigjson",
                    "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
                },
            )
        except ApiException as e:
            if e.status != 409:
                raise


async def read(admin, path):
    return await admin.call_api(
        path,
        "GET",
        response_types_map={200: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        header_params={"Accept": "application/json"},
    )


async def eventually(check, interval=0.5):
    """Poll ``check()`` (async) until it returns a true value (no deadline: the hang guard ends a hang)."""
    return await until(check, interval)


async def test_first_spawn_provisions_everything_through_the_real_rbac_and_admission(hub, node, admin):
    name = user()
    s = spawner(hub, name, catalogue())
    url = await s.start()
    ns = s.namespace
    try:
        assert url.startswith("http://127.0.0.")
        namespace = await read(admin, f"/api/v1/namespaces/{ns}")
        assert namespace["metadata"]["labels"][L.MANAGED_BY] == L.MANAGER
        role = await read(admin, f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles")
        assert [r["metadata"]["name"] for r in role["items"]]  # the profile's Role was allowed
        pod = await read(admin, f"/api/v1/namespaces/{ns}/pods/{s.pod_name}")
        assert pod["spec"]["nodeName"] == node.name and pod["status"]["phase"] == "Running"
        # admission by the real plugins: ServiceAccount (token volume), LimitRanger (defaults)
        assert (
            any(v["name"].startswith("kube-api-access-") for v in pod["spec"]["volumes"])
            or pod["spec"].get("automountServiceAccountToken") is False
        )
        quota = await read(admin, f"/api/v1/namespaces/{ns}/resourcequotas")
        used = await eventually(lambda: _quota_used(admin, ns))
        assert used.get("requests.cpu"), quota
        # the namespace controller made the root CA ConfigMap; the hub's writes did not collide
        await eventually(lambda: _exists(admin, f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt"))
        # second spawn: everything is patched, nothing is refused
        await s.stop()
        url = await s.start()
        assert url
    finally:
        await s.stop()
        s.delete_namespace_on_user_delete = True
        await s.delete_forever()
    # namespace deletion finished by the real namespace controller
    await eventually(lambda: _gone(admin, f"/api/v1/namespaces/{ns}"))


async def test_stop_sweeps_and_keeps_claims(hub, node, admin):
    s = spawner(hub, user(), catalogue())
    await s.start()
    ns = s.namespace
    try:
        await s.stop()
        claims = await read(admin, f"/api/v1/namespaces/{ns}/persistentvolumeclaims")
        assert claims["items"], "a stop must keep claims"
        cms = await read(admin, f"/api/v1/namespaces/{ns}/configmaps?labelSelector={L.PERSIST}%3Dfalse")
        assert cms["items"] == [], [c["metadata"]["name"] for c in cms["items"]]
        await eventually(lambda: _gone(admin, f"/api/v1/namespaces/{ns}/pods/{s.pod_name}"))
    finally:
        s.delete_namespace_on_user_delete = True
        await s.delete_forever()


async def test_pod_security_restricted_namespace_admits_the_secure_pod(hub, node, admin):
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    s = spawner(hub, user(), catalogue(), namespace_labels=labels)
    await s.start()
    try:
        namespace = await read(admin, f"/api/v1/namespaces/{s.namespace}")
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    finally:
        await s.stop()
        s.delete_namespace_on_user_delete = True
        await s.delete_forever()


async def _quota_used(admin, ns):
    quotas = (await read(admin, f"/api/v1/namespaces/{ns}/resourcequotas"))["items"]
    return quotas and (quotas[0].get("status") or {}).get("used")


async def _exists(admin, path):
    try:
        await read(admin, path)
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


async def _gone(admin, path):
    return not await _exists(admin, path)


async def test_a_profile_role_granting_more_than_the_hub_holds_is_refused_by_rbac_escalation(hub, node):
    """RBAC escalation prevention: the hub may not create a Role with rules it does not hold."""
    cat = catalogue(
        role_bindings=[
            {
                "name": "job-runner",
                "role": {"rules": [{"api_groups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]},
                "subjects": [{"kind": "ServiceAccount", "name": "default"}],
            }
        ]
    )
    s = spawner(hub, user(), cat, hub_rules=None)  # our early check off: what does the real server say?
    try:
        with pytest.raises(Exception) as info:
            await s.start()
        message = str(getattr(info.value, "log_message", None) or info.value)
        print("refused as:", message)  # quoted in helm-values/rbac.yaml; shown with -s
        assert "attempting to grant RBAC permissions not currently held" in message, message
        assert 'APIGroups:["batch"], Resources:["jobs"], Verbs:["create"]' in message, message
        assert s.namespace in message, message
    finally:
        s.delete_namespace_on_user_delete = True
        await s.delete_forever()


async def test_a_workspace_service_account_exists_before_its_pod(hub, node, admin):
    """ServiceAccount admission refuses a pod naming a ServiceAccount that does not exist yet."""
    s = spawner(hub, user(), catalogue(), workspace_service_account="workspace")
    await s.start()
    try:
        pod = await read(admin, f"/api/v1/namespaces/{s.namespace}/pods/{s.pod_name}")
        assert pod["spec"]["serviceAccountName"] == "workspace"
    finally:
        await s.stop()
        s.delete_namespace_on_user_delete = True
        await s.delete_forever()


async def test_conda_init_container_passes_a_requests_cpu_quota_without_a_limit_range(hub, node, tmp_path):
    cat = catalogue(
        limit_range=None,
        conda_environments=[
            {
                "name": "eo",
                "display_name": "Python (EO)",
                "environment_yml": "name: eo\ndependencies: [python]\n",
            }
        ],
    )
    cat["profiles"][0].pop("limit_range")
    s = spawner(
        hub,
        user(),
        cat,
        workspace_volume={"name": "workspace", "size": "1Gi", "mount_path": "/home/jovyan"},
        conda_builder="venv",
    )
    try:
        await s.start()
    finally:
        await s.stop()
        s.delete_namespace_on_user_delete = True
        await s.delete_forever()


async def test_the_token_secret_refresh_reaches_the_running_pods_files(hub, node, admin):
    """publish_oidc_token (the authenticator's refresh) rewrites the Secret as the hub; the node,
    allowed by the Node authorizer to watch that one Secret of its pod, rewrites the mounted file."""
    s = spawner(hub, user(), catalogue())
    await s.run_auth_state_hook({"access_token": "first-token", "expires_at": time.time() + 600})
    await s.start()
    try:
        assert s.oidc_token_mount_path, "the token mount is on by default"
        root = node.workdir / "node" / "pods" / s.namespace / s.pod_name / "root"
        token_file = root / s.oidc_token_mount_path.lstrip("/") / "access_token"

        async def content(expected):
            try:
                return token_file.read_text() == expected
            except OSError:
                return False

        await eventually(lambda: content("first-token"))
        assert await s.publish_oidc_token({"access_token": "second-token", "expires_at": time.time() + 600})
        await eventually(lambda: content("second-token"))
    finally:
        await s.stop()
        s.delete_namespace_on_user_delete = True
        await s.delete_forever()


async def test_a_namespace_deleted_behind_the_hubs_back_while_it_terminates(hub, node, admin):
    """kubesim removes a namespace at once; a real one is Terminating until the namespace
    controller has emptied it, and refuses new objects meanwhile (403 "being terminated")."""
    s = spawner(hub, user(), catalogue())
    await s.start()
    await s.stop()
    await client.CoreV1Api(admin).delete_namespace(s.namespace)
    try:
        await s.start()  # the spawner believes the namespace is there (its state says so)
        pod = await read(admin, f"/api/v1/namespaces/{s.namespace}/pods/{s.pod_name}")
        assert pod["status"]["phase"] == "Running"
    finally:
        await s.stop()
        s.delete_namespace_on_user_delete = True
        await s.delete_forever()
