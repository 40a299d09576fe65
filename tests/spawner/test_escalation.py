"""Profiles whose Roles the hub could not create (RBAC escalation prevention) are refused early."""

from __future__ import annotations

import copy

import pytest
import yaml

from apex_hub.profiles import Catalogue
from apex_hub.spawner.escalation import DEFAULT_HUB_RULES, Need, missing, profile_problems
from tests.helpers.spawner import CATALOGUE, make_spawner, obj, refused_start

JOBS = {"api_groups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]}


def with_profile(slug, **fields):
    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"].append({"slug": slug, "display_name": slug, **fields})
    return catalogue


def job_runner(slug="runner"):
    return with_profile(
        slug,
        role_bindings=[
            {
                "name": "job-runner",
                "role": {"rules": [JOBS]},
                "subjects": [{"kind": "ServiceAccount", "name": "workspace"}],
            }
        ],
    )


def test_the_default_hub_rules_are_the_clusterrole_of_helm_values():
    with open("helm-values/rbac.yaml") as f:
        role = next(d for d in yaml.safe_load_all(f) if d["kind"] == "ClusterRole")
    assert [dict(r) for r in DEFAULT_HUB_RULES] == role["rules"]


@pytest.mark.parametrize(
    "held, granted, gap",
    [
        (
            [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
            [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}],
            [Need("", "pods", "watch")],
        ),
        (
            [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
            [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}],
            [],
        ),
        (
            [{"apiGroups": [""], "resources": ["*/log"], "verbs": ["get"]}],
            [{"apiGroups": [""], "resources": ["pods/log", "pods"], "verbs": ["get"]}],
            [Need("", "pods", "get")],
        ),
        # a rule naming objects covers those names only; a requested "*" needs a held "*"
        (
            [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["a"]}],
            [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["get"],
                    "resourceNames": ["a", "b"],
                },
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
            ],
            [Need("", "configmaps", "get", "b"), Need("", "configmaps", "get")],
        ),
        (
            [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
            [{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}],
            [Need("", "pods", "*")],
        ),
    ],
)
def test_missing_follows_kubernetes_rule_covering(held, granted, gap):
    assert missing(held, granted) == gap


def test_a_role_the_hub_cannot_grant_names_profile_binding_and_rules():
    profile = Catalogue.from_dict(job_runner(), "t").profiles[-1]
    problems = profile_problems(profile, DEFAULT_HUB_RULES)
    assert problems == [
        "role_bindings[job-runner]: Role 'job-runner' grants what the hub does not hold:"
        ' {apiGroups: ["batch"], resources: [jobs], verbs: [create]};'
        ' {apiGroups: ["batch"], resources: [jobs], verbs: [get]}'
    ]
    held = [*DEFAULT_HUB_RULES, {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]}]
    assert profile_problems(profile, held) == []
    escalate = [
        *DEFAULT_HUB_RULES,
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]},
    ]
    assert profile_problems(profile, escalate) == []  # and bind, which the default holds


def test_manifest_roles_and_clusterrole_bindings_are_checked():
    docs = (
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: exec-{username}}\n"
        "rules: [{apiGroups: [''], resources: [pods/exec], verbs: [create]}]\n---\n"
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: edit}\n"
        "roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}\n"
        "subjects: [{kind: ServiceAccount, name: workspace}]\n"
    )
    profile = Catalogue.from_dict(
        with_profile("m", manifests=[{"name": "rbac", "content": docs}]), "t"
    ).profiles[-1]
    problems = profile_problems(profile, DEFAULT_HUB_RULES)
    assert len(problems) == 2, problems
    assert "manifests Role 'exec-" in problems[0] and "resources: [pods/exec], verbs: [create]" in problems[0]
    assert "manifests RoleBinding 'edit': binds ClusterRole 'edit'" in problems[1]
    assert "verbs: [bind], resourceNames: [edit]" in problems[1]
    bind = {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterroles"],
        "verbs": ["bind"],
        "resourceNames": ["edit"],
    }
    exec_ = {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}
    assert profile_problems(profile, [*DEFAULT_HUB_RULES, bind, exec_]) == []


def test_the_shipped_example_profiles_need_nothing_the_hub_lacks():
    with open("examples/profiles.yml") as f:
        catalogue = Catalogue.from_dict(yaml.safe_load(f), "examples/profiles.yml")
    assert {p.slug: profile_problems(p, DEFAULT_HUB_RULES) for p in catalogue.profiles} == {
        p.slug: [] for p in catalogue.profiles
    }
    assert any(p.role_bindings for p in catalogue.profiles)  # the check had something to check


async def test_the_form_omits_and_the_spawn_refuses_a_profile_the_hub_cannot_create(ksim, caplog):
    spawner = make_spawner(
        ksim, "rita", catalogue=job_runner("runner-a"), user_options={"profile": "runner-a"}
    )
    assert [e["slug"] for e in spawner._profile_entries()] == ["lab"]  # "large" needs a group
    message = await refused_start(spawner, caplog)
    assert message.startswith(
        "Profile 'runner-a' cannot be started: the hub is not allowed to create its roles"
    )
    assert "role_bindings[job-runner]" in message and 'apiGroups: ["batch"], resources: [jobs]' in message
    logged = [r.getMessage() for r in caplog.records if "runner-a" in r.getMessage()]
    assert logged and "APExSpawner.hub_rules" in logged[0] and "verbs: [create]" in logged[0]
    assert obj(ksim, "namespaces", "", spawner.namespace) is None  # nothing was written


async def test_a_profile_is_offered_once_the_operator_lists_the_rules_it_needs(ksim):
    held = [
        *map(dict, DEFAULT_HUB_RULES),
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]},
    ]
    spawner = make_spawner(
        ksim, "sam", catalogue=job_runner("runner-b"), user_options={"profile": "runner-b"}, hub_rules=held
    )
    assert "runner-b" in [e["slug"] for e in spawner._profile_entries()]
    await spawner.start()
    role = obj(ksim, "roles", spawner.namespace, "job-runner", "rbac.authorization.k8s.io")
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]}]
    await spawner.stop()


async def test_hub_rules_none_switches_the_check_off(ksim):
    spawner = make_spawner(ksim, "tom", catalogue=job_runner("runner-c"), hub_rules=None)
    assert "runner-c" in [e["slug"] for e in spawner._profile_entries()]
