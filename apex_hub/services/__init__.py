"""Hub-managed services. ``configure(c, culler={...})`` from ``jupyterhub_config.py``."""

from __future__ import annotations

import sys
from typing import Any

CULLER_SCOPES = [
    "list:users",           # GET /users
    "read:users:name",
    "read:users:groups",    # group policies
    "read:users:activity",
    "read:servers",         # server models: started, last_activity, pending, user_options
    "delete:servers",       # stop
]
RESTART_SCOPE = "start:servers"  # restart always-on servers (JupyterHub 6 scope)


def _current_list(section: Any, key: str) -> list:
    """A list trait as set so far in a traitlets Config (unset or lazy ``.append`` values included)."""
    value = section.get(key) if hasattr(section, "get") else getattr(section, key, None)
    if value is None:
        return []
    if hasattr(value, "get_value"):  # traitlets LazyConfigValue (c.X.y.append(...) before assignment)
        return list(value.get_value([]))
    return list(value)


def configure(c: Any, culler: dict | None = None) -> None:
    """Add the APEx services to a JupyterHub config ``c``.

    ``culler`` keys: ``policy`` (path of the policy YAML, required), ``state_dir`` (where
    ``stop-reasons.jsonl`` goes; default the hub's working directory), ``interval`` (seconds or "1m";
    default 60), ``dry_run`` (bool), ``restart`` (grant ``start:servers`` for always-on; default True),
    ``name`` (service name; default ``apex-culler``), ``extra_args`` (list), ``environment`` (dict).

    The policy is validated here too, so that a bad cron expression / time zone stops the hub from
    starting with a clear message instead of a service crash loop.
    """
    if culler is None:
        return
    from .culler.policy import CullingPolicy

    if "policy" not in culler:
        raise ValueError("configure(c, culler={...}): 'policy' (path of the policy file) is required")
    policy = CullingPolicy.load(culler["policy"])  # raises PolicyError naming section and field
    name = culler.get("name", "apex-culler")
    cmd = [sys.executable, "-m", "apex_hub.services.culler", f"--policy={culler['policy']}",
           f"--interval={culler.get('interval', 60)}", f"--dry-run={'true' if culler.get('dry_run') else 'false'}"]
    if culler.get("state_dir"):
        cmd.append(f"--state-dir={culler['state_dir']}")
    cmd += list(culler.get("extra_args", []))
    service = {"name": name, "command": cmd}
    if culler.get("environment"):
        service["environment"] = dict(culler["environment"])
    scopes = list(CULLER_SCOPES)
    if culler.get("restart", True) and policy.may_restart:
        scopes.append(RESTART_SCOPE)
    services = _current_list(c.JupyterHub, "services")
    services = [s for s in services if s.get("name") != name] + [service]
    c.JupyterHub.services = services
    roles = [r for r in _current_list(c.JupyterHub, "load_roles") if r.get("name") != name]
    roles.append({"name": name, "description": "APEx culler: stop idle/old/scheduled servers, restart always-on",
                  "scopes": scopes, "services": [name]})
    c.JupyterHub.load_roles = roles
