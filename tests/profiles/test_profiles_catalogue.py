"""Loading the catalogue: valid examples, and one clear message per kind of error."""

from pathlib import Path

import pydantic
import pytest

from apex_hub.profiles import Catalogue, CatalogueError, Profile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "profiles.yml"

MINIMAL = """
profiles:
  - slug: lab
    display_name: Lab
"""


def problems_of(text):
    with pytest.raises(CatalogueError) as info:
        Catalogue.from_yaml(text)
    return info.value.problems


def one_profile(**fields):
    body = {"slug": "gpu-large", "display_name": "GPU", **fields}
    return {"profiles": [body]}


def dict_problems(data):
    with pytest.raises(CatalogueError) as info:
        Catalogue.from_dict(data)
    return info.value.problems


def test_example_catalogue_loads():
    catalogue = Catalogue.from_file(EXAMPLE)
    assert catalogue.slugs == [
        "jupyterlab",
        "conda-sentinel",
        "vscode-small",
        "processing-large",
        "gpu",
        "desktop",
    ]
    lab = catalogue.get("jupyterlab")
    assert lab.default and lab.groups == []
    # defaults merged in: image, env, named lists
    assert lab.image.startswith("ghcr.io/esa-apex/apex-jupyterlab")
    assert lab.env["HOME"] == "/workspace"
    assert [v.name for v in lab.volumes] == ["workspace"]
    large = catalogue.get("processing-large")
    assert [v.name for v in large.volumes] == ["workspace", "scratch"]
    assert large.env["DASK_NUM_WORKERS"] == "8"  # YAML int → string
    assert large.env["HOME"] == "/workspace"  # mapping merged with defaults
    assert large.env["STAC_API_URL"].from_config_map.key == "stac"
    gpu = catalogue.get("gpu")
    assert gpu.extra_resource_limits == {"nvidia.com/gpu": "1"}
    assert gpu.tolerations[0].to_k8s() == {
        "key": "nvidia.com/gpu",
        "operator": "Exists",
        "effect": "NoSchedule",
    }
    conda = catalogue.get("conda-sentinel").conda_environments[0]
    assert conda.name == "sentinel" and len(conda.content_hash) == 64
    assert catalogue.get("desktop").default_url == "/desktop"


def test_minimal_profile_defaults():
    profile = Catalogue.from_yaml(MINIMAL).get("lab")
    assert profile.session_mode == "on-demand"
    assert profile.groups == [] and profile.config_maps == [] and profile.image is None


def test_config_map_defaults():
    data = one_profile(config_maps=[{"name": "bashrc", "content": "x", "mount_path": "/a"}])
    cm = Catalogue.from_dict(data).profiles[0].config_maps[0]
    assert (cm.key, cm.default_mode, cm.readonly, cm.persist, cm.template) == (
        "bashrc",
        0o644,
        True,
        False,
        True,
    )


def test_bad_yaml_has_line_and_column():
    (problem,) = problems_of("profiles:\n  - slug: a\n    display_name: [unclosed\n")
    assert problem.startswith("YAML syntax: line ")
    assert "column" in problem


def test_duplicate_yaml_key():
    (problem,) = problems_of("profiles:\n  - slug: a\n    slug: b\n    display_name: A\n")
    assert "line 3, column 5" in problem and "duplicate key 'slug'" in problem


def test_not_a_catalogue():
    assert "must be a mapping" in problems_of("- a\n- b\n")[0]
    assert problems_of("profile: []\n") == [
        "profile: unknown top-level field; known: profiles, defaults, allow_security_overrides",
        "profiles: required, and must be a list of profiles",
    ]
    assert problems_of("profiles: [3]\n") == ["profiles[0]: must be a mapping of profile fields"]


def test_wrong_type_names_profile_and_field():
    problems = dict_problems(one_profile(cpu_limit="lots"))
    assert problems == [
        "profile 'gpu-large': cpu_limit: Input should be a valid number, unable to parse"
        " string as a number (got 'lots')"
    ]


def test_unknown_field_suggests_spelling():
    (problem,) = dict_problems(one_profile(mem_limt="4G"))
    assert problem.startswith("profile 'gpu-large': mem_limt: unknown field")
    assert "did you mean 'mem_limit'?" in problem
    (problem,) = dict_problems(
        one_profile(volumes=[{"name": "data", "size": "1Gi", "mount_path": "/data", "mountPath": "/x"}])
    )
    assert problem.startswith("profile 'gpu-large': volumes[0] ('data').mountPath: unknown field")


