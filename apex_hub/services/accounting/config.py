"""``configure(c, accounting={...})``: the accounting service, its role, the admin scope, the quota hook."""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any
from urllib.parse import urlparse

from ...hubconfig import extend_user_role, replace_service
from .web import ADMIN_SCOPE

KEYS = {
    "db_url": "SQLAlchemy URL of the ledger (default sqlite:///<state_dir>/accounting.sqlite); put a password in"
    " environment APEX_ACCOUNTING_DB_URL instead",
    "state_dir": "where quota-warnings.json (for the hub's banner) and, by default, the SQLite ledger go"
    " (default: the hub's working directory)",
    "url": "the service's own URL, proxied at /services/<name>/ (default http://127.0.0.1:10101; in Kubernetes"
    " e.g. http://hub:10101)",
    "stop_reasons": "the culler's stop-reasons.jsonl (default: <culler state_dir>/stop-reasons.jsonl when"
    " given as culler_state_dir, else none)",
    "culler_state_dir": "the culler's state_dir (sets stop_reasons)",
    "exclude_groups": "JupyterHub groups whose members are never recorded (default ['apex-probe'])",
    "interval": "seconds between hub rounds: groups, stop reasons, quota checks, heartbeat (default 60)",
    "quotas": "quota YAML file; enables GET api/quota/<user> budgets and the pre-spawn check",
    "quota_check": "install the pre-spawn quota check as c.Spawner.pre_spawn_hook (default True with quotas)",
    "quota_stop": "stop running servers over budget, reason 'quota' (grants delete:servers; default False)",
    "quota_warn": "warn at this fraction of a budget (default 0.9)",
    "announcement": "show quota warnings as the banner of the hub's pages (default True with quotas)",
    "fail_open": "allow spawns when the service cannot be reached (default True)",
    "apel": "dict: dir, site (required), service, cloud_type, benchmark_type, benchmark, interval (seconds)",
    "metrics_token": "bearer token Prometheus sends for /metrics (passed in the service's environment;"
    " without one, /metrics needs a hub token with the accounting admin scope)",
    "admin_users": "users given the accounting admin scope (reports, every user's usage)",
    "admin_groups": "groups given the accounting admin scope",
    "admin_services": "services given the accounting admin scope",
    "name": "service name (default apex-accounting)",
    "extra_args": "more command-line arguments (list)",
    "environment": "environment of the service (dict)",
}

#: the hub API scopes of the service: user names and groups (group fallback, exclusion, group budgets)
ACCOUNTING_SCOPES = ["list:users", "read:users:name", "read:users:groups"]
QUOTA_STOP_SCOPE = "delete:servers"


