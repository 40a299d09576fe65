"""The services' option model: one trait per option, read by the command line, a config file and
``configure()``, and shown in the generated reference.

Why: an option written once must behave the same on each path; these tests parse real command lines
with the real Applications (no mocks), and compare ``configure()``'s command line with what the
service parses back.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
from traitlets.config import Config

from apex_hub.services import configure
from apex_hub.services.accounting.app import AccountingApp, AccountingHubOptions
from apex_hub.services.common.app import cli_name, own_traits
from apex_hub.services.culler.app import CullerApp, CullerHubOptions
from apex_hub.services.culler.config import KEYS as CULLER_KEYS
from apex_hub.services.monitoring.app import MonitoringApp, MonitoringHubOptions
from apex_hub.services.monitoring.config import KEYS as MONITORING_KEYS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def policy(tmp_path) -> Path:
    path = tmp_path / "culling.yaml"
    path.write_text("defaults: {idle_timeout: 1h}\n")
    return path


def _parsed(app_cls, argv):
    app = app_cls()
    app.initialize(argv)
    return app


def test_configure_command_line_parses_back_into_the_same_culler_options(policy, tmp_path):
    c = Config()
    configure(
        c,
        culler={
            "policy": str(policy),
            "state_dir": str(tmp_path),
            "interval": "1m",
            "dry_run": True,
            "profiles_file": "",
            "warn_before": "15m",
            "restart_limit": 2,
            "restart_window": "30m",
            "restart_backoff": "10s",
        },
    )
    [svc] = c.JupyterHub.services
    assert svc["command"][:3] == [sys.executable, "-m", "apex_hub.services.culler"]
    app = _parsed(CullerApp, svc["command"][3:])
    assert (app.policy, app.state_dir, app.interval, app.dry_run) == (str(policy), str(tmp_path), 60.0, True)
    assert (app.warn_before, app.restart_limit, app.restart_window, app.restart_backoff) == (900, 2, 1800, 10)
    assert app.profiles_file is None


def test_culler_command_line_spellings(policy):
    app = _parsed(CullerApp, [f"--policy={policy}", "--dry-run", "--interval=1h30m", "--once=yes"])
    assert app.dry_run is True and app.interval == 5400 and app.once is True
    assert _parsed(CullerApp, ["--dry-run=false", "--check"]).dry_run is False
    assert CullerApp.main([f"--policy={policy}", "--interval=5 minutes", "--check"]) == 2
    assert CullerApp.main([f"--policy={policy}", "--interval=5minutes", "--check"]) == 2
    assert CullerApp.main([f"--policy={policy}", "--check"]) == 0


def test_the_clock_offset_is_not_an_option(policy, monkeypatch, capsys):
    """The tests-only clock offset is read from the environment, never from the command line."""
    assert "clock_offset" not in CullerApp.class_traits(config=True)
    assert CullerApp.main([f"--policy={policy}", "--clock-offset=1h", "--check"]) == 2
    assert "unknown option --clock-offset" in capsys.readouterr().err
    monkeypatch.setenv("APEX_CULLER_CLOCK_OFFSET", "1h")
    assert CullerApp().clock_offset() == 3600
    monkeypatch.delenv("APEX_CULLER_CLOCK_OFFSET")
    assert CullerApp().clock_offset() == 0


def test_a_config_file_sets_options_and_the_command_line_wins(policy, tmp_path):
    config = tmp_path / "culler_config.py"
    config.write_text(
        f"c.CullerApp.policy = {str(policy)!r}\nc.CullerApp.interval = '2m'\nc.CullerApp.concurrency = 3\n"
    )
    app = _parsed(CullerApp, [f"--config={config}", "--interval=30"])
    assert (app.policy, app.interval, app.concurrency) == (str(policy), 30.0, 3)
    config.write_text("c.CullerApp.warn_before = 'soon'\n")
    assert CullerApp.main([f"--config={config}", f"--policy={policy}", "--check"]) == 2


def test_help_all_lists_every_option(capsys):
    for app_cls in (CullerApp, MonitoringApp):
        with pytest.raises(SystemExit) as exit_info:
            app_cls.main(["--help-all"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        for name, trait in own_traits(app_cls).items():
            assert f"--{app_cls.__name__}.{name}" in out and f"--{cli_name(name, trait)}" in out, name


def test_configure_keys_are_the_traits():
    assert set(CULLER_KEYS) == {
        n for n, t in own_traits(CullerApp).items() if t.metadata.get("configure")
    } | set(own_traits(CullerHubOptions))
    assert set(MONITORING_KEYS) == {
        n for n, t in own_traits(MonitoringApp).items() if t.metadata.get("configure")
    } | set(own_traits(MonitoringHubOptions))
    for app_cls in (CullerApp, MonitoringApp, CullerHubOptions, MonitoringHubOptions):
        undocumented = [n for n, t in own_traits(app_cls).items() if len((t.help or "").split()) < 3]
        assert undocumented == [], app_cls


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"warn_befor": "15m"}, r"unknown key\(s\) warn_befor; known: policy, state_dir"),
        ({"restart_limit": "many"}, r"restart_limit: "),
        ({"restart_limit": 0}, r"restart_limit must be at least 1"),
        ({"dry_run": "maybe"}, r"dry_run: expected true or false"),
    ],
)
def test_configure_names_a_bad_culler_option(policy, options, error):
    with pytest.raises(ValueError, match=error):
        configure(Config(), culler={"policy": str(policy), **options})


def test_monitoring_services_and_user_options_round_trip(monkeypatch):
    c = Config()
    configure(
        c,
        monitoring={
            "user_options": {"profile": "probe", "image": "x"},
            "services": ["a", "b"],
            "proxy_routes": False,
            "kernel_failure": "critical",
            "kubernetes": "off",
        },
    )
    cmd = c.JupyterHub.services[0]["command"]
    assert "--no-proxy-routes" in cmd and "--kube-api=off" in cmd
    app = _parsed(MonitoringApp, cmd[3:])
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://hub:8081/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "x")
    s = app.settings()
    assert s.probe.user_options == {"profile": "probe", "image": "x"} and s.services == ["a", "b"]
    assert s.proxy_routes is False and s.kube_api == "off"
    from apex_hub.services.monitoring.status import CRITICAL

    assert s.probe.kernel_failure == CRITICAL
    assert MonitoringApp.main(["--public-url=http://x", "--kernel-failure=fatal"]) == 2


def test_the_generated_reference_lists_every_option_and_key():
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        import apex_services
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))
    for service, (app_cls, hub_cls) in {
        "culler": (CullerApp, CullerHubOptions),
        "monitoring": (MonitoringApp, MonitoringHubOptions),
        "accounting": (AccountingApp, AccountingHubOptions),
    }.items():
        text = apex_services.options_markdown(service)
        for name, trait in own_traits(app_cls).items():
            assert f"| `{app_cls.__name__}.{name}` | `--{cli_name(name, trait)}` |" in text, name
        for name in own_traits(hub_cls):
            assert f"| `{name}` |" in text, name


def test_old_import_paths_still_work():
    from apex_hub.services import common
    from apex_hub.services.culler.service import HubAPIError, HubClient, server_path  # accounting's import
    from apex_hub.services.startup import configured_url, listen_address, listen_early, serve

    assert (HubAPIError, HubClient, server_path) == (common.HubAPIError, common.HubClient, common.server_path)
    assert (configured_url, listen_address, listen_early, serve) == (
        common.configured_url,
        common.listen_address,
        common.listen_early,
        common.serve,
    )
    from apex_hub.services.culler import parse_duration
    from apex_hub.services.culler.decide import parse_time

    assert parse_duration is common.parse_duration and parse_time is common.parse_time
    import apex_hub.services.monitoring.__main__ as monitoring_main

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")  # what else the garbage collector reports meanwhile is not ours
        warnings.simplefilter("always", DeprecationWarning)
        bind_address = monitoring_main.bind_address
    assert [str(w.message) for w in caught if w.category is DeprecationWarning] == [
        "apex_hub.services.monitoring.__main__.bind_address moved: use"
        " apex_hub.services.common.listen.listen_address"
    ]
    assert bind_address is common.listen_address


def test_the_page_templates_are_package_data():
    """A template missing from the package data works from a checkout and fails once installed."""
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    templates = sorted((ROOT / "apex_hub" / "services").glob("*/templates/*"))
    assert templates, "no service templates?"
    for path in templates:
        package = "apex_hub.services." + path.parent.parent.name
        relative = str(path.relative_to(path.parent.parent))
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in package_data.get(package, [])), relative


def test_configure_command_line_parses_back_into_the_same_accounting_options(tmp_path, monkeypatch):
    monkeypatch.delenv("APEX_ACCOUNTING_DB_URL", raising=False)
    quotas = tmp_path / "quotas.yaml"
    quotas.write_text("period: month\ngroups:\n  apex-small: {cpu_hours: 2}\n")
    c = Config()
    configure(
        c,
        accounting={
            "state_dir": str(tmp_path),
            "interval": "30",  # as a string, read as the command line reads it
            "exclude_groups": ["apex-probe", "ops"],
            "quotas": str(quotas),
            "quota_stop": True,
            "quota_warn": 0.8,
            "culler_state_dir": str(tmp_path / "culler"),
            "apel": {"dir": str(tmp_path / "apel"), "site": "APEX-TEST", "benchmark": 10.5},
        },
    )
    [svc] = c.JupyterHub.services
    assert svc["command"][:3] == [sys.executable, "-m", "apex_hub.services.accounting"]
    monkeypatch.setenv("APEX_ACCOUNTING_DB_URL", svc["environment"]["APEX_ACCOUNTING_DB_URL"])
    app = _parsed(AccountingApp, svc["command"][3:])
    assert (app.interval, app.exclude_groups, app.state_dir) == (30.0, ["apex-probe", "ops"], str(tmp_path))
    assert (app.quotas, app.quota_stop, app.quota_warn) == (str(quotas), True, 0.8)
    assert app.stop_reasons == str(tmp_path / "culler" / "stop-reasons.jsonl")
    assert (app.apel_dir, app.apel_site, app.apel_benchmark) == (str(tmp_path / "apel"), "APEX-TEST", 10.5)
    assert app.db_url == f"sqlite:///{tmp_path / 'accounting.sqlite'}"  # from the environment, never argv
    assert not any("sqlite" in a for a in svc["command"])


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"interval": "soon"}, "interval"),
        ({"quota_warn": "most"}, "quota_warn"),
        ({"exclude_group": ["x"]}, "unknown key"),
        ({"admin_users": "alice"}, "admin_users"),
    ],
)
def test_configure_names_a_bad_accounting_option(options, error):
    with pytest.raises(ValueError, match=error):
        configure(Config(), accounting=options)


@pytest.mark.parametrize("service", ["culler", "monitoring", "accounting"])
def test_a_misspelt_option_is_refused_not_ignored(service):
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", f"apex_hub.services.{service}", "--intervall=5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert (
        f"apex {service}: invalid option: unknown option --intervall (--help-all lists them)" in done.stderr
    )


def test_accounting_reads_a_config_file_and_the_command_line_wins(tmp_path):
    config = tmp_path / "accounting_config.py"
    config.write_text("c.AccountingApp.interval = 15\nc.AccountingApp.quota_warn = 0.5\n")
    app = _parsed(AccountingApp, [f"--config={config}", "--interval=20"])
    assert (app.interval, app.quota_warn) == (20.0, 0.5)
