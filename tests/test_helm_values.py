"""helm-values/: the Z2JH values configure APExSpawner as intended; the RBAC is valid and minimal.

The chart's jupyterhub_config.py is emulated for the parts that matter here (its
own settings, then ``hub.config``, then every ``hub.extraConfig`` snippet in key
order, each ``exec``'d as the chart does); the result is a real traitlets Config
that a real ``JupyterHub`` application and a real ``APExSpawner`` are built from.

The RBAC helpers at the bottom (``rbac_objects``, ``cluster_role_rules``,
``allows``) are shared with tests/spawner/test_rbac_coverage.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from traitlets.config import Config

from tests.helpers import z2jh

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "helm-values" / "values.yaml"
RBAC = ROOT / "helm-values" / "rbac.yaml"
K8S_VERSION = "1.30.0"
PROFILES_PATH = "/etc/apex/profiles.yml"
CRYPT_KEY = "ab" * 32


def load_values() -> dict:
    """helm-values/values.yaml merged over the chart 4.4.0 defaults, as Helm does."""
    return z2jh.load_values(VALUES)


# -- the chart's jupyterhub_config.py (tests/helpers/z2jh.py) -------------------------------------

_FILES_DIR: tempfile.TemporaryDirectory | None = None


def mount_extra_files(values: dict) -> dict[str, str]:
    """Write every ``hub.extraFiles`` item to a temporary directory: {mountPath: local path}."""
    global _FILES_DIR
    if _FILES_DIR is None:
        _FILES_DIR = tempfile.TemporaryDirectory(prefix="apex-extrafiles-")
    return z2jh.write_extra_files(values, _FILES_DIR.name)


def chart_config(values: dict, profiles_file: str | None = None) -> Config:
    """The Config the Z2JH 4.4.0 hub builds from ``values`` (see tests/helpers/z2jh.py)."""
    mounts = mount_extra_files(values)
    c = z2jh.chart_config(values, mounts=mounts)
    if profiles_file is not None:  # the test reads the catalogue from a temporary copy
        assert c.APExSpawner.profiles_file == mounts[PROFILES_PATH]
        c.APExSpawner.profiles_file = profiles_file
    return c


@pytest.fixture
def hub_env(monkeypatch):
    """The hub container's environment as the chart and our extraEnv set it."""
    monkeypatch.setenv("POD_NAMESPACE", "jhub")
    monkeypatch.setenv("HUB_SERVICE_PORT", "8081")
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", CRYPT_KEY)
    monkeypatch.setenv("OAUTH_CLIENT_ID", "apex-hub")
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("KUBECONFIG", "")


@pytest.fixture
def profiles_file(tmp_path) -> str:
    path = tmp_path / "profiles.yml"
    path.write_text(load_values()["hub"]["extraFiles"]["apex-profiles"]["stringData"])
    return str(path)


# -- values.yaml --------------------------------------------------------------------------


def test_values_parse_and_have_the_documented_blocks():
    values = load_values()
    hub = values["hub"]
    assert hub["image"]["name"].endswith("/apex-hub") and hub["image"]["tag"]
    assert hub["networkPolicy"]["interNamespaceAccessLabels"] == "accept"
    assert hub["db"]["type"] == "postgres" and hub["db"]["url"].startswith("postgresql")
    assert "password" not in hub["db"]  # from a Secret, via PGPASSWORD
    assert values["singleuser"]["cmd"] == "jupyterhub-singleuser"
    assert values["singleuser"]["storage"]["type"] == "none"
    assert values["singleuser"]["extraLabels"]["hub.jupyter.org/network-access-hub"] == "true"
    assert values["cull"]["enabled"] is False
    assert list(hub["extraConfig"]) == sorted(hub["extraConfig"])
    assert "00-apex-spawner" in hub["extraConfig"]


def test_no_secret_value_is_in_the_values():
    hub = load_values()["hub"]
    for name in ("JUPYTERHUB_CRYPT_KEY", "OAUTH_CLIENT_SECRET", "OAUTH_CLIENT_ID", "PGPASSWORD"):
        ref = hub["extraEnv"][name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] and ref["key"], name
    config = hub["config"]["APExOIDCAuthenticator"]
    assert "client_secret" not in config and "client_id" not in config
    text = VALUES.read_text().lower()
    assert "cookie_secret" not in text and "-----begin" not in text


