"""Issue 16: each ApplicationHub construct that real configurations use, converted faithfully."""

import pytest
import yaml

from apex_hub.profiles import Catalogue, CatalogueError, convert_eoepca
from apex_hub.profiles.__main__ import kinds_to_allow
from apex_hub.profiles.eoepca import DEFAULT_MANIFEST_KINDS, dump_yaml
from apex_hub.profiles.templating import escape, has_placeholders, render


def one(profile: dict):
    """Convert one ApplicationHub profile; return (our dict, report, validated Profile)."""
    base = {"id": "p", "groups": ["g"], "definition": {"display_name": "P", "slug": "p"}}
    data, report = convert_eoepca({"profiles": [{**base, **profile}]})
    (validated,) = Catalogue.from_yaml(dump_yaml(data)).profiles
    return data["profiles"][0], report, validated


def test_secret_mount_names_are_templated():
    _, _, profile = one(
        {
            "secret_mounts": [
                {"name": "aws-credentials-{{ spawner.user.name }}", "mount_path": "/home/jovyan/.aws"}
            ]
        }
    )
    assert profile.secret_mounts[0].name == "aws-credentials-{username}"
    assert profile.render(username="jane-doe", namespace="ns").secret_mounts[0].name == (
        "aws-credentials-jane-doe"
    )


def test_secret_mount_name_is_still_validated():
    with pytest.raises(CatalogueError, match="secret_mounts"):
        Catalogue.from_yaml(
            yaml.safe_dump(
                {
                    "profiles": [
                        {
                            "slug": "p",
                            "display_name": "P",
                            "secret_mounts": [{"name": "Bad_{username}", "mount_path": "/x"}],
                        }
                    ]
                }
            )
        )


def test_apphub_namespace_pattern_becomes_ours():
    out, report, profile = one(
        {
            "pod_env_vars": {"DASK_GATEWAY": "http://gw.jupyter-{{ spawner.user.name }}.svc:80"},
            "manifests": [
                {
                    "name": "es",
                    "content": [
                        {
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "metadata": {"name": "c", "namespace": "jupyter-{{spawner.user.name}}"},
                        }
                    ],
                }
            ],
        }
    )
    assert profile.env["DASK_GATEWAY"] == "http://gw.{namespace}.svc:80"
    assert (
        profile.manifests[0].documents({"username": "a", "namespace": "apex-a", "profile": "p"})[0][
            "metadata"
        ]["namespace"]
        == "apex-a"
    )
    assert sum("'jupyter-<user name>' is now {namespace}" in r for r in report) == 2


def test_nameless_pull_secret_is_dropped_and_reported():
    out, report, profile = one({"image_pull_secrets": [{"data": None}, {"name": "cr"}]})
    assert profile.image_pull_secrets == ["cr"]
    assert any("image_pull_secrets[0]: no name; dropped" in r for r in report)


def test_placeholder_escape():
    assert render("a {{namespace}} b {namespace}", {"namespace": "ns"}) == "a {namespace} b ns"
    assert escape("${username} {profile}") == "${{username}} {{profile}}"
    assert not has_placeholders("{{username}}")
    assert render(escape("echo ${username}"), {"username": "u"}) == "echo ${username}"


def test_converter_escapes_what_apphub_left_alone():
    _, report, profile = one(
        {
            "pod_env_vars": {"A": "{namespace}", "B": "${username}-{{ spawner.user.name }}"},
            "config_maps": [
                {"name": "rc", "key": "rc", "mount_path": "/etc/rc", "content": "echo ${username}\n"}
            ],
        }
    )
    rendered = profile.render(username="alice", namespace="apex-alice")
    assert rendered.env["A"] == "{namespace}"
    assert rendered.env["B"] == "${username}-alice"
    assert rendered.config_maps[0].content == "echo ${username}\n"
    assert any("escaped" in r and r.startswith("profile 'p': env.A") for r in report)


def test_node_selector_values_are_label_values():
    with pytest.raises(CatalogueError, match=r"node_selector.*not a valid label value"):
        Catalogue.from_yaml(
            yaml.safe_dump(
                {
                    "profiles": [
                        {
                            "slug": "p",
                            "display_name": "P",
                            "node_selector": {"node-role.kubernetes.io/worker": '"true"'},
                        }
                    ]
                }
            )
        )
    _, report, profile = one({"node_selector": {"node-role.kubernetes.io/worker": '"true"'}})
    assert profile.node_selector == {"node-role.kubernetes.io/worker": "true"}
    assert any("is not a label value" in r for r in report)


def test_manifest_kinds_outside_the_default_are_named():
    _, report, profile = one(
        {
            "manifests": [
                {
                    "name": "d",
                    "content": [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}],
                }
            ]
        }
    )
    assert any("kind Deployment is not in the spawner's default manifest_kinds" in r for r in report)
    catalogue = Catalogue.from_yaml(
        dump_yaml(
            {"profiles": [{"slug": "p", "display_name": "P", "manifests": profile.model_dump()["manifests"]}]}
        )
    )
    (line,) = kinds_to_allow(catalogue)
    assert "profile 'p'" in line and "Deployment" in line and "manifest_kinds" in line


