"""``configure(c, accounting={...})`` and the service's command line, without a hub."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from traitlets.config import Config

from apex_hub.services import configure
from apex_hub.services.accounting.config import ACCOUNTING_SCOPES, QUOTA_STOP_SCOPE
from apex_hub.services.accounting.quota import QuotaError
from apex_hub.services.accounting.web import ADMIN_SCOPE


def test_least_privilege_role_and_no_quota_hook_without_quotas(tmp_path):
    c = Config()
    configure(c, accounting={"state_dir": str(tmp_path)})
    [svc] = c.JupyterHub.services
    assert svc["command"][1:3] == ["-m", "apex_hub.services.accounting"]
    assert svc["environment"]["APEX_ACCOUNTING_DB_URL"] == f"sqlite:///{tmp_path}/accounting.sqlite"
    assert svc["oauth_client_allowed_scopes"] == [ADMIN_SCOPE]
    role, user_role = c.JupyterHub.load_roles
    assert user_role == {
        "name": "user",
        "description": user_role["description"],
        "scopes": ["self", "access:services!service=apex-accounting"],
    }
    assert role == {
        "name": "apex-accounting",
        "description": "APEx accounting: read users and groups",
        "scopes": ACCOUNTING_SCOPES,
        "services": ["apex-accounting"],
    }
    assert QUOTA_STOP_SCOPE not in role["scopes"]
    assert "pre_spawn_hook" not in c.Spawner
    assert "extra_user_scopes" not in c.JupyterHub  # JupyterHub 5.5 has none; 6 ignores it beside a user role


def test_quotas_add_the_hook_chained_with_an_existing_one_and_stop_scope(tmp_path):
    quotas = tmp_path / "q.yaml"
    quotas.write_text(yaml.safe_dump({"default": {"cpu_hours": 1}}))
    c = Config()
    calls = []
    c.Spawner.pre_spawn_hook = lambda spawner: calls.append(spawner)
    c.JupyterHub.services = [{"name": "other", "api_token": "x"}]
    for _ in range(2):  # configure twice: one service, one role, one quota check in the chain
        configure(c, accounting={"quotas": str(quotas), "quota_stop": True, "admin_groups": ["ops"]})
    assert [s["name"] for s in c.JupyterHub.services] == ["other", "apex-accounting"]
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["apex-accounting"]["scopes"] == ACCOUNTING_SCOPES + [QUOTA_STOP_SCOPE]
    assert roles["apex-accounting-admin"]["groups"] == ["ops"]
    hook = c.Spawner.pre_spawn_hook
    assert hook._apex_accounting and not getattr(hook._then, "_apex_accounting", False)
    token = c.JupyterHub.services[-1]["environment"]["APEX_ACCOUNTING_QUOTA_TOKEN"]
    assert len(token) == 64 and token not in " ".join(c.JupyterHub.services[-1]["command"])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"colour": "red"}, "unknown key"),
        ({"apel": {"dir": "/x"}}, "apel needs 'dir' and 'site'"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        configure(Config(), accounting=options)


def test_a_bad_quota_file_stops_the_hub_config_and_the_cli(tmp_path):
    bad = tmp_path / "quotas.yaml"
    bad.write_text("groups:\n  g: {cpu: 1}\n")
    with pytest.raises(QuotaError, match=r"quotas.yaml: groups.g.cpu: unknown metric"):
        configure(Config(), accounting={"quotas": str(bad)})
    r = subprocess.run(
        [sys.executable, "-m", "apex_hub.services.accounting", f"--quotas={bad}", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "groups.g.cpu: unknown metric" in r.stderr
    bad.write_text("period: month\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "apex_hub.services.accounting",
            f"--quotas={bad}",
            "--check",
            f"--db-url=sqlite:///{tmp_path}/sub/l.sqlite",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and (tmp_path / "sub" / "l.sqlite").exists(), r.stderr
