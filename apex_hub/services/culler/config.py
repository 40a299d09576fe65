"""``configure(c, culler={...})``: the culler as a hub-managed service, its role, and the banner.

The keys are the traits of :class:`.app.CullerApp` tagged ``configure`` (passed on its command line)
and those of :class:`.app.CullerHubOptions` (the hub's side); each is checked by its trait.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from traitlets import Bool

from ...hubconfig import extend_user_role, log, replace_role, replace_service, scope_exists
from ..common.app import check_options, command_line, configure_keys
from .app import CullerApp, CullerHubOptions
from .policy import CullingPolicy, PolicyError

#: configure()'s keys and their traits: the service's options, then the hub's side
KEYS = configure_keys(CullerApp, CullerHubOptions)

#: the options configure() passes to the service, in command-line order
_PASSED = (
    "policy",
    "interval",
    "dry_run",
    "state_dir",
    "profiles_file",
    "warn_before",
    "restart_window",
    "restart_backoff",
    "restart_limit",
)


def _spawner_profiles_file(c: Any) -> str | None:
    section = c.APExSpawner if hasattr(c, "APExSpawner") else None
    value = section.get("profiles_file") if hasattr(section, "get") else None
    return value if isinstance(value, str) and value else None


def _catalogue_always_on(path: str) -> bool:
    from ...profiles.catalogue import Catalogue

    cat = Catalogue.from_file(path)  # raises CatalogueError naming the file and the field
    return any(p.session_mode == "always-on" and "session_mode" in p.model_fields_set for p in cat.profiles)


def _checked(options: dict) -> dict:
    try:
        return check_options("culler", options, KEYS)
    except ValueError as exc:
        if "unknown key" in str(exc):
            raise
        raise PolicyError(str(exc)) from None  # a bad duration, as a policy error names it


def _hub_options(values: dict) -> CullerHubOptions:
    """The hub-side keys given; a switch given as None is off (as a falsy value always was)."""
    traits = CullerHubOptions.class_traits(config=True)
    given = {k: v for k, v in values.items() if k in traits}
    return CullerHubOptions(
        **{
            k: bool(v) if isinstance(traits[k], Bool) else v
            for k, v in given.items()
            if v is not None or isinstance(traits[k], Bool)
        }
    )


def configure_culler(
    c: Any, options: dict, *, scopes: list[str], restart_scope_name: str, current_list=None
) -> None:
    values = _checked(options)
    if "policy" not in options:
        raise ValueError("configure(c, culler={...}): 'policy' (path of the policy file) is required")
    if values.get("restart_limit") is not None and values["restart_limit"] < 1:
        raise ValueError("configure(c, culler={...}): restart_limit must be at least 1")
    hub = _hub_options(values)
    policy = CullingPolicy.load(values["policy"])  # raises PolicyError naming section and field
    values.setdefault("interval", CullerApp.interval.default_value)
    values["dry_run"] = bool(values.get("dry_run"))
    if not values.get("state_dir"):
        values.pop("state_dir", None)
    profiles = values["profiles_file"] if "profiles_file" in values else _spawner_profiles_file(c)
    values["profiles_file"] = profiles or None
    always_on = policy.may_restart
    if profiles:
        always_on = _catalogue_always_on(profiles) or always_on
    # the interval is passed as written ('1m'); durations else in seconds
    cmd = [sys.executable, "-m", "apex_hub.services.culler"]
    cmd += command_line(CullerApp, values, _PASSED, written={"interval": options.get("interval", 60)})
    cmd += list(hub.extra_args)
    service: dict[str, Any] = {"name": hub.name, "command": cmd}
    if hub.url:
        service["url"] = hub.url
        service["display"] = False  # an API, not a page for the hub's Services menu
        service["oauth_no_confirm"] = True
    if hub.environment:
        service["environment"] = dict(hub.environment)
    granted = list(scopes)
    if hub.restart and always_on:
        granted.append(restart_scope(restart_scope_name))
    replace_service(c, service)
    replace_role(
        c,
        {
            "name": hub.name,
            "description": "APEx culler: stop idle/old/scheduled servers, restart always-on",
            "scopes": granted,
            "services": [hub.name],
        },
    )
    if hub.url and hub.user_access:
        # every user may reach the service (it answers with their own servers only)
        extend_user_role(c, [f"access:services!service={hub.name}"])
    if values.get("warn_before") and hub.announcement:
        _announce(c, os.path.abspath(values.get("state_dir") or "."))


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
