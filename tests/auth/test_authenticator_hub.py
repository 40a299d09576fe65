"""End to end: a real JupyterHub (with its proxy) logging users in at a real OpenID provider.

The provider is oidc-provider on Node.js (apex_hub.localidp) with short-lived access
tokens; servers run on kubesim's process kubelet, so the token file is read back from
the real single-user server. Users drive the login as a browser does (plain HTTP with
a cookie jar, following redirects and submitting the provider's form).
"""

from __future__ import annotations

import asyncio
import secrets
import time

import aiohttp
import pytest
import pytest_asyncio
import yaml

from apex_hub.kubesim import KubeSim
from apex_hub.localidp import login, submit_form
from apex_hub.naming import user_namespace
from tests.helpers.hub import HubProcess, apex_hub_config
from tests.helpers.oidc import CLIENT_ID, CLIENT_SECRET, grant_lines, make_idp, skip_without_idp
from tests.helpers.wait import until

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
ACCESS_TTL = 16  # seconds an access token lives at the provider
LEEWAY = 10  # the hub refreshes when fewer seconds than this remain (6 s after a login)
NEVER = "http://never.invalid/"  # follow every redirect to the last page
TOKEN_DIR = "/home/jovyan/oidc"  # under the server's root so the contents API can read it


class Env:
    def __init__(self, sim, idp, hub):
        self.sim, self.idp, self.hub = sim, idp, hub

    def browser(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def login(self, http, user: str, password: str | None = None):
        return await login(http, f"{self.hub.url}/hub/oauth_login", user, password or f"{user}-pw", NEVER)

    async def model(self, user: str) -> dict:
        status, body = await self.hub.api("GET", f"/users/{user}")
        assert status == 200, body
        return body

    async def auth_state(self, user: str) -> dict:
        return (await self.model(user)).get("auth_state") or {}

    async def wait_until_near_expiry(self, user: str) -> dict:
        """Wait (without touching the user's session) until the hub should refresh."""
        state = await self.auth_state(user)
        delay = state["expires_at"] - LEEWAY - time.time() + 0.2
        if delay > 0:
            await asyncio.sleep(delay)
        return state


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    skip_without_idp()
    work = tmp_path_factory.mktemp("oidc-hub")
    profiles = work / "profiles.yml"
    profiles.write_text(
        yaml.safe_dump(
            {
                "profiles": [
                    {"slug": "lab", "display_name": "JupyterLab", "default": True},
                    {"slug": "large", "display_name": "Large", "groups": ["apex-large"]},
                ]
            }
        )
    )
    async with KubeSim(kubelet="process", workdir=work / "sim") as sim:
        hub = HubProcess(work / "hub", "")
        idp = make_idp(hub.url, access_token_ttl=ACCESS_TTL, id_token_ttl=300, workdir=work / "idp")
        await idp.start()
        hub.config = (
            apex_hub_config(sim.url, str(profiles))
            + f"""
c.JupyterHub.load_roles[0]["scopes"].append("admin:auth_state")
from apex_hub.auth import configure
configure(c, oidc_issuer="{idp.issuer}", client_id="{CLIENT_ID}", client_secret="{CLIENT_SECRET}",
          provider_preset="keycloak", oauth_callback_url="{hub.url}/hub/oauth_callback",
          allowed_groups={{"apex-small", "apex-large", "apex-admins"}}, admin_groups={{"apex-admins"}},
          refresh_leeway={LEEWAY})
c.Authenticator.auth_refresh_age = 1
c.APExSpawner.workspace_volume = {{"name": "workspace", "size": "1Gi", "mount_path": "/home/jovyan"}}
c.APExSpawner.oidc_token_mount_path = "{TOKEN_DIR}"
"""
        )
        hub.env = {"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32), "KUBECONFIG": sim.kubeconfig_path}
        try:
            async with hub:
                yield Env(sim, idp, hub)
        finally:
            await idp.stop()


async def test_login_syncs_groups_in_order_and_the_primary_group(env):
    async with env.browser() as http:
        url, resp = await env.login(http, "alice")
        assert resp.status == 200 and url.startswith(env.hub.url + "/hub/"), (url, env.hub.log()[-3000:])
    model = await env.model("alice")
    assert set(model["groups"]) == {"apex-small", "students", "offline_access", "apex-users"}
    assert model["admin"] is False
    state = model["auth_state"]
    assert state["groups"] == ["apex-small", "students", "offline_access", "apex-users"]  # the IdP's order
    assert state["primary_group"] == "apex-small"  # the first allowed group
    assert state["refresh_token"] and state["expires_at"] > time.time()
    assert state["oauth_user"]["sub"] == "alice"


async def test_admin_group_makes_an_admin(env):
    async with env.browser() as http:
        _, resp = await env.login(http, "bob")
        assert resp.status == 200
    assert (await env.model("bob"))["admin"] is True


@pytest.mark.parametrize(
    "user, message",
    [
        ("eve", "Sorry"),  # not in an allowed group: JupyterHub's 403 page
        ("service-account-robot", "service accounts cannot log in"),
    ],
)
async def test_refused_logins(env, user, message):
    async with env.browser() as http:
        _, resp = await env.login(http, user)
        assert resp.status == 403
        assert message in await resp.text()
    status, _ = await env.hub.api("GET", f"/users/{user}")
    assert status == 404  # no account was made


async def test_wrong_password_stays_at_the_provider(env):
    async with env.browser() as http:
        url, resp = await env.login(http, "carol", "wrong")
        assert url.startswith(env.idp.issuer) and "Invalid user name or password." in await resp.text()


async def test_refresh_before_expiry_rotates_the_refresh_token(env):
    async with env.browser() as http:
        await env.login(http, "carol")
        before = await env.wait_until_near_expiry("carol")
        async with http.get(f"{env.hub.url}/hub/home", allow_redirects=False) as r:
            assert r.status == 200
        after = await env.auth_state("carol")
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] != before["refresh_token"]  # rotated by the provider
    assert after["expires_at"] > before["expires_at"]
    assert [
        line for line in grant_lines(env.idp, "refresh_token") if "sub=carol" in line and line.endswith("ok")
    ]


async def test_concurrent_requests_refresh_once(env):
    async with env.browser() as http:
        await env.login(http, "dave")
        before = await env.wait_until_near_expiry("dave")
        seen = len(grant_lines(env.idp, "refresh_token"))

        async def hit():
            async with http.get(f"{env.hub.url}/hub/home", allow_redirects=False) as r:
                return r.status

        statuses = await asyncio.gather(*(hit() for _ in range(12)))
        assert statuses == [200] * 12, statuses  # nobody was logged out
        new = grant_lines(env.idp, "refresh_token")[seen:]
        assert len(new) == 1 and new[0].endswith("ok"), new  # one refresh; no rotated token spent twice
        after = await env.auth_state("dave")
        assert after["refresh_token"] != before["refresh_token"]


async def test_revoked_refresh_token_means_a_new_login(env):
    async with env.browser() as http:
        await env.login(http, "carol")
        state = await env.auth_state("carol")
        meta = await (await http.get(env.idp.discovery_url)).json()
        async with http.post(
            meta["revocation_endpoint"],
            data={
                "token": state["refresh_token"],
                "token_type_hint": "refresh_token",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        ) as r:
            assert r.status == 200
        await env.wait_until_near_expiry("carol")
        async with http.get(f"{env.hub.url}/hub/home", allow_redirects=False) as r:
            assert r.status == 302 and "/hub/login" in r.headers["Location"], (r.status, dict(r.headers))
        assert "refreshing the tokens of carol failed (HTTP 400: Bad Request: invalid_grant" in env.hub.log()
        # ... and logging in again works
        _, resp = await env.login(http, "carol")
        assert resp.status == 200


async def test_the_token_file_in_the_pod_follows_refreshes(env):
    async with env.browser() as http:
        await env.login(http, "alice")
    # the groups synced from the provider gate the profiles: alice is not in apex-large
    status, body = await env.hub.api("POST", "/users/alice/server", json={"profile": "large"})
    assert status == 403 and "You may not use profile 'large'" in str(body), body
    status, body = await env.hub.api("POST", "/users/alice/server", json={"profile": "lab"})
    assert status in (201, 202), body
    await env.hub.wait_ready("alice")

    async def token_file() -> str | None:
        status, text = await env.hub.request(
            "GET", "/user/alice/api/contents/oidc/access_token?content=1&format=text&type=file"
        )
        return (yaml.safe_load(text) or {}).get("content") if status == 200 else None

    first = (await env.auth_state("alice"))["access_token"]
    assert await token_file() == first
    ns = user_namespace("alice", "apex-")
    pod = next(o for (n, _), o in env.sim.store._table(env.sim.store._rt("pods")).items() if n == ns)
    env_vars = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env_vars["APEX_OIDC_TOKEN_FILE"] == f"{TOKEN_DIR}/access_token"
    assert first not in str(pod)  # never an env var, never in the pod spec
    assert pod["metadata"]["annotations"]["apex.esa.int/group"] == "apex-small"
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == TOKEN_DIR)
    assert "subPath" not in mount  # a subPath mount would never be updated

    # an admin forces a refresh: the Secret is rewritten and the kubelet updates the file
    status, body = await env.hub.api("POST", "/apex/users/alice/oidc-token/refresh")
    assert status == 200 and "access_token" not in body, body
    fresh = (await env.auth_state("alice"))["access_token"]
    assert fresh != first

    async def updated():
        return await token_file() == fresh

    await until(updated, interval=0.3)  # the kubelet's volume sync (pytest-timeout guards a hang)
    assert first not in env.hub.log() and fresh not in env.hub.log()

    # the server's own API token can fetch its user's token, and nobody else's
    server_token = env_vars["JUPYTERHUB_API_TOKEN"]
    async with aiohttp.ClientSession(headers={"Authorization": f"token {server_token}"}) as s:
        async with s.get(f"{env.hub.url}/hub/api/apex/users/alice/oidc-token") as r:
            assert r.status == 200 and (await r.json())["access_token"] == fresh
        async with s.get(f"{env.hub.url}/hub/api/apex/users/bob/oidc-token") as r:
            assert r.status == 403
        async with s.post(f"{env.hub.url}/hub/api/apex/users/alice/oidc-token/refresh") as r:
            assert r.status == 403
    status, _ = await env.hub.api("DELETE", "/users/alice/server")
    assert status in (202, 204)


async def test_back_to_back_refreshes_leave_the_newest_token_in_the_workspace(env):
    """The first refresh's Secret write hits a transient API error and is retried; the second refresh
    must not be overtaken by that retry (the older token would be left in the workspace)."""
    import base64

    async with env.browser() as http:
        await env.login(http, "dave")
    status, body = await env.hub.api("POST", "/users/dave/server", json={"profile": "lab"})
    assert status in (201, 202), body
    await env.hub.wait_ready("dave")
    ns = user_namespace("dave", "apex-")

    def secret_token() -> str:
        table = env.sim.store._table(env.sim.store._rt("secrets"))
        [secret] = [o for (n, name), o in table.items() if n == ns and name.startswith("apex-oidc-token")]
        return base64.b64decode(secret["data"]["access_token"]).decode()

    # the next write of a Secret in dave's namespace is throttled once (429, Retry-After: 1 s; the spawner retries)
    env.sim.inject(verb="patch", resource="secrets", namespace=ns, status=429, retry_after=1, times=1)

    async def forced():
        status, body = await env.hub.api("POST", "/apex/users/dave/oidc-token/refresh")
        assert status == 200, body

    async def forced_later():
        await asyncio.sleep(0.2)  # while the first one refreshes (or retries its write)
        await forced()

    await asyncio.gather(forced(), forced_later())
    newest = (await env.auth_state("dave"))["access_token"]
    assert secret_token() == newest
    status, _ = await env.hub.api("DELETE", "/users/dave/server")
    assert status in (202, 204)


async def test_logout_revokes_and_ends_the_provider_session(env):
    async with env.browser() as http:
        await env.login(http, "bob")
        state = await env.auth_state("bob")
        url, resp = await submit_form(http, f"{env.hub.url}/hub/logout", f"{env.hub.url}/hub/login")
        assert resp is None, (url, resp and resp.status)  # back at the hub's login page, via the provider
        meta = await (await http.get(env.idp.discovery_url)).json()
        async with http.post(
            meta["token_endpoint"],
            data={
                "grant_type": "refresh_token",
                "refresh_token": state["refresh_token"],
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        ) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_grant"
        # the provider session is over: the next login asks for the password again
        url, resp = await follow_login_page(http, env)
        assert "password" in await resp.text()
    assert not (await env.auth_state("bob")).get("refresh_token")


async def follow_login_page(http, env):
    from apex_hub.localidp import follow_until

    return await follow_until(http, "GET", f"{env.hub.url}/hub/oauth_login", NEVER)


async def test_a_spent_authorization_code_with_a_fresh_state_is_a_clear_400_and_never_logged(env):
    """An attacker replays a used code under a state cookie of their own: refused, no 500, no code in logs."""
    from urllib.parse import parse_qs, urlparse

    callback = f"{env.hub.url}/hub/oauth_callback"
    async with env.browser() as http:
        url, resp = await login(http, f"{env.hub.url}/hub/oauth_login", "carol", "carol-pw", callback)
        assert resp is None and url.startswith(callback), url
        spent = parse_qs(urlparse(url).query)["code"][0]
        async with http.get(url) as r:  # the real login spends the code
            assert r.status == 200, await r.text()
        # a fresh state: start a new login, stop when the provider sends the browser back
        url, resp = await login(http, f"{env.hub.url}/hub/oauth_login", "carol", "carol-pw", callback)
        assert resp is None, url
        fresh_state = parse_qs(urlparse(url).query)["state"][0]
        async with http.get(f"{callback}?code={spent}&state={fresh_state}", allow_redirects=False) as r:
            page = await r.text()
            assert r.status == 400, (r.status, page[-2000:])
            assert "could not be completed" in page and "sign in again" in page
            assert spent not in page
    log = env.hub.log()
    assert "did not accept the authorization code" in log
    assert (
        spent not in log and "Traceback" not in log.split("did not accept the authorization code")[-1][:2000]
    )
