"""Issue 16: the 14 real ApplicationHub config.yml files, converted, checked and spawned on kubesim.

The files live outside the repository (../shared/eoepca-configs/, each names its source) and are
never copied in; without them (a user's clone) these tests are skipped with the reason.
``APEX_EOEPCA_CONFIGS`` names another directory (a git worktree sits elsewhere than the main one).
"""

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
import yaml
from kubernetes_asyncio import client
from tornado import web

from apex_hub.profiles import Catalogue, convert_eoepca
from apex_hub.profiles.__main__ import kinds_to_allow
from apex_hub.profiles.eoepca import DEFAULT_MANIFEST_KINDS, dump_yaml
from apex_hub.spawner.escalation import DEFAULT_HUB_RULES, rules_to_grant
from tests.helpers.spawner import (
    ksim,  # noqa: F401 - a fixture
    make_spawner,
    objects,
)

CONFIGS = Path(
    os.environ.get("APEX_EOEPCA_CONFIGS")
    or Path(__file__).resolve().parents[2] / ".." / "shared" / "eoepca-configs"
)
FILES = sorted(CONFIGS.glob("*.yml")) if CONFIGS.is_dir() else []
USERS = ("alice", "Jane.Doe@Example.org")

pytestmark = pytest.mark.skipif(
    not FILES, reason=f"the real ApplicationHub configs are not here ({CONFIGS}): not a shared checkout"
)


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
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "externalsecrets.external-secrets.io"},
    "spec": {
        "group": "external-secrets.io",
        "scope": "Namespaced",
        "names": {"plural": "externalsecrets", "singular": "externalsecret", "kind": "ExternalSecret"},
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


async def prepare_cluster(sim, catalogue):
    """What the converter's report tells the operator to do: pull Secrets in the hub namespace,
    the External Secrets Operator's CRD installed."""
    async with sim.api_client() as api:
        v1 = client.CoreV1Api(api)
        await v1.create_namespace({"metadata": {"name": "jhub"}})
        for name in sorted({n for p in catalogue for n in p.image_pull_secrets}):
            await v1.create_namespaced_secret(
                "jhub",
                {
                    "metadata": {"name": name},
                    "type": "kubernetes.io/dockerconfigjson",
                    "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
                },
            )
        await client.ApiextensionsV1Api(api).create_custom_resource_definition(EXTERNAL_SECRET_CRD)


def _references(pod: dict) -> list[tuple[str, str, set]]:
    """(plural, name, keys) of every ConfigMap and Secret the pod's volumes and env read."""
    refs = []
    for volume in pod["spec"].get("volumes", []):
        for kind, plural, field in (("configMap", "configmaps", "name"), ("secret", "secrets", "secretName")):
            if kind in volume:
                refs.append((plural, volume[kind][field], {i["key"] for i in volume[kind].get("items", [])}))
    for container in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
        for env in container.get("env", []):
            source = env.get("valueFrom") or {}
            for kind, plural in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
                if kind in source and not source[kind].get("optional"):
                    refs.append((plural, source[kind]["name"], {source[kind]["key"]}))
        for env in container.get("envFrom", []):
            for kind, plural in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
                if kind in env and not env[kind].get("optional"):
                    refs.append((plural, env[kind]["name"], set()))
    return refs


async def the_operators_part(sim, profile, spawner, start):
    """Run ``start`` while doing what ApplicationHub leaves to the operator and the External
    Secrets Operator: each ExternalSecret the profile writes gets its target Secret, and each
    ConfigMap or Secret the pod reads but the profile does not create (an EOEPCA ``config_maps``
    entry without content, an env ``from_config_map``) is created once the pod exists. A kubelet
    keeps the pod waiting until they are there."""
    created = {cm.name for cm in profile.config_maps if cm.content is not None}
    task = asyncio.ensure_future(start)
    async with sim.api_client() as api:
        v1 = client.CoreV1Api(api)
        create = {"configmaps": v1.create_namespaced_config_map, "secrets": v1.create_namespaced_secret}
        while not task.done():
            wanted = []
            for es in objects(sim, "externalsecrets", group="external-secrets.io", version="v1beta1"):
                target = (es["spec"].get("target") or {}).get("name") or es["metadata"]["name"]
                wanted.append(
                    (
                        es["metadata"]["namespace"],
                        "secrets",
                        target,
                        {d["secretKey"] for d in es["spec"].get("data", [])},
                    )
                )
            for pod in objects(sim, "pods", spawner.namespace):
                if pod["metadata"]["name"] == spawner.pod_name:
                    wanted += [
                        (spawner.namespace, plural, name, keys)
                        for plural, name, keys in _references(pod)
                        if name not in created
                    ]
            for namespace, plural, name, keys in wanted:
                if not any(o["metadata"]["name"] == name for o in objects(sim, plural, namespace)):
                    try:
                        await create[plural](
                            namespace,
                            {
                                "metadata": {"name": name},
                                ("stringData" if plural == "secrets" else "data"): dict.fromkeys(
                                    keys or {"value"}, "provided"
                                ),
                            },
                        )
                    except client.ApiException as e:
                        if e.status != 409:  # made meanwhile by the other user's operator part: there
                            raise
            await asyncio.wait([task], timeout=0.05)
    return await task


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
async def test_every_profile_spawns_for_both_users(ksim, path):
    # the kubelet looks again for what a waiting pod lacks 20 times a second, not once: the operator's
    # part below creates it as soon as the pod is there (the wait itself is what is tested, not its length)
    ksim.kubelet.retry_interval = 0.05
    data, _, catalogue = converted(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))["profiles"]
    await prepare_cluster(ksim, catalogue)
    kinds = sorted(set(DEFAULT_MANIFEST_KINDS) | {k for p in catalogue for m in p.manifests for k in m.kinds})
    grants = rules_to_grant(catalogue)
    for profile in catalogue:
        extra = grants.get(profile.slug, [])
        if extra:
            # With the default hub ClusterRole, such a profile is refused before anything is
            # written, naming the rules the converter's report told the operator to grant.
            refused = make_spawner(
                ksim,
                USERS[0],
                groups=profile.groups,
                catalogue=data,
                user_options={"profile": profile.slug},
                manifest_kinds=kinds,
            )

            def written():
                return [
                    (o["metadata"].get("namespace"), o["metadata"]["name"])
                    for kind in ("namespaces", "pods", "configmaps", "persistentvolumeclaims")
                    for o in objects(ksim, kind)
                ]

            before = written()
            with pytest.raises(web.HTTPError) as info:
                await refused.start()
            assert info.value.status_code == 500
            assert "grants what the hub does not hold" in info.value.log_message
            assert extra[0]["resources"][0] in info.value.log_message
            assert written() == before
        # both users at once, as on a hub: each in a namespace of their own; both run to their end
        results = await asyncio.gather(
            *(
                spawn_and_check(ksim, user, profile, data, raw, kinds, [*DEFAULT_HUB_RULES, *extra])
                for user in USERS
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result


async def spawn_and_check(sim, user, profile, data, raw, kinds, hub_rules):
    """``user``'s server of ``profile``: started (with the operator's part), its pod checked, stopped."""
    spawner = make_spawner(
        sim,
        user,
        groups=profile.groups,
        catalogue=data,
        user_options={"profile": profile.slug},
        manifest_kinds=kinds,
        hub_rules=hub_rules,
    )
    try:
        await the_operators_part(sim, profile, spawner, spawner.start())
    except TimeoutError:
        events = [
            f"{e['involvedObject']['name']}: {e['reason']}: {e['message']}"
            for e in objects(sim, "events", spawner.namespace)
            if e["type"] == "Warning"
        ]
        raise AssertionError(f"{profile.slug} for {user}: {events}") from None
    (pod,) = [p for p in objects(sim, "pods", spawner.namespace) if p["metadata"]["name"] == spawner.pod_name]
    spec = pod["spec"]
    selector = spec.get("nodeSelector") or {}
    assert selector == {**selector, **profile.node_selector}
    mounted = {m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
    assert {v.mount_path for v in profile.volumes} <= mounted
    assert {s.mount_path for s in profile.secret_mounts} <= mounted
    env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
    for name, value in apphub_env(raw[profile_index(data, profile.slug)], spawner).items():
        assert env.get(name) == value, (profile.slug, user, name)
    await check_workspace_fields(sim, profile, spawner, spec)


async def check_workspace_fields(sim, profile, spawner, spec):
    """What the converter's workspace_volume, service_account_token,
    workspace_image_pull_secrets and volumes[].scratch do to the pod and its claims, then stop."""
    what = (profile.slug, spawner.user.name)
    rendered = profile.render(username=spawner.user_slug, namespace=spawner.namespace)
    claims = {v.name: v.claim_name or v.name for v in rendered.volumes}
    mounted = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    assert mounted == claims, what  # the profile's own, and no operator workspace claim
    operator = spawner.workspace_volume["name"]
    assert (operator in mounted) == (operator in claims), what
    assert spec["automountServiceAccountToken"] is profile.service_account_token, what
    pulled = {s["name"] for s in spec.get("imagePullSecrets", [])}
    assert set(rendered.workspace_image_pull_secrets) <= pulled, what
    scratch = {claims[v.name] for v in rendered.volumes if v.scratch}
    before = {c["metadata"]["name"] for c in objects(sim, "persistentvolumeclaims", spawner.namespace)}
    assert scratch <= before, what
    await spawner.stop()
    after = {c["metadata"]["name"] for c in objects(sim, "persistentvolumeclaims", spawner.namespace)}
    assert after == before - scratch, what  # scratch gone, every other claim kept


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
