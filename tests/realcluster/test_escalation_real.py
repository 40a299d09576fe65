"""The spawner's RBAC escalation check agrees with the real API server's, Role by Role.

As the hub's ServiceAccount (exactly helm-values/), each Role is created with ``dryRun=All``
in a namespace the hub manages: the real server's escalation prevention accepts it exactly
when ``escalation.missing(DEFAULT_HUB_RULES, rules)`` is empty, and the spawn of a profile
the hub cannot create is refused before anything is written.
"""

import json
import uuid

import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from tornado.web import HTTPError

from apex_hub.spawner.escalation import DEFAULT_HUB_RULES, missing
from tests.realcluster.test_spawner_real import _gone, catalogue, pull_secret, spawner, user  # noqa: F401 - pull_secret: a fixture

pytestmark = pytest.mark.realcluster

ROLES = {
    "pod-reader": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}],
    "job-runner": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}],
    "log-writer": [{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["create", "delete"]}],
    "secret-writer": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch"]}],
    "named-reader": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["settings"]}
    ],
    "pod-star": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}],
}


async def real_answer(kube, namespace, name, rules):
    """None when the real server would create the Role; else its refusal."""
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": f"{name}-{uuid.uuid4().hex[:6]}", "namespace": namespace},
        "rules": rules,
    }
    try:
        await kube._call(
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
            what=f"create Role {name}",
            body=body,
            query=[("dryRun", "All")],
        )
        return None
    except ApiException as exc:
        assert exc.status == 403, exc
        return json.loads(exc.body)["message"]


async def test_the_escalation_check_agrees_with_the_real_api_server(hub, node):
    s = spawner(hub, user(), catalogue())
    await s.start()
    try:
        kube = s.kube()
        for name, rules in ROLES.items():
            refusal = await real_answer(kube, s.namespace, name, rules)
            gap = missing(DEFAULT_HUB_RULES, rules)
            print(f"{name}: ours {[n.as_rule() for n in gap]}; real server: {refusal or 'allowed'}")
            assert (refusal is None) == (gap == []), (name, gap, refusal)
            if refusal:
                assert "attempting to grant RBAC permissions not currently held" in refusal
    finally:
        await s.stop()
        s.delete_namespace_on_user_delete = True
        await s.delete_forever()


async def test_a_profile_the_hub_cannot_create_is_refused_before_any_write(hub, node, admin):
    cat = catalogue(
        role_bindings=[
            {
                "name": "job-runner",
                "role": {"rules": [{"api_groups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]},
                "subjects": [{"kind": "ServiceAccount", "name": "default"}],
            }
        ]
    )
    s = spawner(hub, user(), cat)
    with pytest.raises(HTTPError) as info:
        await s.start()
    assert info.value.status_code == 500
    assert (
        "Profile 'full' cannot be started: the hub is not allowed to create its roles"
        in info.value.log_message
    )
    assert 'apiGroups: ["batch"], resources: [jobs], verbs: [create]' in info.value.log_message
    assert await _gone(admin, f"/api/v1/namespaces/{s.namespace}")
