"""``configure(c, accounting={...})``: the accounting service, its role, the admin scope, the quota hook."""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any
from urllib.parse import urlparse

from ...hubconfig import extend_user_role, replace_service
from ..common.app import check_options, configure_keys
from .app import AccountingApp, AccountingHubOptions
from .web import ADMIN_SCOPE

#: configure()'s keys and their traits: the service's options, then the hub's side
KEYS = configure_keys(AccountingApp, AccountingHubOptions)

#: the hub API scopes of the service: user names and groups (group fallback, exclusion, group budgets)
ACCOUNTING_SCOPES = ["list:users", "read:users:name", "read:users:groups"]
QUOTA_STOP_SCOPE = "delete:servers"


def configure_accounting(c: Any, options: dict, *, current_list) -> None:
    values = {k: v for k, v in check_options("accounting", options, KEYS).items() if v is not None}
    hub_traits = AccountingHubOptions.class_traits(config=True)
    hub = AccountingHubOptions(**{k: v for k, v in values.items() if k in hub_traits})
    app = {k: v for k, v in values.items() if k not in hub_traits}
    from .quota import Quotas

    name = hub.name
    state_dir = os.path.abspath(app.get("state_dir") or ".")
    db_url = app.get("db_url") or f"sqlite:///{os.path.join(state_dir, 'accounting.sqlite')}"
    url = hub.url
    cmd = [
        sys.executable,
        "-m",
        "apex_hub.services.accounting",
        f"--interval={float(app.get('interval', AccountingApp.interval.default_value)):g}",
        f"--exclude-groups={','.join(app.get('exclude_groups', ['apex-probe']))}",
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
    if hub.metrics_token:
        env["APEX_ACCOUNTING_METRICS_TOKEN"] = hub.metrics_token
    stop_reasons = app.get("stop_reasons")
    if not stop_reasons and hub.culler_state_dir:
        stop_reasons = os.path.join(hub.culler_state_dir, "stop-reasons.jsonl")
    if stop_reasons:
        cmd.append(f"--stop-reasons={os.path.abspath(stop_reasons)}")
    scopes = list(ACCOUNTING_SCOPES)
    quota_hook = None
    if app.get("quotas"):
        Quotas.load(app["quotas"])  # a broken quota file stops the hub here, with the field named
        cmd.append(f"--quotas={os.path.abspath(app['quotas'])}")
        cmd.append(f"--quota-warn={float(app.get('quota_warn', AccountingApp.quota_warn.default_value)):g}")
        if app.get("quota_stop"):
            cmd.append("--quota-stop=true")
            scopes.append(QUOTA_STOP_SCOPE)
        if hub.quota_check:
            token = secrets.token_hex(32)
            env["APEX_ACCOUNTING_QUOTA_TOKEN"] = token
            # managed services run beside the hub: ask over loopback (a NetworkPolicy may not admit the
            # hub pod to itself through its Service)
            quota_hook = (f"http://127.0.0.1:{urlparse(url).port or 80}/services/{name}", token)
    apel = hub.apel
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
    cmd += list(hub.extra_args)
    service: dict[str, Any] = {
        "name": name,
        "command": cmd,
        "url": url,
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": [ADMIN_SCOPE],
        "environment": {**env, **dict(hub.environment)},
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
    admins = {k: list(getattr(hub, f"admin_{k}")) for k in ("users", "groups", "services")}
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
    if app.get("quotas") and hub.announcement:
        from ..announce import install
        from .quota import WARNINGS_FILE, warning_lines

        install(c, "quota", os.path.join(state_dir, WARNINGS_FILE), warning_lines)
    if quota_hook:
        from .client import pre_spawn_hook

        previous = c.Spawner.get("pre_spawn_hook") if hasattr(c.Spawner, "get") else None
        if getattr(previous, "_apex_accounting", False):
            previous = previous._then
        hook = pre_spawn_hook(*quota_hook, fail_open=hub.fail_open, then=previous)
        hook._apex_accounting, hook._then = True, previous
        c.Spawner.pre_spawn_hook = hook
