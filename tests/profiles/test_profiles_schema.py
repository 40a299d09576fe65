"""Profile helpers the spawner uses: render, KubeSpawner traits, quantities, allow-list."""

import pytest
from kubernetes_asyncio.client import V1SecurityContext
from kubespawner import KubeSpawner

from apex_hub.profiles import ALLOWED_OVERRIDES, Catalogue, memory_bytes, render
from apex_hub.profiles.overrides import FIELD_FOR_TRAIT, SECURITY_CONTEXT_KEYS
from apex_hub.profiles.quantities import is_quantity

PROFILE = Catalogue.from_dict(
    {
        "profiles": [
            {
                "slug": "work",
                "display_name": "Work",
                "description": "d",
                "image": "img:1",
                "cpu_limit": 2,
                "cpu_guarantee": "250m",
                "mem_limit": "4G",
                "mem_guarantee": "512Mi",
                "extra_resource_limits": {"nvidia.com/gpu": 1},
                "node_selector": {"pool": "user"},
                "tolerations": [
                    {
                        "key": "k",
                        "operator": "Equal",
                        "value": "v",
                        "effect": "NoExecute",
                        "tolerationSeconds": 30,
                    }
                ],
                "default_url": "/lab",
                "env": {"OWNER": "{username}", "REF": {"from_secret": {"name": "s", "key": "k"}}},
                "config_maps": [
                    {
                        "name": "bashrc",
                        "content": "ns={namespace} p={profile} ${HOME} {json: 1}",
                        "mount_path": "/etc/bashrc",
                    },
                    {"name": "raw", "content": "{username} stays", "template": False},
                    {"name": "existing"},
                ],
                "volumes": [
                    {
                        "name": "ws",
                        "claim_name": "ws-{username}",
                        "size": "1Gi",
                        "mount_path": "/workspace",
                        "annotations": {"owner": "{username}"},
                    }
                ],
                "init_containers": [
                    {"name": "init", "image": "busybox", "command": ["sh", "-c", "echo {username}"]}
                ],
                "manifests": [
                    {
                        "name": "sa",
                        "content": "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n"
                        "  name: sa-{username}\n  namespace: {namespace}\n",
                    },
                    {
                        "name": "two",
                        "content": [
                            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
                            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "{username}"}},
                        ],
                    },
                ],
                "role_bindings": [
                    {
                        "name": "rb",
                        "role": {"rules": [{"resources": ["pods"], "verbs": ["get"]}]},
                        "subjects": [{"kind": "User", "name": "{username}"}],
                    }
                ],
                "kubespawner_override": {"start_timeout": 600},
            }
        ]
    }
).get("work")


def test_render_fills_templated_fields_only():
    done = PROFILE.render(username="alice", namespace="apex-alice")
    assert done.config_maps[0].content == "ns=apex-alice p=work ${HOME} {json: 1}"
    assert done.config_maps[1].content == "{username} stays"
    assert done.config_maps[2].content is None
    assert done.env["OWNER"] == "alice"
    assert done.env["REF"].from_secret.name == "s"
    assert done.volumes[0].claim_name == "ws-alice"
    assert done.volumes[0].annotations == {"owner": "alice"}
    assert done.init_containers[0]["command"][2] == "echo alice"
    assert done.manifests[0].documents()[0]["metadata"] == {"name": "sa-alice", "namespace": "apex-alice"}
    assert done.manifests[1].documents()[1]["metadata"]["name"] == "alice"
    assert done.role_bindings[0].subjects[0].name == "alice"
    # the catalogue's copy is untouched
    assert PROFILE.env["OWNER"] == "{username}"
    assert PROFILE.volumes[0].claim_name == "ws-{username}"


def test_manifest_documents_with_values():
    docs = PROFILE.manifests[0].documents({"username": "bob", "namespace": "apex-bob"})
    assert docs == [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "sa-bob", "namespace": "apex-bob"},
        }
    ]
    assert PROFILE.manifests[1].kinds == ["ConfigMap", "Secret"]


@pytest.mark.parametrize("value", ["a b", "x'y", "a\nb", "../x", "{username}", "", "$(id)", "-x", "a/b"])
def test_render_refuses_unescaped_values(value):
    with pytest.raises(ValueError, match="not safe to substitute"):
        PROFILE.render(username=value, namespace="ns")


