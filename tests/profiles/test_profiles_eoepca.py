"""Migration from the EOEPCA ApplicationHub config.yml format."""

from pathlib import Path

import pytest
import yaml

from apex_hub.profiles import Catalogue, CatalogueError, convert_eoepca
from apex_hub.profiles.eoepca import dump_yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "eoepca-config.yml"


def converted_example():
    data, report = convert_eoepca(yaml.safe_load(EXAMPLE.read_text()))
    return data, report, Catalogue.from_yaml(dump_yaml(data))


def test_example_converts_and_validates():
    data, report, catalogue = converted_example()
    (profile,) = catalogue.profiles
    assert profile.slug == "apex-coder-medium"
    assert profile.default and profile.groups == ["apex-dev", "apex-large"]
    assert (profile.cpu_limit, profile.cpu_guarantee) == (4, 1)
    assert (profile.mem_limit, profile.mem_guarantee) == ("12G", "4G")
    assert profile.image == "ghcr.io/esa-apex/pde-code-server:1.4.0"
    assert profile.default_url == "/vscode"
    assert profile.node_selector == {"node-pool": "user-large"}
    assert profile.env["WORKSPACE_OWNER"] == "{username}"
    assert profile.env["MAX_PARALLEL_JOBS"] == "4"
    assert profile.env["STAC_API_URL"].from_config_map.name == "apex-endpoints"
    assert profile.env_from_config_maps == ["apex-endpoints"]
    bashrc, init = profile.config_maps
    assert bashrc.default_mode == 0o660 and bashrc.persist and bashrc.template
    assert 'WORKSPACE_NAMESPACE="{namespace}"' in bashrc.content
    assert init.default_mode == 0o644 and not init.persist
    workspace, calrissian = profile.volumes
    assert (workspace.claim_name, workspace.size, workspace.mount_path) == (
        "workspace-claim",
        "50Gi",
        "/workspace",
    )
    assert calrissian.access_modes == ["ReadWriteMany"] and not calrissian.persist
    assert calrissian.annotations == {"apex.esa.int/owner": "{username}"}
    (binding,) = profile.role_bindings
    assert binding.name == "pod-reader-role-binding" and binding.role_name == "pod-reader-role"
    assert binding.role.rules[0].verbs == ["get", "list", "watch", "create", "delete"]
    assert binding.subjects[0].kind == "ServiceAccount" and not binding.persist
    assert profile.image_pull_secrets == ["cr-config"]
    (container,) = profile.init_containers
    assert container["volumeMounts"][1] == {
        "name": "init",
        "mountPath": "/opt/init/.init.sh",
        "subPath": "init",
    }
    assert profile.manifests[0].kinds == ["ServiceAccount"]
    assert profile.secret_mounts[0].sub_path == "credentials"


def test_pull_secret_data_is_never_carried_over():
    data, report, _ = converted_example()
    assert "ZmFrZS1leGFtcGxl" not in dump_yaml(data)
    (line,) = [r for r in report if "'data'" in r]
    assert line.startswith("profile 'apex_coder_medium': image_pull_secrets[0] ('cr-config'):")
    assert "NOT carried over" in line
    assert "create a Secret named 'cr-config'" in line and "hub namespace" in line


def test_report_lists_what_was_not_mapped():
    _, report, _ = converted_example()
    text = "\n".join(report)
    assert "slug 'apex_coder_medium' is now 'apex-coder-medium'" in text
    assert "role_bindings[0].role.api_group" in text
    assert "manifests[0].key: not needed" in text
    assert "placeholder '{{ spawner.server_url }}' has no equivalent" in text
    *per_profile, last = report
    assert all(line.startswith("profile 'apex_coder_medium': ") for line in per_profile)
    assert last.startswith("every profile: workspace_volume: false")


def test_render_converted_profile():
    _, _, catalogue = converted_example()
    done = catalogue.profiles[0].render(username="alice", namespace="apex-alice")
    assert 'WORKSPACE_NAMESPACE="apex-alice"' in done.config_maps[0].content
    assert done.env["WORKSPACE_OWNER"] == "alice"
    assert done.manifests[0].documents()[0]["metadata"]["namespace"] == "apex-alice"


