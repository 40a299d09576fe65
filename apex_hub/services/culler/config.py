"""``configure(c, culler={...})``: the culler as a hub-managed service, its role, and the banner."""

from __future__ import annotations

import os
import sys
from typing import Any

from ...hubconfig import extend_user_role, log, scope_exists
from .policy import CullingPolicy, PolicyError, parse_duration

KEYS = {
    "policy": "path of the policy YAML (required)",
    "state_dir": "where stop-reasons.jsonl and upcoming.json go (default: the hub's working directory)",
    "interval": "seconds or '1m' between rounds (default 60)",
    "dry_run": "log and record what would be stopped, stop nothing",
    "profiles_file": "the profiles catalogue whose session_mode applies (default: c.APExSpawner.profiles_file;"
    " '' for none)",
    "warn_before": "warn this long before a schedule / max-age stop, e.g. '15m' (default: no warnings)",
    "announcement": "show the warnings as the banner of the hub's pages (default True when warn_before)",
    "url": "the service's URL, which the hub proxies at /services/<name>/ (e.g. 'http://127.0.0.1:8182'"
    " locally, 'http://hub:8182' in Kubernetes); enables api/upcoming",
    "user_access": "with url: add access:services!service=<name> to the 'user' role, so that browsers"
    " reach api/upcoming through the hub's OAuth (default True)",
    "restart": "grant start:servers when something is always-on (default True)",
    "restart_limit": "at most this many always-on restarts of a server per restart_window (default 3)",
    "restart_window": "default '1h'",
    "restart_backoff": "wait after a failed restart, doubled per further failure (default '1m')",
    "name": "service name (default apex-culler)",
    "extra_args": "more command-line arguments (list)",
    "environment": "environment of the service (dict)",
}


def _spawner_profiles_file(c: Any) -> str | None:
    section = c.APExSpawner if hasattr(c, "APExSpawner") else None
    value = section.get("profiles_file") if hasattr(section, "get") else None
    return value if isinstance(value, str) and value else None


def _catalogue_always_on(path: str) -> bool:
    from ...profiles.catalogue import Catalogue

    cat = Catalogue.from_file(path)  # raises CatalogueError naming the file and the field
    return any(p.session_mode == "always-on" and "session_mode" in p.model_fields_set for p in cat.profiles)


def _duration(options: dict, key: str) -> float | None:
    if options.get(key) is None:
        return None
    try:
        return parse_duration(options[key])
    except ValueError as exc:
        raise PolicyError(f"configure(c, culler={{...}}): {key}: {exc}") from None


def configure_culler(
    c: Any, options: dict, *, scopes: list[str], restart_scope_name: str, current_list
) -> None:
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise ValueError(
            f"configure(c, culler={{...}}): unknown key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}"
        )
    if "policy" not in options:
        raise ValueError("configure(c, culler={...}): 'policy' (path of the policy file) is required")
    policy = CullingPolicy.load(options["policy"])  # raises PolicyError naming section and field
    name = options.get("name", "apex-culler")
    cmd = [
        sys.executable,
        "-m",
        "apex_hub.services.culler",
        f"--policy={options['policy']}",
        f"--interval={options.get('interval', 60)}",
        f"--dry-run={'true' if options.get('dry_run') else 'false'}",
    ]
    if options.get("state_dir"):
        cmd.append(f"--state-dir={options['state_dir']}")
    profiles = options["profiles_file"] if "profiles_file" in options else _spawner_profiles_file(c)
    always_on = policy.may_restart
    if profiles:
        cmd.append(f"--profiles={profiles}")
        always_on = _catalogue_always_on(profiles) or always_on
    for key in ("warn_before", "restart_window", "restart_backoff"):
        seconds = _duration(options, key)
        if seconds is not None:
            cmd.append(f"--{key.replace('_', '-')}={seconds:g}")
    if options.get("restart_limit") is not None:
        if int(options["restart_limit"]) < 1:
            raise ValueError("configure(c, culler={...}): restart_limit must be at least 1")
        cmd.append(f"--restart-limit={int(options['restart_limit'])}")
    cmd += list(options.get("extra_args", []))
    service: dict[str, Any] = {"name": name, "command": cmd}
    if options.get("url"):
        service["url"] = options["url"]
        service["display"] = False  # an API, not a page for the hub's Services menu
        service["oauth_no_confirm"] = True
    if options.get("environment"):
        service["environment"] = dict(options["environment"])
    granted = list(scopes)
    if options.get("restart", True) and always_on:
        granted.append(restart_scope(restart_scope_name))
    services = [s for s in current_list(c.JupyterHub, "services") if s.get("name") != name] + [service]
    c.JupyterHub.services = services
    roles = [r for r in current_list(c.JupyterHub, "load_roles") if r.get("name") != name]
    roles.append(
        {
            "name": name,
            "description": "APEx culler: stop idle/old/scheduled servers, restart always-on",
            "scopes": granted,
            "services": [name],
        }
    )
    c.JupyterHub.load_roles = roles
    if options.get("url") and options.get("user_access", True):
        # every user may reach the service (it answers with their own servers only)
        extend_user_role(c, [f"access:services!service={name}"])
    if _duration(options, "warn_before") and options.get("announcement", True):
        _announce(c, os.path.abspath(options.get("state_dir") or "."))


def restart_scope(wanted: str = "start:servers", quiet: bool = False) -> str:
    """``start:servers`` where the hub has it (JupyterHub 6), else ``servers`` (5.5: start and stop)."""
    if scope_exists(wanted):
        return wanted
    if not quiet:
        log.warning(
            "apex culler: this JupyterHub has no %r scope; granting 'servers' (start and stop) so"
            " that always-on servers can be restarted",
            wanted,
        )
    return "servers"


def _announce(c: Any, state_dir: str) -> None:
    """The stops within warn_before in the ``announcement`` of the hub's pages (an operator's text kept)."""
    from ..announce import install
    from .announce import UPCOMING_FILE, upcoming_lines

    install(c, "culler", os.path.join(state_dir, UPCOMING_FILE), upcoming_lines)
