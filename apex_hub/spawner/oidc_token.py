"""The user's OpenID Connect access token inside the workspace, as a file.

Why a Secret mounted as a directory: code in the workspace calls platform services
(catalogue, processing APIs) with the user's token for as long as the session lives.
An environment variable would freeze the first token and show up in process listings;
a Secret volume (never a ``subPath`` mount, which Kubernetes does not update) is
rewritten by the kubelet whenever the hub stores a refreshed token.
"""

from __future__ import annotations

import base64

from ..naming import object_name
from . import labels as L
from .workspace import Owner

SECRET = "apex-oidc-token"
VOLUME = "apex-oidc-token"
TOKEN_KEY = "access_token"
EXPIRY_KEY = "expires_at"


def secret_name(server_name: str) -> str:
    return object_name(SECRET, L.server_label(server_name)) if server_name else SECRET


def token_secret(owner: Owner, profile: str | None, auth_state: dict) -> dict | None:
    """The Secret holding the current access token, or ``None`` without one."""
    token = (auth_state or {}).get("access_token")
    if not token:
        return None
    expires_at = auth_state.get("expires_at")
    data = {TOKEN_KEY: token, EXPIRY_KEY: "" if expires_at is None else str(int(expires_at))}
    if auth_state.get("token_response", {}).get("token_type"):
        data["token_type"] = auth_state["token_response"]["token_type"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(owner.server_name),
            "namespace": owner.namespace,
            "labels": L.ownership(owner.user_slug, owner.server_name, profile, False),
            "annotations": {L.USERNAME_ANNOTATION: owner.username},
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def token_mount(server_name: str, mount_path: str) -> tuple[dict, dict]:
    """The pod volume and the container's (whole-directory) mount of the token Secret."""
    volume = {"name": VOLUME, "secret": {"secretName": secret_name(server_name), "defaultMode": 0o440}}
    return volume, {"name": VOLUME, "mountPath": mount_path, "readOnly": True}


def token_env(mount_path: str, token_url: str) -> list[dict]:
    """Where code finds the token: the file, and the hub URL that returns a fresh one."""
    return [
        {"name": "APEX_OIDC_TOKEN_FILE", "value": mount_path.rstrip("/") + "/" + TOKEN_KEY},
        {"name": "APEX_OIDC_TOKEN_URL", "value": token_url},
    ]