def test_default_manifest_kinds_match_the_spawner():
    from apex_hub.spawner.workspace import DEFAULT_MANIFEST_KINDS as SPAWNER

    assert tuple(DEFAULT_MANIFEST_KINDS) == tuple(SPAWNER)


def test_crossplane_object_is_unwrapped_and_release_dropped():
    _, report, profile = one(
        {
            "manifests": [
                {
                    "name": "m",
                    "content": [
                        {
                            "apiVersion": "helm.crossplane.io/v1beta1",
                            "kind": "Release",
                            "metadata": {"name": "r"},
                            "spec": {},
                        },
                        {
                            "apiVersion": "kubernetes.crossplane.io/v1alpha2",
                            "kind": "Object",
                            "metadata": {"name": "o"},
                            "spec": {
                                "forProvider": {
                                    "manifest": {
                                        "apiVersion": "v1",
                                        "kind": "Service",
                                        "metadata": {"name": "s"},
                                    }
                                }
                            },
                        },
                    ],
                }
            ]
        }
    )
    assert profile.manifests[0].kinds == ["Service"]
    assert any("NOT CONVERTED: Release 'r'" in r for r in report)
    assert any("Crossplane Object 'o'" in r for r in report)


def test_empty_groups_is_reported_as_open_to_everyone():
    _, report, profile = one({"groups": []})
    assert profile.groups == []
    assert any("OPEN TO EVERY USER" in r for r in report)


def test_renamed_config_map_is_followed():
    _, report, profile = one(
        {
            "config_maps": [{"name": "my_cfg", "key": "k", "content": "x"}],
            "env_from_config_maps": ["my_cfg"],
            "pod_env_vars": {"V": {"from_config_map": {"name": "my_cfg", "key": "k"}}},
        }
    )
    assert profile.config_maps[0].name == "my-cfg"
    assert profile.env_from_config_maps == ["my-cfg"]
    assert profile.env["V"].from_config_map.name == "my-cfg"


def test_manifest_rename_is_reported():
    _, report, profile = one(
        {
            "manifests": [
                {
                    "name": "My_Manifest",
                    "content": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}],
                }
            ]
        }
    )
    assert profile.manifests[0].name == "my-manifest"
    assert any("manifests[0]: name 'My_Manifest' is now 'my-manifest'" in r for r in report)


