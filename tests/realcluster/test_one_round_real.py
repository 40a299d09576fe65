"""A warm spawn's pod, created in the same round as its ConfigMaps, Secrets and claims, starts
correctly on a real API server (real admission: ServiceAccount, LimitRanger, ResourceQuota,
Pod Security; kubesim's process kubelet as the node).

Whether the pod went out in the same round is read from the spawner's own requests: the pod
create was sent before the workspace writes were answered.
"""

from __future__ import annotations

import time

import pytest

from apex_hub.spawner import oidc_token
from tests.realcluster.test_spawner_real import (  # noqa: F401 - pull_secret: a fixture
    catalogue,
    eventually,
    pull_secret,
    read,
    spawner,
    user,
)

pytestmark = pytest.mark.realcluster


def observe(s) -> dict:
    """Record when the spawner sends its pod and when its workspace writes are answered."""
    seen: dict = {}
    send_pod, write = s._send_pod, s._write_workspace

    async def timed_send_pod(pod, request_timeout):
        seen.setdefault("pod_sent", time.monotonic())
        await send_pod(pod, request_timeout)
        seen["pod_created"] = time.monotonic()

    async def timed_write(*args, **kwargs):
        seen["workspace_sent"] = time.monotonic()
        try:
            return await write(*args, **kwargs)
        finally:
            seen["workspace_done"] = time.monotonic()

    s._send_pod, s._write_workspace = timed_send_pod, timed_write
    return seen


async def test_a_pod_created_in_the_same_round_as_its_configmaps_secrets_and_claims_starts(hub, node, admin):
    s = spawner(hub, user(), catalogue())
    await s.run_auth_state_hook({"access_token": "in-the-round", "expires_at": time.time() + 600})
    await s.start()  # cold: namespace, then the workspace, then the pod
    await s.stop()  # sweeps the server's ConfigMaps, Secrets, Role and RoleBinding
    ns = s.namespace
    # new in this spawn: a ConfigMap and a claim that did not exist before
    profile = catalogue()["profiles"][0]
    extra = {
        "config_maps": [
            *profile["config_maps"],
            {"name": "motd", "key": "motd", "mount_path": "/etc/motd", "content": "hello {username}\n"},
        ],
        "volumes": [*profile["volumes"], {"name": "extra", "size": "1Gi", "mount_path": "/extra"}],
    }
    s.profiles_catalogue = catalogue(**extra)
    seen = observe(s)
    try:
        await s.start()
        assert seen["pod_sent"] < seen["workspace_done"], "the pod waited for the workspace"
        pod = await read(admin, f"/api/v1/namespaces/{ns}/pods/{s.pod_name}")
        assert pod["spec"]["nodeName"] == node.name and pod["status"]["phase"] == "Running"
        assert pod["spec"]["serviceAccountName"] == "workspace"  # ServiceAccount admission passed
        # LimitRanger filled in what the profile leaves out; the quota admitted the pod
        assert all(c["resources"].get("requests") for c in pod["spec"]["containers"])
        # the objects written in the same round are there and in use
        claim = await read(admin, f"/api/v1/namespaces/{ns}/persistentvolumeclaims/extra")
        assert claim["metadata"]["name"] == "extra"
        secrets = await read(admin, f"/api/v1/namespaces/{ns}/secrets")
        names = {x["metadata"]["name"] for x in secrets["items"]}
        assert "apex-registry" in names  # the copied pull secret
        assert oidc_token.SECRET in names, names  # the server's token Secret, swept at the stop
        root = node.workdir / "node" / "pods" / ns / s.pod_name / "root"

        async def mounted():
            try:
                token = root / s.oidc_token_mount_path.lstrip("/") / oidc_token.TOKEN_KEY
                return (
                    (root / "etc/motd").read_text() == f"hello {s.user_slug}\n"
                    and (root / "home/jovyan/.bashrc").read_text() == f"export NS={ns}\n"
                    and token.read_text() == "in-the-round"
                )
            except OSError:
                return False

        await eventually(mounted)
    finally:
        await s.stop()
        s.delete_namespace_on_user_delete = True
        await s.delete_forever()
