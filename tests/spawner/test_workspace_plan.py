"""``plan_workspace`` alone: profile + settings → manifests, without a cluster."""

from __future__ import annotations

import pytest

from apex_hub.profiles import Catalogue
from apex_hub.spawner import Owner, Settings, WorkspaceError, plan_workspace

OWNER = Owner("Alice@x.org", "alice-x-org-1a2b3c4d", "apex-alice-x-org-1a2b3c4d")
WORKSPACE = {"name": "workspace", "size": "1Gi", "mount_path": "/home/jovyan"}


def profile(**fields):
    base = {"slug": "p", "display_name": "P", "volumes": [WORKSPACE]}
    return Catalogue.from_dict({"profiles": [{**base, **fields}]}).profiles[0]


def test_conda_gets_a_generated_condarc_pointing_at_the_workspace():
    plan = plan_workspace(
        OWNER,
        profile(conda_environments=[{"name": "eo", "environment_yml": "dependencies: [python]\n"}]),
        Settings(),
        "img:1",
    )
    condarc = next(o for o in plan.objects if o["metadata"]["name"] == "apex-condarc")
    assert condarc["data"]["condarc"] == (
        "envs_dirs:\n  - /home/jovyan/.apex/conda/envs\npkgs_dirs:\n  - /home/jovyan/.apex/conda/pkgs\n"
    )
    init = plan.init_containers[0]
    assert init["name"] == "conda-environments" and init["image"] == "img:1"
    assert init["workingDir"] == "/home/jovyan"
    assert {"name": "CONDARC", "value": "/etc/conda/.condarc"} in init["env"]


def test_a_profiles_own_condarc_wins():
    plan = plan_workspace(OWNER, profile(condarc="channels: [conda-forge]\n"), Settings(), None)
    condarc = next(o for o in plan.objects if o["metadata"]["name"] == "apex-condarc")
    assert condarc["data"]["condarc"] == "channels: [conda-forge]\n"
    assert not plan.init_containers  # no environments: nothing to build


def test_conda_without_the_workspace_volume_is_refused():
    bare = Catalogue.from_dict(
        {
            "profiles": [
                {
                    "slug": "p",
                    "display_name": "P",
                    "conda_environments": [{"name": "eo", "environment_yml": "dependencies: [python]\n"}],
                }
            ]
        }
    ).profiles[0]
    with pytest.raises(WorkspaceError, match="built into the workspace volume 'workspace'"):
        plan_workspace(OWNER, bare, Settings(), None)


def test_environments_that_together_exceed_a_configmap_are_refused():
    big = "dependencies:\n" + "".join(f"  - package-{n:06d}\n" for n in range(30000))  # ~570 KB each
    envs = [{"name": "a", "environment_yml": big}, {"name": "b", "environment_yml": big}]
    with pytest.raises(WorkspaceError, match="over Kubernetes' limit of 1048576"):
        plan_workspace(OWNER, profile(conda_environments=envs), Settings(), None)


def test_the_raw_user_name_only_reaches_annotations():
    plan = plan_workspace(OWNER, profile(), Settings(service_account=None, network_policy=False), None)
    for manifest in [plan.namespace, *plan.claims]:
        assert "Alice@x.org" not in str(manifest["metadata"]["labels"])
        assert manifest["metadata"]["annotations"]["apex.esa.int/username"] == "Alice@x.org"
    assert not plan.objects  # no guard rails asked for, nothing else in the profile


def test_named_servers_get_their_own_objects_and_references_follow():
    owner = Owner("bob", "bob", "apex-bob", "gpu run")
    plan = plan_workspace(
        owner,
        profile(
            volumes=[
                WORKSPACE,
                {"name": "scratch", "size": "1Gi", "mount_path": "/scratch", "persist": False},
            ],
            config_maps=[{"name": "cfg", "key": "k", "content": "v", "mount_path": "/etc/cfg"}],
            env={"K": {"from_config_map": {"name": "cfg", "key": "k"}}},
            env_from_config_maps=["cfg"],
        ),
        Settings(),
        None,
    )
    cm = next(o for o in plan.objects if o["kind"] == "ConfigMap")
    assert cm["metadata"]["name"].startswith("cfg-named-gpu-run")
    name = cm["metadata"]["name"]
    assert {"name": "cfg", "configMap": {"name": name, "defaultMode": 0o644}} in plan.volumes
    assert plan.env[0]["valueFrom"]["configMapKeyRef"]["name"] == name
    assert plan.env_from == [{"configMapRef": {"name": name}}]
    assert plan.claims[0]["metadata"]["name"] == "workspace"  # shared by the user's servers
    scratch = plan.claims[1]["metadata"]["name"]
    assert scratch.startswith("scratch-named-gpu-run")  # a server's own scratch space
    assert {
        "name": "scratch",
        "persistentVolumeClaim": {"claimName": scratch, "readOnly": False},
    } in plan.volumes


def test_workspace_pull_secrets_are_named_where_the_manifests_make_them():
    """A named server's Secret manifest (and a targetless ExternalSecret, whose Secret takes its
    name) is renamed with the server; an ExternalSecret's spec.target.name is what ESO writes."""
    external = {"apiVersion": "external-secrets.io/v1beta1", "kind": "ExternalSecret"}
    p = profile(
        image_pull_secrets=["hub-cr"],
        workspace_image_pull_secrets=["own", "targeted", "untargeted"],
        manifests=[
            {
                "name": "s",
                "content": [
                    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "own"}},
                    {**external, "metadata": {"name": "targeted"}, "spec": {"target": {"name": "targeted"}}},
                    {**external, "metadata": {"name": "untargeted"}, "spec": {}},
                ],
            }
        ],
    )
    settings = Settings(manifest_kinds=("Secret", "ExternalSecret"))
    assert plan_workspace(OWNER, p, settings, None).image_pull_secrets == [
        "hub-cr",
        "own",
        "targeted",
        "untargeted",
    ]
    named = Owner(OWNER.username, OWNER.user_slug, OWNER.namespace, "gpu")
    plan = plan_workspace(named, p, settings, None)
    assert plan.image_pull_secrets == ["hub-cr", "own-named-gpu", "targeted", "untargeted-named-gpu"]
    assert plan.copy_secrets == ["hub-cr"]  # only the hub namespace's are copied


def test_scratch_claims_are_labelled_and_per_server():
    """The label is what a stop selects them by; a named server's scratch claim is its own."""
    p = profile(
        volumes=[
            WORKSPACE,
            {
                "name": "calrissian",
                "claim_name": "calrissian-claim",
                "size": "1Gi",
                "mount_path": "/calrissian",
                "persist": False,
                "scratch": True,
            },
        ]
    )
    named = Owner(OWNER.username, OWNER.user_slug, OWNER.namespace, "gpu")
    for owner, name in ((OWNER, "calrissian-claim"), (named, "calrissian-claim-named-gpu")):
        plan = plan_workspace(owner, p, Settings(), None)
        assert plan.scratch_claims == [name]
        claim = next(c for c in plan.claims if c["metadata"]["name"] == name)
        assert claim["metadata"]["labels"]["apex.esa.int/scratch"] == "true"
        assert claim["metadata"]["labels"]["apex.esa.int/persist"] == "false"
        workspace = next(c for c in plan.claims if c["metadata"]["name"] == "workspace")
        assert "apex.esa.int/scratch" not in workspace["metadata"]["labels"]
