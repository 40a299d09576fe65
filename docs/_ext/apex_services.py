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