def test_value_from_config_map_key_ref_is_kept():
    _, _, profile = one(
        {
            "definition": {
                "display_name": "P",
                "slug": "p",
                "kubespawner_override": {
                    "environment": {"V": {"valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}}
                },
            }
        }
    )
    assert (profile.env["V"].from_config_map.name, profile.env["V"].from_config_map.key) == ("c", "k")


def test_default_service_account_bindings_move_to_the_workspace_account():
    _, report, profile = one(
        {
            "role_bindings": [
                {
                    "name": "rb",
                    "role": {"name": "r", "verbs": ["get"], "resources": ["pods"]},
                    "subjects": [{"kind": "ServiceAccount", "name": "default"}],
                }
            ]
        }
    )
    assert profile.role_bindings[0].subjects[0].name == "workspace"
    assert profile.service_account_token is True
    assert any("'default' ServiceAccount is now 'workspace'" in r for r in report)


def test_persist_false_claims_become_scratch_and_no_default_claim():
    _, report, profile = one(
        {
            "volumes": [
                {
                    "name": "calrissian",
                    "size": "1Gi",
                    "persist": False,
                    "volume_mount": {"name": "calrissian", "mount_path": "/calrissian"},
                }
            ]
        }
    )
    assert profile.volumes[0].scratch and not profile.volumes[0].persist
    assert profile.workspace_volume is False


def test_scratch_needs_size_and_no_persist():
    with pytest.raises(CatalogueError, match="scratch claim"):
        Catalogue.from_yaml(
            yaml.safe_dump(
                {
                    "profiles": [
                        {
                            "slug": "p",
                            "display_name": "P",
                            "volumes": [{"name": "v", "size": "1Gi", "scratch": True, "mount_path": "/v"}],
                        }
                    ]
                }
            )
        )


def test_conda_needs_a_volume_when_the_workspace_volume_is_off():
    """Known at load time: with no volume at all there is nothing to build environments into
    (a volume of another name is refused at spawn, where workspace_volume_name is known)."""
    base = {
        "slug": "p",
        "display_name": "P",
        "workspace_volume": False,
        "conda_environments": [{"name": "eo", "environment_yml": "dependencies: [python]\n"}],
    }
    with pytest.raises(
        CatalogueError,
        match=r"profile 'p': conda_environments: .*workspace_volume:"
        " false and no volumes at all; add a volume named"
        " 'workspace'",
    ):
        Catalogue.from_yaml(yaml.safe_dump({"profiles": [base]}))
    volume = {"name": "workspace", "size": "1Gi", "mount_path": "/home/jovyan"}
    assert len(Catalogue.from_yaml(yaml.safe_dump({"profiles": [{**base, "volumes": [volume]}]}))) == 1


def test_workspace_pull_secret_must_be_made_by_a_manifest():
    base = {"slug": "p", "display_name": "P", "workspace_image_pull_secrets": ["regcred"]}
    with pytest.raises(CatalogueError, match=r"workspace_image_pull_secrets.*not made by"):
        Catalogue.from_yaml(yaml.safe_dump({"profiles": [base]}))
    external = {
        "apiVersion": "external-secrets.io/v1beta1",
        "kind": "ExternalSecret",
        "metadata": {"name": "es"},
        "spec": {"target": {"name": "regcred"}},
    }
    (profile,) = Catalogue.from_yaml(
        yaml.safe_dump({"profiles": [{**base, "manifests": [{"name": "m", "content": [external]}]}]})
    ).profiles
    assert profile.workspace_image_pull_secrets == ["regcred"]


def test_credentials_in_clear_are_warned_about():
    _, report, _ = one(
        {
            "pod_env_vars": {"AWS_SECRET_ACCESS_KEY": "abc", "CRYPT_KEY": "k", "HOME": "/w"},
            "manifests": [
                {
                    "name": "s",
                    "content": [
                        {
                            "apiVersion": "v1",
                            "kind": "Secret",
                            "metadata": {"name": "s"},
                            "data": {"k": "dg=="},
                        }
                    ],
                }
            ],
        }
    )
    warnings = [r for r in report if "WARNING: CREDENTIAL" in r]
    assert len(warnings) == 3
    assert any("env.AWS_SECRET_ACCESS_KEY" in w and "from_secret" in w for w in warnings)
    assert not any("env.HOME" in w for w in warnings)


def test_pull_secret_made_by_an_external_secret_is_used_in_place():
    external = {
        "apiVersion": "external-secrets.io/v1beta1",
        "kind": "ExternalSecret",
        "metadata": {"name": "regcred"},
        "spec": {"target": {"name": "regcred"}},
    }
    out, report, profile = one(
        {
            "image_pull_secrets": [{"name": "regcred"}, {"name": "hub-cr"}],
            "manifests": [{"name": "es", "content": [external]}],
        }
    )
    assert profile.image_pull_secrets == ["hub-cr"]
    assert profile.workspace_image_pull_secrets == ["regcred"]
    assert any("workspace_image_pull_secrets" in r for r in report)


def test_check_command_names_the_kinds_to_allow(tmp_path, capsys):
    from apex_hub.profiles.__main__ import main

    path = tmp_path / "p.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "profiles": [
                    {
                        "slug": "dask",
                        "display_name": "Dask",
                        "manifests": [
                            {
                                "name": "m",
                                "content": [
                                    {
                                        "apiVersion": "apps/v1",
                                        "kind": "Deployment",
                                        "metadata": {"name": "gw"},
                                    },
                                    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gw"}},
                                ],
                            }
                        ],
                    }
                ]
            }
        )
    )
    assert main(["check", str(path)]) == 0
    (note,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("NOTE")]
    assert "profile 'dask': manifests of kind Deployment are not in" in note
    assert "Service" not in note


def test_check_and_convert_name_the_rules_the_hub_must_be_granted(tmp_path, capsys):
    """An EOEPCA profile whose Role grants pods/exec and batch jobs is refused at every spawn by
    Kubernetes' escalation prevention until the hub holds those rules: both commands say which."""
    from apex_hub.profiles.__main__ import main

    source = tmp_path / "config.yml"
    source.write_text(
        yaml.safe_dump(
            {
                "profiles": [
                    {
                        "id": "coder",
                        "groups": ["g"],
                        "definition": {"display_name": "Coder", "slug": "coder"},
                        "role_bindings": [
                            {
                                "name": "rb-exec",
                                "role": {
                                    "name": "exec",
                                    "api_groups": [""],
                                    "resources": ["pods", "pods/exec"],
                                    "verbs": ["get", "create"],
                                },
                                "subjects": [{"kind": "ServiceAccount", "name": "default"}],
                            },
                            {
                                "name": "rb-jobs",
                                "role": {
                                    "name": "jobs",
                                    "api_groups": ["batch"],
                                    "resources": ["jobs"],
                                    "verbs": ["create", "delete"],
                                },
                                "subjects": [{"kind": "ServiceAccount", "name": "default"}],
                            },
                        ],
                    }
                ]
            }
        )
    )
    target = tmp_path / "profiles.yml"
    assert main(["convert-eoepca", str(source), str(target)]) == 0
    out = capsys.readouterr().out
    note = out[out.index("NOTE: profile 'coder': its Roles grant") :]
    assert note.splitlines()[1:3] == [
        '    - {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]}',
        '    - {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete"]}',
    ]
    assert main(["check", str(target)]) == 0
    assert note in capsys.readouterr().out
    # the rules named are exactly what lets the spawner offer the profile
    from apex_hub.profiles import Catalogue
    from apex_hub.spawner.escalation import DEFAULT_HUB_RULES, profile_problems, rules_to_grant

    (profile,) = Catalogue.from_file(str(target))
    assert profile_problems(profile, DEFAULT_HUB_RULES)
    assert not profile_problems(profile, [*DEFAULT_HUB_RULES, *rules_to_grant([profile])["coder"]])