NULL_HEAVY = {
    "profiles": [
        {
            "id": "profile_jupyter_lab",
            "groups": ["group-c"],
            "definition": {
                "display_name": "Jupyter Lab",
                "description": None,
                "slug": "eoepca_jupyter_lab",
                "default": False,
                "kubespawner_override": {
                    "cpu_limit": 2,
                    "cpu_guarantee": None,
                    "mem_limit": "6G",
                    "mem_guarantee": None,
                    "image": "jupyter/scipy-notebook",
                    "extra_resource_limits": {},
                    "extra_resource_guarantees": {},
                },
            },
            "config_maps": [],
            "default_url": None,
            "image_pull_secrets": [],
            "init_containers": [],
            "manifests": None,
            "node_selector": {},
            "role_bindings": None,
            "pod_env_vars": {"HOME": "/workspace", "CONDA_ENVS_PATH": " /workspace/.envs"},
            "volumes": [
                {
                    "name": "workspace-volume",
                    "claim_name": "workspace-claim",
                    "size": "50Gi",
                    "storage_class": "standard",
                    "access_modes": ["ReadWriteOnce"],
                    "volume_mount": {"name": "workspace-volume", "mount_path": "/workspace"},
                    "persist": True,
                }
            ],
        },
        {
            "id": "eoepca_jupyter_lab",  # its slug collides with the first one's
            "groups": [],
            "definition": {
                "display_name": "Second",
                "slug": "eoepca-jupyter-lab",
                "kubespawner_override": {
                    "cpu_limit": 1,
                    "mem_limit": "1G",
                    "image": "x",
                    "privileged": True,
                    "start_timeout": 100,
                    "environment": {"A": "b"},
                },
            },
            "node_selector": {},
            "favourite_colour": "blue",
            "config_maps": [
                {
                    "name": "Init_Script",
                    "key": "init",
                    "content": "{% if x %}y{% endif %}",
                    "mount_path": "/opt/init.sh",
                    "readonly": True,
                }
            ],
            "init_containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "volume_mounts": [
                        {"name": "Init_Script", "mount_path": "/opt/init.sh", "sub_path": "init"}
                    ],
                }
            ],
            "secret_mounts": [{"name": "s", "mount_path": "/{{ spawner.user.name }}"}],
        },
    ],
    "theme": {"logo": "x"},
}


def test_real_world_nulls_collisions_and_leftovers():
    data, report = convert_eoepca(NULL_HEAVY)
    catalogue = Catalogue.from_dict(yaml.safe_load(dump_yaml(data)))
    first, second = catalogue.profiles
    assert first.slug == "eoepca-jupyter-lab" and second.slug == "eoepca-jupyter-lab-2"
    assert first.description == "" and first.cpu_guarantee is None
    assert first.env["CONDA_ENVS_PATH"] == " /workspace/.envs"
    assert second.kubespawner_override == {"start_timeout": 100}
    assert second.env == {"A": "b"}
    assert second.config_maps[0].name == "init-script"
    assert second.init_containers[0]["volumeMounts"][0]["name"] == "init-script"
    text = "\n".join(report)
    assert "theme: top-level field with no equivalent" in text
    assert "profile 'eoepca_jupyter_lab': favourite_colour: no equivalent" in text
    assert "definition.kubespawner_override.privileged: not an allowed override" in text
    assert "pod_env_vars.CONDA_ENVS_PATH: value ' /workspace/.envs' has surrounding spaces" in text
    assert "Jinja statement '{% if x %}' is not supported" in text
    assert "secret_mounts[0].mount_path: placeholders are not substituted in this field" in text
    assert "slug 'eoepca-jupyter-lab' is now 'eoepca-jupyter-lab-2'" in text


def test_not_eoepca_format():
    with pytest.raises(CatalogueError, match="no 'profiles' list"):
        convert_eoepca({"hub": {}})
    data, report = convert_eoepca({"profiles": ["x"]})
    assert data == {"profiles": []} and report == ["profiles[0]: not a mapping; skipped"]


def test_dump_roundtrip_keeps_multiline_text_readable():
    data, _, _ = converted_example()
    text = dump_yaml(data)
    assert "content: |" in text
    assert "default_mode: '0660'" in text
    assert yaml.safe_load(text) == yaml.safe_load(dump_yaml(yaml.safe_load(text)))
