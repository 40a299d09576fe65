"""Issue 16: the 14 real ApplicationHub config.yml files, converted, checked and spawned on kubesim.

The files live outside the repository (../shared/eoepca-configs/, each names its source) and are
never copied in; without them (a user's clone) these tests are skipped with the reason.
``APEX_EOEPCA_CONFIGS`` names another directory (a git worktree sits elsewhere than the main one).
"""

import os
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
import yaml
from kubernetes_asyncio import client

from apex_hub.profiles import Catalogue, convert_eoepca
from apex_hub.profiles.__main__ import kinds_to_allow
from apex_hub.profiles.eoepca import DEFAULT_MANIFEST_KINDS, dump_yaml
from tests.helpers.spawner import make_spawner, objects
from tests.helpers.spawner import ksim  # noqa: F401 - a fixture

CONFIGS = Path(os.environ.get("APEX_EOEPCA_CONFIGS")
               or Path(__file__).resolve().parents[2] / ".." / "shared" / "eoepca-configs")
FILES = sorted(CONFIGS.glob("*.yml")) if CONFIGS.is_dir() else []
USERS = ("alice", "Jane.Doe@Example.org")

pytestmark = pytest.mark.skipif(
    not FILES, reason=f"the real ApplicationHub configs are not here ({CONFIGS}): not a shared checkout")


def converted(path: Path):
    data, report = convert_eoepca(yaml.safe_load(path.read_text(encoding="utf-8")))
    return data, report, Catalogue.from_yaml(dump_yaml(data), str(path))


def test_all_fourteen_are_there():
    assert len(FILES) == 14


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_converts_and_passes_check(path):
    data, report, catalogue = converted(path)
    assert len(catalogue) == len(yaml.safe_load(path.read_text())["profiles"])
    text = dump_yaml(data)
    # Nothing of ApplicationHub's templating survives: no Jinja, no hard-coded user namespace.
    assert "{{ spawner" not in text and "{{spawner" not in text and "jupyter-{" not in text
    for profile in catalogue:
        needed = {k for m in profile.manifests for k in m.kinds} - set(DEFAULT_MANIFEST_KINDS)
        named = [line for line in kinds_to_allow(catalogue) if f"profile {profile.slug!r}" in line]
        assert bool(needed) == bool(named)
        assert all(k in named[0] for k in needed)
        assert profile.workspace_volume is False
        for value in profile.node_selector.values():
            assert '"' not in value and "\\" not in value


EXTERNAL_SECRET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "externalsecrets.external-secrets.io"},
    "spec": {"group": "external-secrets.io", "scope": "Namespaced",
             "names": {"plural": "externalsecrets", "singular": "externalsecret",
                       "kind": "ExternalSecret"},
             "versions": [{"name": "v1beta1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {
                               "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


async def prepare_cluster(sim, catalogue):
    """What the converter's report tells the operator to do: pull Secrets in the hub namespace,
    the External Secrets Operator's CRD installed."""
    async with sim.api_client() as api:
        v1 = client.CoreV1Api(api)
        await v1.create_namespace({"metadata": {"name": "jhub"}})
        for name in sorted({n for p in catalogue for n in p.image_pull_secrets}):
            await v1.create_namespaced_secret("jhub", {
                "metadata": {"name": name}, "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}})
        await client.ApiextensionsV1Api(api).create_custom_resource_definition(EXTERNAL_SECRET_CRD)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
async def test_every_profile_spawns_for_both_users(ksim, path):
    data, _, catalogue = converted(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))["profiles"]
    await prepare_cluster(ksim, catalogue)
    kinds = sorted(set(DEFAULT_MANIFEST_KINDS) | {k for p in catalogue for m in p.manifests
                                                  for k in m.kinds})
    for profile in catalogue:
        for user in USERS:
            spawner = make_spawner(ksim, user, groups=profile.groups, catalogue=data,
                                   user_options={"profile": profile.slug}, manifest_kinds=kinds)
            await spawner.start()
            (pod,) = [p for p in objects(ksim, "pods", spawner.namespace)
                      if p["metadata"]["name"] == spawner.pod_name]
            spec = pod["spec"]
            selector = spec.get("nodeSelector") or {}
            assert selector == {**selector, **profile.node_selector}
            mounted = {m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
            assert {v.mount_path for v in profile.volumes} <= mounted
            assert {s.mount_path for s in profile.secret_mounts} <= mounted
            env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
            for name, value in apphub_env(raw[profile_index(data, profile.slug)], spawner).items():
                assert env.get(name) == value, (profile.slug, user, name)
            await spawner.stop()


def profile_index(data, slug):
    return [p["slug"] for p in data["profiles"]].index(slug)


def apphub_env(raw_profile, spawner):
    """ApplicationHub's rendering of a profile's literal env (jinja2, as its ConfigParser does),
    for our user name slug, with its ``jupyter-<user>`` namespace read as ours."""
    user = SimpleNamespace(name=spawner.user_slug)
    context = {"spawner": SimpleNamespace(user=user), "namespace": spawner.namespace}
    env = {}
    for name, value in (raw_profile.get("pod_env_vars") or {}).items():
        if isinstance(value, str) and "{{" in value and "{%" not in value:
            text = jinja2.Template(value).render(**context)
            env[name] = text.replace(f"jupyter-{spawner.user_slug}", spawner.namespace)
        elif isinstance(value, str):
            env[name] = value
    return env
