"""Issue 14.3 and 14.6 at catalogue load: one security gate for every container and pod field,
and YAML that cannot expand without bound."""

from __future__ import annotations

import pytest

from apex_hub.profiles import Catalogue, CatalogueError

HINT = "allow_security_overrides: true"
EVIL_INIT = {
    "name": "evil",
    "image": "busybox:1.36",
    "command": ["sh", "-c", "cat /host/etc/shadow"],
    "securityContext": {"privileged": True, "runAsUser": 0, "capabilities": {"add": ["SYS_ADMIN"]}},
}


def catalogue(allow=False, **fields):
    return {"allow_security_overrides": allow, "profiles": [{"slug": "lab", "display_name": "Lab", **fields}]}


def problems(data):
    with pytest.raises(CatalogueError) as info:
        Catalogue.from_dict(data)
    return info.value.problems


@pytest.mark.parametrize(
    "fields, expected",
    [
        # the attack of the issue: an init container with its own securityContext
        (
            {"init_containers": [EVIL_INIT]},
            "init_containers: evil.securityContext: a container may not bring its own securityContext",
        ),
        (
            {
                "init_containers": [
                    {"name": "p", "image": "x", "ports": [{"containerPort": 80, "hostPort": 80}]}
                ]
            },
            "init_containers: p.ports[0].hostPort: publishes a port on the node",
        ),
        (
            {
                "init_containers": [
                    {
                        "name": "m",
                        "image": "x",
                        "volumeMounts": [
                            {"name": "workspace", "mountPath": "/w", "mountPropagation": "Bidirectional"}
                        ],
                    }
                ]
            },
            "init_containers: m.volumeMounts[0].mountPropagation",
        ),
        (
            {"kubespawner_override": {"extra_containers": [EVIL_INIT]}},
            "kubespawner_override: extra_containers: not an allowed override",
        ),
        (
            {"kubespawner_override": {"extra_container_config": {"securityContext": {"privileged": True}}}},
            "kubespawner_override: extra_container_config.securityContext",
        ),
        (
            {
                "kubespawner_override": {
                    "extra_container_config": {"ports": [{"containerPort": 8888, "hostPort": 8888}]}
                }
            },
            "kubespawner_override: extra_container_config.ports[0].hostPort",
        ),
        (
            {"kubespawner_override": {"extra_pod_config": {"hostPID": True}}},
            "kubespawner_override: extra_pod_config.hostPID: weakens pod security",
        ),
        (
            {"kubespawner_override": {"extra_pod_config": {"host_network": True}}},
            "kubespawner_override: extra_pod_config.host_network: weakens pod security",
        ),
        (
            {"kubespawner_override": {"extra_pod_config": {"nodeName": "control-plane-1"}}},
            "kubespawner_override: extra_pod_config.nodeName: weakens pod security",
        ),
        (
            {"kubespawner_override": {"extra_pod_config": {"shareProcessNamespace": True}}},
            "kubespawner_override: extra_pod_config.shareProcessNamespace",
        ),
        (
            {
                "kubespawner_override": {
                    "extra_pod_config": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
                }
            },
            "kubespawner_override: extra_pod_config.volumes: not allowed here",
        ),
        (
            {"kubespawner_override": {"extra_pod_config": {"ephemeralContainers": [EVIL_INIT]}}},
            "kubespawner_override: extra_pod_config.ephemeralContainers: not allowed here",
        ),
        (
            {"kubespawner_override": {"gid": 0}},
            "kubespawner_override: gid: 0 runs the server in the root group",
        ),
        ({"kubespawner_override": {"fs_gid": 0}}, "kubespawner_override: fs_gid: 0 gives the volumes"),
        (
            {"kubespawner_override": {"supplemental_gids": [100, 0]}},
            "kubespawner_override: supplemental_gids: 0 adds the root group",
        ),
        ({"kubespawner_override": {"uid": 0}}, "kubespawner_override: uid: 0 runs the server as root"),
        ({"security_context": {"privileged": True}}, "security_context: overriding pod security is off"),
    ],
)
def test_every_path_to_a_weaker_pod_needs_the_operators_opt_in(fields, expected):
    found = problems(catalogue(**fields))
    assert any(p.startswith(f"profile 'lab': {expected}") for p in found), found
    assert all(HINT in p or "not an allowed override" in p or "not allowed here" in p for p in found)


def test_with_the_opt_in_the_same_settings_load():
    data = catalogue(
        allow=True,
        init_containers=[EVIL_INIT],
        kubespawner_override={"gid": 0, "extra_pod_config": {"hostPID": True}},
    )
    profile = Catalogue.from_dict(data).profiles[0]
    assert profile.init_containers[0]["securityContext"]["privileged"] is True


def test_harmless_init_containers_load():
    profile = Catalogue.from_dict(
        catalogue(
            init_containers=[{"name": "prepare", "image": "busybox:1.36", "ports": [{"containerPort": 9000}]}]
        )
    ).profiles[0]
    assert profile.init_containers[0]["name"] == "prepare"


# -- YAML that expands without bound ------------------------------------------------------


def bomb(levels=9, width=9):
    """A 'billion laughs' catalogue: 9 levels of 9 aliases, ~550 bytes, 9**9 strings once walked.

    PyYAML builds aliases as shared references, so the hang comes later, from whatever walks
    the tree (validation, deep copies of defaults, JSON); refusing the alias stops all of it."""
    lines = ['a0: &a0 "lol"']
    for n in range(1, levels + 1):
        lines.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * width) + "]")
    lines.append(f"profiles: [{{slug: lab, display_name: *a{levels}}}]")
    return "\n".join(lines) + "\n"


def test_the_alias_bomb_is_refused_at_the_first_alias():
    text = bomb()
    assert len(text.encode()) < 700  # no bigger than the 695-byte bomb
    # refused while composing, before anything is expanded: the error points at line 2
    with pytest.raises(CatalogueError) as info:
        Catalogue.from_yaml(bomb(levels=3, width=3))  # a small one: would load if aliases were allowed
    (problem,) = info.value.problems
    assert problem.startswith("YAML syntax: line 2, column")
    assert "alias *a0: YAML aliases are not allowed" in problem
    with pytest.raises(CatalogueError, match="YAML aliases are not allowed"):
        Catalogue.from_yaml(text)


@pytest.mark.parametrize(
    "fields",
    [
        {
            "manifests": [
                {
                    "name": "m",
                    "content": "a: &a [x, x]\nb: [*a, *a]\napiVersion: v1\nkind: ConfigMap\n"
                    "metadata: {name: m}\n",
                }
            ]
        },
        {"conda_environments": [{"name": "e", "environment_yml": "x: &x [python]\ndependencies: *x\n"}]},
        {"condarc": "c: &c [conda-forge]\nchannels: *c\n"},
    ],
)
def test_aliases_inside_profile_text_are_refused_too(fields):
    found = problems(catalogue(**fields))
    assert any("YAML aliases are not allowed" in p for p in found), found


def test_an_anchor_without_alias_is_fine():
    Catalogue.from_yaml("profiles:\n  - &lab {slug: lab, display_name: Lab}\n")
