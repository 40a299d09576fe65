"""``configure(c, monitoring={...})``: the monitoring service, its least-privilege role and the probe group."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from ...hubconfig import jupyterhub_version

# option -> (command-line flag or None, meaning); the README's "Monitoring" table says the same
KEYS = {
    "profile": ("--profile", "profile slug the probe spawns (required unless user_options has one)"),
    "user_options": ("--user-options", "user_options sent with the spawn (default {'profile': profile})"),
    "public_url": ("--public-url", "the hub's public URL, i.e. the proxy (default from c.JupyterHub)"),
    "url": (
        None,
        "where the service listens; the proxy serves it at /services/<name>/ "
        "(default http://127.0.0.1:8183; Z2JH: http://hub:8183)",
    ),
    "name": (None, "service name (default apex-monitoring)"),
    "probe_user": ("--probe-user", "the probe user (default apex-probe)"),
    "probe_group": (
        "--probe-group",
        "group marking probe users, for accounting and quotas (default apex-probe)",
    ),
    "interval": ("--interval", "seconds between probe starts (default 300)"),
    "stale_intervals": (
        "--stale-intervals",
        "stale after this many intervals + the longest probe (default 3)",
    ),
    "stale_after": ("--stale-after", "seconds after which the last result is stale (overrides the rule)"),
    "ready_timeout": ("--ready-timeout", "seconds the probe server may take to be ready (default 300)"),
    "proxy_timeout": ("--proxy-timeout", "seconds to reach the server through the proxy (default 15)"),
    "kernel": ("--kernel", "run 1+1 in a kernel (default True)"),
    "kernel_name": ("--kernel-name", "kernel to start (default python3)"),
    "kernel_timeout": ("--kernel-timeout", "seconds for the kernel phase (default 60)"),
    "kernel_failure": ("--kernel-failure", "'warning' (default) or 'critical' when only the kernel fails"),
    "stop_timeout": ("--stop-timeout", "seconds the probe server may take to stop (default 120)"),
    "fail_fast": ("--fail-fast", "regex of spawn progress messages that fail the probe at once"),
    "check_interval": ("--check-interval", "seconds between component checks (default 60)"),
    "proxy_routes": (
        "--proxy-routes",
        "compare servers and proxy routes (adds the 'proxy' scope; default False)",
    ),
    "kubernetes": ("--kube-api", "'auto' (default), 'off', 'incluster', a kubeconfig path or an API URL"),
    "services": ("--services", "services to check (default: every other service of the hub)"),
    "history": ("--history", "probes kept for the page (default 50)"),
    "state_dir": ("--state-dir", "where the history survives restarts (default: memory only)"),
    "pause_file": ("--pause-file", "while this file exists no probe starts"),
    "metrics_token": (None, "bearer token /metrics requires (passed in the service's environment)"),
    "metrics_token_file": ("--metrics-token-file", "file holding that token"),
    "page_auth": ("--page-auth", "'none' (default) or 'hub': the page and status.json need a hub login"),
    "extra_args": (None, "more command-line arguments"),
    "environment": (None, "more environment variables for the service"),
}


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


def configure_monitoring(c: Any, options: dict, *, current_list) -> None:
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise ValueError(
            f"configure(c, monitoring={{...}}): unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(KEYS)}"
        )
    if not options.get("profile") and "profile" not in (options.get("user_options") or {}):
        raise ValueError(
            "configure(c, monitoring={...}): 'profile' (the profile slug the probe spawns) is "
            "required: the probe must test an explicit profile"
        )
    if options.get("kernel_failure", "warning") not in ("warning", "critical"):
        raise ValueError("configure(c, monitoring={...}): 'kernel_failure' must be 'warning' or 'critical'")
    name = options.get("name", "apex-monitoring")
    user, group = options.get("probe_user", "apex-probe"), options.get("probe_group", "apex-probe")
    env = {str(k): str(v) for k, v in (options.get("environment") or {}).items()}
    cmd = [
        sys.executable,
        "-m",
        "apex_hub.services.monitoring",
        f"--public-url={options.get('public_url') or default_public_url(c)}",
        f"--kube-api={_kube_api(str(options.get('kubernetes', 'auto')), env)}",
    ]
    for key, (flag, _) in KEYS.items():
        if flag is None or key in ("public_url", "kubernetes") or options.get(key) is None:
            continue
        value = options[key]
        if isinstance(value, bool):  # --kernel / --no-kernel
            cmd.append(flag if value else f"--no-{flag[2:]}")
            continue
        if key == "user_options":
            value = json.dumps(value)
        elif key == "services":
            value = ",".join(value)
        cmd.append(f"{flag}={value}")
    cmd += [str(a) for a in options.get("extra_args", [])]
    if options.get("metrics_token"):
        env["APEX_MONITORING_METRICS_TOKEN"] = str(options["metrics_token"])
    service: dict = {"name": name, "command": cmd, "url": options.get("url", "http://127.0.0.1:8183")}
    if env:
        service["environment"] = env
    c.JupyterHub.services = [s for s in current_list(c.JupyterHub, "services") if s.get("name") != name] + [
        service
    ]
    roles = [r for r in current_list(c.JupyterHub, "load_roles") if r.get("name") != name]
    roles.append(
        {
            "name": name,
            "description": "APEx monitoring: run the probe user's server, read services",
            "scopes": role_scopes(user, group, bool(options.get("proxy_routes"))),
            "services": [name],
        }
    )
    c.JupyterHub.load_roles = roles
    # No load_groups: with an authenticator that manages groups (APExOIDCAuthenticator does) JupyterHub
    # refuses to start with one. The service creates the probe user and puts it into its group through the
    # API (groups!group=<group>), and the accounting service also excludes the probe user by name.