def test_render_text():
    assert (
        render("{username}/{namespace} {other} {{username}}", {"username": "u", "namespace": "n"})
        == "u/n {other} {username}"
    )  # {{x}}: the escape
    with pytest.raises(ValueError, match=r"no value given for placeholder {profile}"):
        render("{profile}", {"username": "u"})
    with pytest.raises(ValueError, match="unknown placeholder"):
        render("x", {"user": "u"})


def test_kubespawner_traits():
    traits = PROFILE.kubespawner_traits()
    assert traits == {
        "image": "img:1",
        "cpu_limit": 2.0,
        "cpu_guarantee": 0.25,
        "default_url": "/lab",
        "mem_limit": 4 * 1024**3,
        "mem_guarantee": 512 * 1024**2,
        "extra_resource_limits": {"nvidia.com/gpu": "1"},
        "node_selector": {"pool": "user"},
        "tolerations": [
            {"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute", "tolerationSeconds": 30}
        ],
        "start_timeout": 600,
    }
    spawner_traits = KubeSpawner.class_trait_names()
    assert set(traits) <= set(spawner_traits)
    entry = PROFILE.profile_list_entry()
    assert entry["slug"] == "work" and entry["kubespawner_override"] == traits


def test_allowed_overrides_are_kubespawner_traits_and_safe():
    names = set(KubeSpawner.class_trait_names())
    assert ALLOWED_OVERRIDES <= names
    assert set(FIELD_FOR_TRAIT) <= names
    for dangerous in (
        "privileged",
        "allow_privilege_escalation",
        "container_security_context",
        "pod_security_context",
        "extra_containers",
        "volumes",
        "volume_mounts",
        "service_account",
        "automount_service_account_token",
        "namespace",
    ):
        assert dangerous not in ALLOWED_OVERRIDES


def test_security_context_keys_match_kubernetes():
    assert SECURITY_CONTEXT_KEYS == set(V1SecurityContext.attribute_map.values())


@pytest.mark.parametrize(
    "value, expected",
    [
        ("4G", 4 * 1024**3),
        ("512Mi", 512 * 1024**2),
        ("1.5G", int(1.5 * 1024**3)),
        ("100K", 102400),
        ("2Ti", 2 * 1024**4),
        (1000, 1000),
        ("1000", 1000),
    ],
)
def test_memory_bytes(value, expected):
    assert memory_bytes(value) == expected


@pytest.mark.parametrize("value", ["1", "10Gi", "500m", "1.5", "1e3", "2k", "+1", ".5Gi"])
def test_quantities(value):
    assert is_quantity(value)


@pytest.mark.parametrize("value", ["", "1GB", "ten", "1 Gi", "1g", "Gi"])
def test_not_quantities(value):
    assert not is_quantity(value)


def test_file_modes():
    cms = [
        {"name": f"c{n}", "default_mode": mode} for n, mode in enumerate([0o600, "0644", "0o755", "440", 0])
    ]
    profile = Catalogue.from_dict(
        {"profiles": [{"slug": "x", "display_name": "x", "config_maps": cms}]}
    ).profiles[0]
    assert [c.default_mode for c in profile.config_maps] == [0o600, 0o644, 0o755, 0o440, 0]


def test_role_binding_helpers():
    binding = PROFILE.role_bindings[0]
    assert binding.role_name == "rb"
    assert binding.role.rules[0].to_k8s() == {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
    assert binding.persist is False


def test_conda_hash_changes_with_content():
    def env(text):
        return (
            Catalogue.from_dict(
                {
                    "profiles": [
                        {
                            "slug": "x",
                            "display_name": "x",
                            "conda_environments": [{"name": "e", "environment_yml": text}],
                        }
                    ]
                }
            )
            .profiles[0]
            .conda_environments[0]
        )

    a, b = env("dependencies: [python]\n"), env("dependencies: [python, numpy]\n")
    assert a.content_hash != b.content_hash
    assert a.content_hash == env("dependencies: [python]\n").content_hash
    assert a.title == "e"
