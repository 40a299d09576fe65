"""``configure(c, monitoring={...})``: the monitoring service, its least-privilege role and the probe group."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from traitlets import Bool

from ...hubconfig import jupyterhub_version, replace_role, replace_service
from ..common.app import check_options, cli_name, configure_keys, own_traits, refuse_unknown
from .app import MonitoringApp, MonitoringHubOptions

#: configure()'s keys and their traits: the service's options, then the hub's side
KEYS = configure_keys(MonitoringApp, MonitoringHubOptions)


def role_scopes(user: str, group: str, proxy_routes: bool) -> list[str]:
    """The monitoring role: everything on the probe user only, plus reading the service list."""
    scopes = [
        f"admin:users!user={user}",  # create the probe user if missing (this user only)
        f"servers!user={user}",  # read, start and stop the probe's server
        f"tokens!user={user}",  # a short-lived probe token (access:servers!user=<probe>)
        "list:services",  # which services there are ...
        "read:services",  # ... and their URL / process: are they alive
    ]
    if group:
        scopes += [
            f"admin:groups!group={group}",  # create the probe group if missing ...
            f"groups!group={group}",
        ]  # ... and put the probe user in it
    if not _tokens_for_users_checked_as_users():
        # JupyterHub < 6.1 checks a service's tokens!user=<name> grant as if <name> were a service
        # (POST /users/<name>/tokens answers 403); this filter is what that check then accepts: tokens of
        # the one entity called <probe user>, nothing else
        scopes.append(f"tokens!service={user}")
    if proxy_routes:
        scopes += ["proxy", "list:users", "read:servers"]  # routing table vs running servers
    return scopes


def _tokens_for_users_checked_as_users() -> bool:
    """JupyterHub 6.1 fixed how a service's filtered ``tokens`` scope is checked for a user's tokens."""
    try:
        return jupyterhub_version() >= (6, 1)
    except ImportError:  # configure() outside a hub (tests of the role itself): assume a current hub
        return True


def _get(section: Any, key: str):
    return section.get(key) if hasattr(section, "get") else getattr(section, key, None)


def default_public_url(c: Any) -> str:
    hub = c.JupyterHub
    for key in ("public_url", "bind_url"):
        if _get(hub, key):
            return str(_get(hub, key)).rstrip("/")
    ip = _get(hub, "ip") or "127.0.0.1"
    if ip in ("0.0.0.0", "::", ""):
        ip = "127.0.0.1"
    base = (_get(hub, "base_url") or "/").rstrip("/")
    return f"http://{ip}:{_get(hub, 'port') or 8000}{base}"


def _kube_api(value: str, env: dict) -> str:
    """The --kube-api value; in-cluster, the service (whose environment the hub keeps minimal) gets
    the API server's address from the hub's environment."""
    if value == "auto":
        value = (
            "incluster"
            if os.environ.get("KUBERNETES_SERVICE_HOST")
            else (os.environ.get("KUBECONFIG") or "off")
        )
    if value == "incluster":
        env.update(
            {
                var: os.environ[var]
                for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
                if var in os.environ
            }
        )
    return value


def configure_monitoring(c: Any, options: dict, *, current_list=None) -> None:
    refuse_unknown("monitoring", options, KEYS, word="option")
    if not options.get("profile") and "profile" not in (options.get("user_options") or {}):
        raise ValueError(
            "configure(c, monitoring={...}): 'profile' (the profile slug the probe spawns) is "
            "required: the probe must test an explicit profile"
        )
    if options.get("kernel_failure", "warning") not in ("warning", "critical"):
        raise ValueError("configure(c, monitoring={...}): 'kernel_failure' must be 'warning' or 'critical'")
    values = check_options("monitoring", options, KEYS, word="option")
    hub = MonitoringHubOptions(
        **{k: v for k, v in values.items() if k in MonitoringHubOptions.class_trait_names() and v is not None}
    )
    user, group = options.get("probe_user", "apex-probe"), options.get("probe_group", "apex-probe")
    env = {str(k): str(v) for k, v in hub.environment.items()}
    cmd = [
        sys.executable,
        "-m",
        "apex_hub.services.monitoring",
        f"--public-url={options.get('public_url') or default_public_url(c)}",
        f"--kube-api={_kube_api(str(options.get('kubernetes', 'auto')), env)}",
    ]
    for key, trait in own_traits(MonitoringApp).items():
        if not trait.metadata.get("configure") or key in ("public_url", "kubernetes"):
            continue
        if options.get(key) is None:
            continue
        flag, value = f"--{cli_name(key, trait)}", options[key]
        if isinstance(trait, Bool):  # --kernel / --no-kernel
            cmd.append(flag if values[key] else f"--no-{flag[2:]}")
            continue
        if key == "user_options":
            value = json.dumps(value)
        elif key == "services":
            value = ",".join(values[key])
        cmd.append(f"{flag}={value}")  # as written (an interval of 60 stays '60')
    cmd += [str(a) for a in hub.extra_args]
    if hub.metrics_token:
        env["APEX_MONITORING_METRICS_TOKEN"] = str(hub.metrics_token)
    service: dict = {"name": hub.name, "command": cmd, "url": hub.url}
    if env:
        service["environment"] = env
    replace_service(c, service)
    replace_role(
        c,
        {
            "name": hub.name,
            "description": "APEx monitoring: run the probe user's server, read services",
            "scopes": role_scopes(user, group, bool(values.get("proxy_routes"))),
            "services": [hub.name],
        },
    )
    # No load_groups: with an authenticator that manages groups (APExOIDCAuthenticator does) JupyterHub
    # refuses to start with one. The service creates the probe user and puts it into its group through the
    # API (groups!group=<group>), and the accounting service also excludes the probe user by name.