def test_the_catalogue_shipped_in_extra_files_is_valid_and_is_the_example():
    from apex_hub.profiles import Catalogue

    item = load_values()["hub"]["extraFiles"]["apex-profiles"]
    assert item["mountPath"] == PROFILES_PATH
    catalogue = Catalogue.from_yaml(item["stringData"], "hub.extraFiles.apex-profiles")
    assert any(p.default for p in catalogue.profiles)
    # The values carry a copy of examples/profiles.yml: keep the two in step.
    example = yaml.safe_load((ROOT / "examples" / "profiles.yml").read_text())
    assert yaml.safe_load(item["stringData"]) == example


def test_extra_config_makes_jupyterhub_use_apexspawner(hub_env, profiles_file):
    from jupyterhub.app import JupyterHub

    from apex_hub.auth import TOKEN_SCOPE, APExOIDCAuthenticator
    from apex_hub.spawner import APExSpawner

    c = chart_config(load_values(), profiles_file)
    app = JupyterHub(config=c)
    assert app.spawner_class is APExSpawner
    assert app.authenticator_class is APExOIDCAuthenticator
    assert app.hub_connect_url == "http://hub.jhub.svc.cluster.local:8081"
    assert app.db_url.startswith("postgresql+psycopg2://")
    assert TOKEN_SCOPE in app.custom_scopes
    user_role = next(r for r in app.load_roles if r["name"] == "user")
    # (plus the culler's api/upcoming and the usage page, which answer each user with their own data only)
    assert user_role["scopes"] == [
        "self",
        f"{TOKEN_SCOPE}!user",
        "access:services!service=apex-culler",
        "access:services!service=apex-accounting",
    ]

    authenticator = APExOIDCAuthenticator(config=c)
    assert authenticator.enable_auth_state is True
    assert authenticator.manage_groups is True
    assert authenticator.client_id == "apex-hub" and authenticator.client_secret == "s3cret"
    assert authenticator.oidc_issuer == "https://auth.apex.example.org/realms/apex"
    assert authenticator.group_claims == ["groups", "realm_access.roles", "resource_access.{client_id}.roles"]
    assert authenticator.username_claim == "preferred_username"
    assert "offline_access" in authenticator.scope
    assert authenticator.refresh_leeway == 120 and authenticator.auth_refresh_age == 60
    assert authenticator.admin_groups == {"apex-admins"}


def test_the_crypt_key_comes_from_the_operators_secret(hub_env):
    from jupyterhub.crypto import CryptKeeper

    c = chart_config(load_values())
    assert CryptKeeper(config=c).keys == [bytes.fromhex(CRYPT_KEY)]


async def test_apexspawner_settings_are_what_the_values_say(hub_env, profiles_file, sim):
    from jupyterhub.objects import Hub

    from apex_hub.spawner import APExSpawner
    from tests.helpers.spawner import HubUser

    c = chart_config(load_values(), profiles_file)
    sim.make_default()  # KubeSpawner loads a Kubernetes config (in the cluster: in-cluster config)
    c.APExSpawner.k8s_api_host = sim.url  # no API call is made here
    spawner = APExSpawner(
        config=c, hub=Hub(), user=HubUser("ada", groups=["apex-large"]), api_token="t", oauth_client_id="c"
    )
    assert spawner.profiles_file == profiles_file  # /etc/apex/profiles.yml in the cluster
    assert spawner.hub_namespace == "jhub"
    assert spawner.namespace == "apex-ada" and spawner.enable_user_namespaces
    assert spawner.cmd == ["jupyterhub-singleuser"]
    assert spawner.extra_labels["hub.jupyter.org/network-access-hub"] == "true"
    assert spawner.image == "registry.example.org/apex/apex-singleuser:0.1.0"
    assert spawner.delete_namespace_on_user_delete is False
    assert spawner.resource_quota["hard"]["requests.cpu"] == "8"
    assert spawner.limit_range["limits"][0]["type"] == "Container"
    assert spawner.storage_pvc_ensure is False
    slugs = [p.slug for p in spawner.catalogue().for_groups(spawner.group_names())]
    assert "processing-large" in slugs and "gpu" not in slugs
    entries = spawner._profile_entries()
    assert entries and any(e["default"] for e in entries)