@pytest.mark.parametrize("value", ["4GB", "lots", "-1G", True, "4 G"])
def test_bad_memory_quantity(value):
    (problem,) = dict_problems(one_profile(mem_limit=value))
    assert problem.startswith("profile 'gpu-large': mem_limit: ")
    assert "'4G'" in problem


@pytest.mark.parametrize("value", ["4G", "512Mi", "1.5G", 1073741824, "2Ti", "100K"])
def test_good_memory_quantity(value):
    Catalogue.from_dict(one_profile(mem_limit=value))


def test_bad_resource_and_volume_quantities():
    problems = dict_problems(
        one_profile(
            extra_resource_limits={"nvidia.com/gpu": "one"},
            volumes=[{"name": "data", "size": "10 GB", "mount_path": "/data"}],
        )
    )
    assert problems[0].startswith("profile 'gpu-large': extra_resource_limits.nvidia.com/gpu:")
    assert "not a Kubernetes quantity" in problems[0]
    assert problems[1].startswith("profile 'gpu-large': volumes[0] ('data').size:")


def test_cpu_millicores_and_guarantee_above_limit():
    profile = Catalogue.from_dict(one_profile(cpu_limit="500m")).profiles[0]
    assert profile.cpu_limit == 0.5
    problems = dict_problems(one_profile(cpu_limit=1, cpu_guarantee=2, mem_limit="1G", mem_guarantee="2G"))
    assert problems == [
        "profile 'gpu-large': cpu_guarantee: 2 is more than cpu_limit 1; a guarantee cannot exceed the limit",
        "profile 'gpu-large': mem_guarantee: 2G is more than mem_limit 1G; a guarantee cannot"
        " exceed the limit",
    ]


def test_duplicate_slug():
    problems = problems_of(
        MINIMAL + "  - slug: other\n    display_name: O\n  - slug: lab\n    display_name: Again\n"
    )
    assert problems == [
        "profile 'lab': slug: profiles[2] uses the same slug as profiles[0]; slugs must be unique"
    ]


def test_two_defaults():
    data = {
        "profiles": [
            {"slug": "a", "display_name": "A", "default": True},
            {"slug": "b", "display_name": "B", "default": True},
        ]
    }
    assert dict_problems(data) == [
        "default: more than one profile is marked default (a, b); keep 'default: true' on one"
    ]


@pytest.mark.parametrize("slug", ["GPU", "gpu_large", "-gpu", "gpu-", "x" * 64, ""])
def test_bad_slug(slug):
    problems = dict_problems({"profiles": [{"slug": slug, "display_name": "x"}]})
    assert len(problems) == 1
    assert ": slug: " in problems[0] and "not a valid name" in problems[0]


def test_missing_slug_named_by_index():
    assert dict_problems({"profiles": [{"display_name": "x"}]}) == [
        "profiles[0]: slug: required field is missing"
    ]


def test_oversized_config_map():
    content = "x" * (1024 * 1024 + 1)
    (problem,) = dict_problems(
        one_profile(
            config_maps=[
                {"name": "small", "content": "ok"},
                {"name": "huge-file", "content": content, "mount_path": "/etc/huge"},
            ]
        )
    )
    assert problem.startswith("profile 'gpu-large': config_maps[1] ('huge-file').content: ")
    assert "1048577 bytes" in problem and "1 MiB" in problem
    # exactly 1 MiB is fine
    Catalogue.from_dict(one_profile(config_maps=[{"name": "max", "content": "x" * 1048576}]))