def configure_accounting(c: Any, options: dict, *, current_list) -> None:
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise ValueError(
            f"configure(c, accounting={{...}}): unknown key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}"
        )
    from .quota import Quotas

    name = options.get("name", "apex-accounting")
    state_dir = os.path.abspath(options.get("state_dir") or ".")
    db_url = options.get("db_url") or f"sqlite:///{os.path.join(state_dir, 'accounting.sqlite')}"
    url = options.get("url", "http://127.0.0.1:10101")
    cmd = [
        sys.executable,
        "-m",
        "apex_hub.services.accounting",
        f"--interval={float(options.get('interval', 60)):g}",
        f"--exclude-groups={','.join(options.get('exclude_groups', ['apex-probe']))}",
        f"--state-dir={state_dir}",
    ]
    env: dict[str, str] = {"APEX_ACCOUNTING_DB_URL": db_url}
    # managed services do not inherit the hub's environment: pass on how to reach Kubernetes
    env.update(
        {
            k: os.environ[k]
            for k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG")
            if os.environ.get(k)
        }
    )
    if options.get("metrics_token"):
        env["APEX_ACCOUNTING_METRICS_TOKEN"] = str(options["metrics_token"])
    stop_reasons = options.get("stop_reasons")
    if not stop_reasons and options.get("culler_state_dir"):
        stop_reasons = os.path.join(options["culler_state_dir"], "stop-reasons.jsonl")
    if stop_reasons:
        cmd.append(f"--stop-reasons={os.path.abspath(stop_reasons)}")
    scopes = list(ACCOUNTING_SCOPES)
    quota_hook = None
    if options.get("quotas"):
        Quotas.load(options["quotas"])  # a broken quota file stops the hub here, with the field named
        cmd.append(f"--quotas={os.path.abspath(options['quotas'])}")
        cmd.append(f"--quota-warn={float(options.get('quota_warn', 0.9)):g}")
        if options.get("quota_stop"):
            cmd.append("--quota-stop=true")
            scopes.append(QUOTA_STOP_SCOPE)
        if options.get("quota_check", True):
            token = secrets.token_hex(32)
            env["APEX_ACCOUNTING_QUOTA_TOKEN"] = token
            # managed services run beside the hub: ask over loopback (a NetworkPolicy may not admit the
            # hub pod to itself through its Service)
            quota_hook = (f"http://127.0.0.1:{urlparse(url).port or 80}/services/{name}", token)
    apel = options.get("apel")
    if apel:
        if not apel.get("dir") or not apel.get("site"):
            raise ValueError(
                "configure(c, accounting={...}): apel needs 'dir' and 'site' (the GOCDB site name)"
            )
        cmd += [
            f"--apel-dir={os.path.abspath(apel['dir'])}",
            f"--apel-site={apel['site']}",
            f"--apel-interval={float(apel.get('interval', 3600)):g}",
        ]
        for key, flag in (
            ("service", "apel-service"),
            ("cloud_type", "apel-cloud-type"),
            ("benchmark_type", "apel-benchmark-type"),
            ("benchmark", "apel-benchmark"),
        ):
            if apel.get(key) not in (None, ""):
                cmd.append(f"--{flag}={apel[key]}")
    cmd += list(options.get("extra_args", []))
    service: dict[str, Any] = {
        "name": name,
        "command": cmd,
        "url": url,
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": [ADMIN_SCOPE],
        "environment": {**env, **dict(options.get("environment") or {})},
    }
    replace_service(c, service)
    custom = dict(c.JupyterHub.get("custom_scopes") or {}) if hasattr(c.JupyterHub, "get") else {}
    custom[ADMIN_SCOPE] = {
        "description": "Read every user's accounting: sessions, usage reports, APEL export."
    }
    c.JupyterHub.custom_scopes = custom
    roles = [
        r for r in current_list(c.JupyterHub, "load_roles") if r.get("name") not in (name, f"{name}-admin")
    ]
    roles.append(
        {
            "name": name,
            "description": "APEx accounting: read users and groups"
            + (", stop servers over budget" if QUOTA_STOP_SCOPE in scopes else ""),
            "scopes": scopes,
            "services": [name],
        }
    )
    admins = {k: list(options.get(f"admin_{k}") or []) for k in ("users", "groups", "services")}
    if any(admins.values()):
        roles.append(
            {
                "name": f"{name}-admin",
                "description": "APEx accounting admins: every user's usage",
                "scopes": [ADMIN_SCOPE, f"access:services!service={name}"],
                **{k: v for k, v in admins.items() if v},
            }
        )
    c.JupyterHub.load_roles = roles
    # every user may open the usage page (their own usage only): in the user role, which JupyterHub 5.5
    # and 6 both honour (5.5 has no extra_user_scopes; 6 ignores it once the user role is redefined)
    extend_user_role(c, [f"access:services!service={name}"])
    if options.get("quotas") and options.get("announcement", True):
        from ..announce import install
        from .quota import WARNINGS_FILE, warning_lines

        install(c, "quota", os.path.join(state_dir, WARNINGS_FILE), warning_lines)
    if quota_hook:
        from .client import pre_spawn_hook

        previous = c.Spawner.get("pre_spawn_hook") if hasattr(c.Spawner, "get") else None
        if getattr(previous, "_apex_accounting", False):
            previous = previous._then
        hook = pre_spawn_hook(*quota_hook, fail_open=options.get("fail_open", True), then=previous)
        hook._apex_accounting, hook._then = True, previous
        c.Spawner.pre_spawn_hook = hook