# -- rbac.yaml ----------------------------------------------------------------------------


def rbac_objects() -> list[dict]:
    return [d for d in yaml.safe_load_all(RBAC.read_text()) if d]


def cluster_role_rules() -> list[dict]:
    role = next(o for o in rbac_objects() if o["kind"] == "ClusterRole")
    return role["rules"]


def allows(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    """RBAC's answer for (api group, resource[/subresource], verb), resourceNames aside."""
    for rule in rules:
        if rule.get("resourceNames"):
            continue
        if (
            group in rule.get("apiGroups", [])
            and resource in rule.get("resources", [])
            and verb in rule.get("verbs", [])
        ):
            return True
    return False


def grants(rules: list[dict]) -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) that ``rules`` name."""
    return {
        (g, r, v)
        for rule in rules
        for g in rule.get("apiGroups", [])
        for r in rule.get("resources", [])
        for v in rule.get("verbs", [])
    }


def test_rbac_objects_pass_the_kubernetes_schemas():
    objects = rbac_objects()
    assert sorted(o["kind"] for o in objects) == ["ClusterRole", "ClusterRoleBinding"]
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_rbac_is_bound_to_the_hub_service_account_and_has_no_wildcards():
    objects = {o["kind"]: o for o in rbac_objects()}
    binding = objects["ClusterRoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": objects["ClusterRole"]["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "jhub"}]
    for rule in cluster_role_rules():
        assert "nonResourceURLs" not in rule
        for field in ("apiGroups", "resources", "verbs"):
            assert rule[field] and "*" not in rule[field], (field, rule)
            assert not any("*" in item for item in rule[field]), (field, rule)
    verbs = {v for _, _, v in grants(cluster_role_rules())}
    assert "escalate" not in verbs and "impersonate" not in verbs
    assert allows(cluster_role_rules(), "rbac.authorization.k8s.io", "roles", "bind")


def test_the_shipped_profiles_only_grant_what_the_hub_holds():
    """Kubernetes refuses a Role with rules its creator does not hold (no "escalate")."""
    from apex_hub.profiles import Catalogue

    text = load_values()["hub"]["extraFiles"]["apex-profiles"]["stringData"]
    rules = cluster_role_rules()
    for profile in Catalogue.from_yaml(text).profiles:
        for binding in profile.role_bindings:
            for rule in binding.role.rules:
                k8s = rule.to_k8s()
                for group in k8s["apiGroups"]:
                    for resource in k8s["resources"]:
                        for verb in k8s["verbs"]:
                            assert allows(rules, group, resource, verb), (
                                f"profile {profile.slug}: role {binding.role_name} grants {verb}"
                                f" {resource} ({group or 'core'}), which the hub does not hold"
                            )


# -- the culler (hub.extraConfig 10-apex-culler) ------------------------------------------


def test_the_culler_is_a_hub_managed_service_with_its_role(hub_env):
    from jupyterhub.app import JupyterHub
    from jupyterhub.services.service import Service

    from apex_hub.services import CULLER_SCOPES
    from apex_hub.services.announce import HubAnnouncement
    from apex_hub.services.culler import CullingPolicy

    values = load_values()
    mounts = mount_extra_files(values)
    c = chart_config(values)
    app = JupyterHub(config=c)
    [culler] = [s for s in app.services if s["name"] == "apex-culler"]
    assert set(culler) <= set(Service.class_trait_names()), set(culler) - set(Service.class_trait_names())
    cmd = culler["command"]
    assert cmd[1:3] == ["-m", "apex_hub.services.culler"] and "python" in Path(cmd[0]).name
    assert f"--policy={mounts['/etc/apex/culling.yaml']}" in cmd
    assert f"--profiles={mounts[PROFILES_PATH]}" in cmd  # session_mode from the spawner's catalogue
    assert {
        "--state-dir=/srv/apex/culler",
        "--interval=1m",
        "--warn-before=900",
        "--restart-limit=3",
        "--restart-window=3600",
        "--restart-backoff=60",
        "--dry-run=false",
    } <= set(cmd)
    assert culler["url"] == "http://hub:8182"
    [role] = [r for r in app.load_roles if r["name"] == "apex-culler"]
    assert role["services"] == ["apex-culler"]
    # nothing is always-on in the shipped policy or catalogue: no start:servers, nothing admin
    assert role["scopes"] == CULLER_SCOPES
    [user_role] = [r for r in app.load_roles if r["name"] == "user"]
    assert "self" in user_role["scopes"] and "access:services!service=apex-culler" in user_role["scopes"]
    assert isinstance(app.template_vars["announcement"], HubAnnouncement)
    assert app.template_vars["announcement"].sources["culler"][0].path == Path(
        "/srv/apex/culler/upcoming.json"
    )
    # the chart's own culler stays off, and the shipped policy is valid
    assert values["cull"]["enabled"] is False
    policy = CullingPolicy.load(mounts["/etc/apex/culling.yaml"])
    assert policy.profiles["gpu"].idle_timeout == 1800
    # the proxy can reach the service's port in the hub pod
    hub = values["hub"]
    assert {"name": "apex-culler", "port": 8182, "targetPort": 8182, "protocol": "TCP"} in hub["service"][
        "extraPorts"
    ]
    assert hub["networkPolicy"]["ingress"][0]["ports"] == [{"port": 8182, "protocol": "TCP"}]
    mount = next(m for m in hub["extraVolumeMounts"] if m["name"] == "apex-hub-state")
    assert "/srv/apex/culler".startswith(mount["mountPath"])


def test_monitoring_is_a_hub_managed_service_with_a_least_privilege_role(hub_env, monkeypatch):
    from jupyterhub.app import JupyterHub
    from jupyterhub.services.service import Service

    from apex_hub.profiles import Catalogue
    from apex_hub.services.monitoring.config import role_scopes

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("APEX_MONITORING_METRICS_TOKEN", "from-the-secret")
    values = load_values()
    mounts = mount_extra_files(values)
    app = JupyterHub(config=chart_config(values))
    [svc] = [s for s in app.services if s["name"] == "apex-monitoring"]
    assert set(svc) <= set(Service.class_trait_names()), set(svc) - set(Service.class_trait_names())
    cmd = svc["command"]
    assert cmd[1:3] == ["-m", "apex_hub.services.monitoring"]
    assert {
        "--profile=jupyterlab",
        "--public-url=http://proxy-public",
        "--kube-api=incluster",
        "--state-dir=/srv/apex/monitoring",
        "--interval=300",
    } <= set(cmd), cmd
    assert svc["url"] == "http://hub:8183"
    assert svc["environment"] == {
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "APEX_MONITORING_METRICS_TOKEN": "from-the-secret",
    }
    [role] = [r for r in app.load_roles if r["name"] == "apex-monitoring"]
    assert role["services"] == ["apex-monitoring"]
    assert role["scopes"] == role_scopes("apex-probe", "apex-probe", proxy_routes=False)
    assert not any(
        s.split("!")[0] in ("admin:users", "servers", "tokens") and "!" not in s for s in role["scopes"]
    )
    assert not app.load_groups  # the authenticator manages groups: the service makes the probe group
    # the probed profile exists in the shipped catalogue and is open to the probe user (no group)
    catalogue = Catalogue.from_file(mounts[PROFILES_PATH])
    assert "jupyterlab" in [p.slug for p in catalogue.for_groups(["apex-probe"])]
    # the proxy reaches 8183 in the hub pod; the history lives on the state claim; the token is optional
    hub = values["hub"]
    assert {"name": "apex-monitoring", "port": 8183, "targetPort": 8183, "protocol": "TCP"} in hub["service"][
        "extraPorts"
    ]
    assert any(
        rule["ports"] == [{"port": 8183, "protocol": "TCP"}] for rule in hub["networkPolicy"]["ingress"]
    )
    mount = next(m for m in hub["extraVolumeMounts"] if m["name"] == "apex-hub-state")
    assert "/srv/apex/monitoring".startswith(mount["mountPath"])
    assert hub["extraEnv"]["APEX_MONITORING_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


# -- accounting (hub.extraConfig 30-apex-accounting) ----------------------------------------


def test_accounting_is_a_hub_managed_service_with_a_least_privilege_role(hub_env, monkeypatch):
    from jupyterhub.app import JupyterHub
    from jupyterhub.services.service import Service

    from apex_hub.services.accounting.config import ACCOUNTING_SCOPES, QUOTA_STOP_SCOPE
    from apex_hub.services.accounting.quota import Quotas
    from apex_hub.services.accounting.web import ADMIN_SCOPE

    db = "postgresql+psycopg://acct:pw@db:5432/acct"
    for key, value in {
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "APEX_ACCOUNTING_DB_URL": db,
    }.items():
        monkeypatch.setenv(key, value)
    values = load_values()
    mounts, app = mount_extra_files(values), JupyterHub(config=chart_config(values))
    services = {s["name"]: s for s in app.services}
    svc, cmd = services["apex-accounting"], services["apex-accounting"]["command"]
    assert not set(svc) - set(Service.class_trait_names()) and cmd[1:3] == [
        "-m",
        "apex_hub.services.accounting",
    ]
    assert {
        "--stop-reasons=/srv/apex/culler/stop-reasons.jsonl",
        "--exclude-groups=apex-probe",
        f"--quotas={mounts['/etc/apex/quotas.yaml']}",
        "--quota-stop=true",
        "--apel-dir=/srv/apex/apel",
        "--apel-site=APEX-PLACEHOLDER",
        "--apel-interval=21600",
    } <= set(cmd), cmd
    assert svc["url"] == "http://hub:8184"
    env = svc["environment"]
    assert env["APEX_ACCOUNTING_DB_URL"] == db  # never on the command line
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("10.0.0.1", "443")
    assert len(env["APEX_ACCOUNTING_QUOTA_TOKEN"]) == 64
    assert not any("pw@" in a for a in cmd)
    [role] = [r for r in app.load_roles if r["name"] == "apex-accounting"]
    assert role["services"] == ["apex-accounting"] and role["scopes"] == ACCOUNTING_SCOPES + [
        QUOTA_STOP_SCOPE
    ]
    [admins] = [r for r in app.load_roles if r["name"] == "apex-accounting-admin"]
    assert admins["groups"] == ["apex-admins"] and ADMIN_SCOPE in admins["scopes"]
    assert ADMIN_SCOPE in app.custom_scopes
    user_role = next(r for r in app.load_roles if r["name"] == "user")
    assert "access:services!service=apex-accounting" in user_role["scopes"]
    assert getattr(app.config.Spawner.pre_spawn_hook, "_apex_accounting", False)  # the quota check
    # quota warnings in the hub's banner, beside the culler's warnings: one announcement, two sources
    assert "--state-dir=/srv/apex/accounting" in cmd
    sources = app.template_vars["announcement"].sources
    assert list(sources) == ["culler", "quota"]
    assert sources["quota"][0].path == Path("/srv/apex/accounting/quota-warnings.json")
    Quotas.load(mounts["/etc/apex/quotas.yaml"])
    hub = values["hub"]
    assert {"name": "apex-accounting", "port": 8184, "targetPort": 8184, "protocol": "TCP"} in hub["service"][
        "extraPorts"
    ]
    assert any(
        rule["ports"] == [{"port": 8184, "protocol": "TCP"}] for rule in hub["networkPolicy"]["ingress"]
    )
    assert hub["extraEnv"]["APEX_ACCOUNTING_DB_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_the_admission_policy_passes_the_kubernetes_schemas_and_names_the_hub():
    """helm-values/admission-policy.yaml: a ValidatingAdmissionPolicy + binding (GA in Kubernetes 1.30)."""
    docs = [d for d in yaml.safe_load_all((ROOT / "helm-values" / "admission-policy.yaml").read_text()) if d]
    assert sorted(d["kind"] for d in docs) == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    binding = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert "Deny" in binding["spec"]["validationActions"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    # the hub the policy confines is the ServiceAccount rbac.yaml binds
    sa = next(o for o in rbac_objects() if o["kind"] == "ClusterRoleBinding")["subjects"][0]
    who = f"system:serviceaccount:{sa['namespace']}:{sa['name']}"
    assert who in yaml.safe_dump(policy["spec"]["matchConditions"])