def test_oversized_conda_environment():
    env = "dependencies: [python]\n# " + "x" * (1024 * 1024)
    (problem,) = dict_problems(one_profile(conda_environments=[{"name": "big", "environment_yml": env}]))
    assert "conda_environments[0] ('big').environment_yml" in problem and "1 MiB" in problem


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"privileged": True}, "kubespawner_override: privileged: not an allowed override"),
        (
            {"allow_privilege_escalation": True},
            "kubespawner_override: allow_privilege_escalation: not an allowed override",
        ),
        ({"image": "x"}, "kubespawner_override: image: use the profile field 'image' instead"),
        ({"environment": {}}, "kubespawner_override: environment: use the profile field 'env'"),
        ({"start_timeout": "soon"}, "kubespawner_override: start_timeout: expected a positive"),
        ({"uid": 0}, "kubespawner_override: uid: 0 runs the server as root"),
        (
            {"extra_pod_config": {"hostNetwork": True}},
            "kubespawner_override: extra_pod_config.hostNetwork: weakens pod security",
        ),
        (
            {"extra_pod_config": {"volumes": []}},
            "kubespawner_override: extra_pod_config.volumes: not allowed here",
        ),
        (
            {"extra_container_config": {"securityContext": {"privileged": True}}},
            "kubespawner_override: extra_container_config.securityContext: use the profile field",
        ),
    ],
)
def test_disallowed_override(override, expected):
    (problem,) = dict_problems(one_profile(kubespawner_override=override))
    assert problem.startswith("profile 'gpu-large': " + expected), problem


def test_security_overrides_need_operator_opt_in():
    (problem,) = dict_problems(one_profile(security_context={"runAsUser": 0}))
    assert problem.startswith("profile 'gpu-large': security_context: overriding pod security")
    assert "allow_security_overrides: true" in problem
    data = one_profile(
        security_context={"runAsUser": 0, "runAsNonRoot": False},
        kubespawner_override={"uid": 0, "extra_pod_config": {"hostNetwork": True}},
    )
    data["allow_security_overrides"] = True
    catalogue = Catalogue.from_dict(data)
    assert catalogue.allow_security_overrides
    assert catalogue.profiles[0].security_context == {"runAsUser": 0, "runAsNonRoot": False}
    data["profiles"][0]["security_context"] = {"runAsUsr": 0}
    (problem,) = dict_problems(data)
    assert "security_context: runAsUsr: unknown securityContext field" in problem


def test_allowed_overrides_pass():
    Catalogue.from_dict(
        one_profile(
            kubespawner_override={
                "image_pull_policy": "Always",
                "start_timeout": 300,
                "extra_labels": {"a": "b"},
                "uid": 1000,
                "args": ["--debug"],
                "cmd": ["jupyterhub-singleuser"],
                "extra_pod_config": {"priorityClassName": "x"},
            }
        )
    )


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"default_url": "lab"}, "default_url: 'lab' must be a path"),
        ({"default_url": "//evil.example"}, "default_url: '//evil.example' must be a path"),
        ({"session_mode": "sometimes"}, "session_mode: Input should be 'on-demand', 'always-on'"),
        ({"session_mode": True}, "session_mode: write 'always-on' or 'on-demand'"),
        (
            {"config_maps": [{"name": "a", "default_mode": 644}]},
            "config_maps[0] ('a').default_mode: 644 is not a file mode",
        ),
        (
            {"config_maps": [{"name": "a", "mount_path": "etc/a"}]},
            "config_maps[0] ('a').mount_path: 'etc/a' must be an absolute path",
        ),
        (
            {"volumes": [{"name": "data", "mount_path": "/data"}]},
            "volumes[0] ('data'): volume 'data': give 'size' to create a claim",
        ),
        (
            {"volumes": [{"name": "data", "size": "1Gi", "mount_path": "/d", "sub_path": "../x"}]},
            "volumes[0] ('data').sub_path: '../x' must be a relative path",
        ),
        (
            {
                "volumes": [
                    {"name": "d", "size": "1Gi", "mount_path": "/d", "access_modes": ["ReadWriteSometimes"]}
                ]
            },
            "volumes[0] ('d').access_modes[0]: Input should be",
        ),
        ({"env": {"1BAD": "x"}}, "env.1BAD (the name): '1BAD' is not a valid environment"),
        (
            {
                "env": {
                    "A": {
                        "from_config_map": {"name": "x", "key": "k"},
                        "from_secret": {"name": "y", "key": "k"},
                    }
                }
            },
            "env.A: give exactly one of 'from_config_map' or 'from_secret'",
        ),
        ({"env": {"A": [1]}}, "env.A: Input should be a valid string"),
        (
            {"manifests": [{"name": "m", "content": "kind: ServiceAccount\n"}]},
            "manifests[0] ('m').content: the manifest lacks apiVersion, metadata.name",
        ),
        (
            {"manifests": [{"name": "m", "content": "a: [\n"}]},
            "manifests[0] ('m').content: content is not valid YAML",
        ),
        (
            {"conda_environments": [{"name": "py", "environment_yml": "channels: []\n"}]},
            "conda_environments[0] ('py').environment_yml: environment_yml needs a 'dependencies'",
        ),
        (
            {"conda_environments": [{"name": "Py_3", "environment_yml": "dependencies: []"}]},
            "conda_environments[0] ('Py_3').name: 'Py_3' is not a valid name",
        ),
        ({"condarc": "- a list\n"}, "condarc: must be a YAML mapping"),
        (
            {
                "role_bindings": [
                    {
                        "name": "r",
                        "role": {"rules": [{"resources": ["pods"], "verbs": ["escalate"]}]},
                        "subjects": [{"kind": "ServiceAccount", "name": "default"}],
                    }
                ]
            },
            "role_bindings[0] ('r').role.rules[0].verbs[0]: Input should be",
        ),
        (
            {"resource_quota": {"hard": {"cpu": "many"}}},
            "resource_quota: hard.cpu: 'many' is not a Kubernetes quantity",
        ),
        ({"limit_range": {"limits": [{"max": {}}]}}, "limit_range: 'limits' must be a list"),
        ({"init_containers": [{"name": "x"}]}, "init_containers: init container 'x' needs"),
        ({"image_pull_secrets": ["Bad Name"]}, "image_pull_secrets[0]: 'Bad Name' is not"),
        ({"config_maps": [{"name": "a"}, {"name": "a"}]}, "config_maps: the name 'a' is used more than once"),
        (
            {
                "config_maps": [{"name": "a", "mount_path": "/x"}],
                "volumes": [{"name": "b", "size": "1Gi", "mount_path": "/x"}],
            },
            "mount_path: '/x' is used by more than one mount",
        ),
        (
            {"config_maps": [{"name": "a"}], "volumes": [{"name": "a", "size": "1", "mount_path": "/x"}]},
            "config_maps/volumes: 'a' names both a config map and a volume",
        ),
    ],
)
def test_field_errors(fields, expected):
    problems = dict_problems(one_profile(**fields))
    assert any(p.startswith("profile 'gpu-large': " + expected) for p in problems), problems


