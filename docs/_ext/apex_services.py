"""The services' hub roles and the monitoring metrics, as tables, from the code that defines them.

Why: the roles are what an operator audits, and the metric names are what alert rules use; both
drift if copied by hand. ``configure(c, ...)`` is run on a fresh traitlets ``Config`` (twice: the
smallest configuration, and one that turns on every option that adds a scope), and the monitoring
service's ``Metrics`` is built against a stand-in service (its gauges only read the service when
scraped).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

#: options that add scopes, and what the page says about them
FULL_OPTIONS_NOTE = {
    "apex-culler": "when a policy section or the catalogue makes servers always-on (unless `restart: false`)",
    "apex-accounting": "with `quota_stop: true`",
}


def _roles(culler: dict, accounting: dict) -> dict[str, dict]:
    from traitlets.config import Config

    from apex_hub.services import configure

    c = Config()
    configure(c, culler=culler, monitoring={"profile": "jupyterlab"}, accounting=accounting)
    return {r["name"]: r for r in c.JupyterHub.load_roles}


def roles_markdown() -> str:
    import apex_hub.localdata as localdata

    data = Path(localdata.__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        always_on = Path(tmp) / "always-on.yaml"
        always_on.write_text("defaults: {session_mode: always-on}\n")
        smallest = _roles({"policy": str(data / "culling.yaml"), "profiles_file": ""}, {})
        full = _roles(
            {"policy": str(always_on), "profiles_file": ""},
            {"quotas": str(data / "quotas.yaml"), "quota_stop": True},
        )
    lines = ["| role | given to | scopes | description |", "|---|---|---|---|"]
    for name, role in full.items():
        base = smallest.get(name, {}).get("scopes", [])
        scopes = [
            f"`{s}`" if s in base else f"`{s}` ({FULL_OPTIONS_NOTE.get(name, 'with more options')})"
            for s in role.get("scopes", [])
        ]
        who = ", ".join(role.get("services", [])) or ", ".join(role.get("users", [])) or "every user"
        lines.append(f"| `{name}` | {who} | {', '.join(scopes)} | {role.get('description', '')} |")
    return "\n".join(lines) + "\n"


class _StandIn:
    """What the monitoring ``Metrics`` needs of its service until it is scraped: nothing."""

    def __getattr__(self, name):
        def not_scraped(*args, **kwargs):
            raise RuntimeError(f"the docs' stand-in service has no {name}")

        return not_scraped


def metrics_markdown() -> str:
    from prometheus_client.metrics import MetricWrapperBase

    from apex_hub.services.monitoring.service import Metrics

    metrics = Metrics(_StandIn())
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name = metric._name + ("_total" if metric._type == "counter" else "")
        labels = ", ".join(f"`{label}`" for label in metric._labelnames)
        lines.append(f"| `{name}` | {metric._type} | {labels} | {metric._documentation} |")
    return "\n".join(lines) + "\n"


#: the services whose options are generated: (the Application, the hub-side options, configure()'s key)
SERVICES = {
    "culler": (
        "apex_hub.services.culler.app.CullerApp",
        "apex_hub.services.culler.app.CullerHubOptions",
        "python -m apex_hub.services.culler",
    ),
    "monitoring": (
        "apex_hub.services.monitoring.app.MonitoringApp",
        "apex_hub.services.monitoring.app.MonitoringHubOptions",
        "python -m apex_hub.services.monitoring",
    ),
    "accounting": (
        "apex_hub.services.accounting.app.AccountingApp",
        "apex_hub.services.accounting.app.AccountingHubOptions",
        "python -m apex_hub.services.accounting",
    ),
}


def _load(path: str) -> type:
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _cell(text: object) -> str:
    """One table cell of plain text (``<name>`` is text, not HTML)."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def _default(trait) -> str:
    from apex_hub.services.common.traits import Duration

    value = trait.default_value
    if value is None or value == "" or value == [] or value == {}:
        return ""
    if isinstance(trait, Duration):
        return f"`{value:g}` s"
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def options_markdown(service: str) -> str:
    """The options of one service, from its traits: one table for the service's own options (command
    line, config file, and the ``configure()`` key when it has one), one for the hub-side keys."""
    from apex_hub.services.common.app import cli_name, own_traits

    app_path, hub_path, command = SERVICES[service]
    app, hub = _load(app_path), _load(hub_path)
    lines = [
        f"Options of `{command}` (`c.{app.__name__}.<option>` in a config file given with `--config`;"
        f" `--help-all` prints them). Those with a `configure()` key are set by `configure(c,"
        f" {service}={{...}})`, which passes them on the service's command line.",
        "",
        "| option | command line | `configure()` key | default | description |",
        "|---|---|---|---|---|",
    ]
    for name, trait in own_traits(app).items():
        key = f"`{name}`" if trait.metadata.get("configure") else ""
        lines.append(
            f"| `{app.__name__}.{name}` | `--{cli_name(name, trait)}` | {key} | {_default(trait)} |"
            f" {_cell(trait.help)} |"
        )
    lines += [
        "",
        f"The hub's side of the service: more keys of `configure(c, {service}={{...}})`, which shape the"
        " service's entry, role and environment in the hub's configuration.",
        "",
        "| `configure()` key | default | description |",
        "|---|---|---|",
    ]
    for name, trait in own_traits(hub).items():
        lines.append(f"| `{name}` | {_default(trait)} | {_cell(trait.help)} |")
    return "\n".join(lines) + "\n"