def test_every_problem_is_reported_at_once():
    data = {
        "profiles": [
            {"slug": "a", "display_name": "A", "cpu_limit": "x"},
            {"slug": "b", "display_name": "B", "mem_limit": "x", "bogus": 1},
        ]
    }
    problems = dict_problems(data)
    assert [p.split(":")[0] for p in problems] == ["profile 'a'", "profile 'b'", "profile 'b'"]


def test_error_message_lists_problems():
    with pytest.raises(CatalogueError) as info:
        Catalogue.from_dict(one_profile(cpu_limit="x"), source="/etc/apex/profiles.yml")
    text = str(info.value)
    assert text.startswith("invalid profiles catalogue /etc/apex/profiles.yml: 1 problem\n")
    assert "  - profile 'gpu-large': cpu_limit" in text
    assert isinstance(info.value, ValueError)


def test_defaults_errors_reported_once():
    data = {
        "defaults": {"mem_limit": "lots", "slug": "x"},
        "profiles": [{"slug": "a", "display_name": "A"}, {"slug": "b", "display_name": "B"}],
    }
    problems = dict_problems(data)
    assert problems[0] == "defaults: slug: set this per profile, not in defaults"
    assert problems[1].startswith("defaults: mem_limit: 'lots' is not a memory size")
    assert len(problems) == 2


def test_profile_yaml_booleans_and_numbers():
    data = one_profile(session_mode=False, node_selector={"gpu": True}, env={"DEBUG": False, "RATE": 1.5})
    profile = Catalogue.from_dict(data).profiles[0]
    assert profile.session_mode == "off"
    assert profile.node_selector == {"gpu": "true"}
    assert profile.env == {"DEBUG": "false", "RATE": "1.5"}


def test_profiles_are_immutable():
    profile = Catalogue.from_yaml(MINIMAL).get("lab")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        profile.slug = "other"
    assert isinstance(profile, Profile)


def test_empty_file_is_an_error():
    assert problems_of("") == ["profiles: required, and must be a list of profiles"]


def test_from_file_missing(tmp_path):
    with pytest.raises(CatalogueError, match="cannot read the file"):
        Catalogue.from_file(tmp_path / "nope.yml")
