"""The local OpenID Connect provider: a real oidc-provider process, driven over real HTTP."""

import base64
import hashlib
import os
import secrets
import socket
from urllib.parse import parse_qs, urlencode, urlparse

import aiohttp
import jwt
import pytest

from apex_hub.localidp import (
    LOGIN_ERROR,
    LOGIN_TITLE,
    LocalIdP,
    LocalIdPError,
    follow_until,
    generate_jwks,
    login,
    parse_forms,
    submit_form,
)
from tests.helpers.wait import until

_reason = LocalIdP.available()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

CALLBACK = "http://127.0.0.1:9/hub/oauth_callback"  # never requested: redirects stop there
AFTER_LOGOUT = "http://127.0.0.1:9/hub/login"
CLIENT_ID, CLIENT_SECRET = "apex-hub", "s3cret"
BASIC = {"Authorization": aiohttp.encode_basic_auth(CLIENT_ID, CLIENT_SECRET)}
ALICE_CLAIMS = {
    "email": "alice@example.org",
    "name": "Alice",
    "preferred_username": "alice",
    "groups": ["apex-small", "apex-gpu"],
    "realm_access": {"roles": ["r1"]},
    "resource_access": {"apex-hub": {"roles": ["c1"]}},
    "eduperson_entitlement": ["urn:mace:egi.eu:group:vo.example.org:role=member#aai.egi.eu"],
}


def make_idp(**kw):
    return LocalIdP(
        users=[
            {"username": "alice", "password": "alice-pw", "claims": ALICE_CLAIMS},
            {"username": "bob", "password": "bob-pw", "claims": {"groups": []}},
        ],
        clients=[
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [CALLBACK],
                "post_logout_redirect_uris": [AFTER_LOGOUT],
                "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            },
            {  # how oauthenticator sends its secret unless basic_auth is on
                "client_id": "apex-hub-post",
                "client_secret": "p0st",
                "redirect_uris": [CALLBACK],
                "grant_types": ["authorization_code", "client_credentials"],
                "token_endpoint_auth_method": "client_secret_post",
            },
        ],
        **kw,
    )


@pytest.fixture
async def idp():
    async with make_idp(access_token_ttl=300, id_token_ttl=400) as p:
        yield p


@pytest.fixture
async def http():
    # unsafe=True: keep cookies set by an IP-address host (127.0.0.1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        yield s


async def discovery(http, idp):
    async with http.get(idp.discovery_url) as r:
        assert r.status == 200
        return await r.json()


def pkce_pair():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def authorize_url(http, idp, scope="openid offline_access"):
    """An authorization request with PKCE (S256), state and nonce: (url, verifier, state, nonce)."""
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    meta = await discovery(http, idp)
    url = (
        meta["authorization_endpoint"]
        + "?"
        + urlencode(
            {
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": CALLBACK,
                "scope": scope,
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
    )
    return url, verifier, state, nonce


async def authorize(http, idp, username="alice", password="alice-pw", scope="openid offline_access"):
    """Code + PKCE + nonce through the login form; returns (code, verifier, nonce)."""
    url, verifier, state, nonce = await authorize_url(http, idp, scope)
    final, resp = await login(http, url, username, password, stop_prefix=CALLBACK)
    assert resp is None, f"login stopped at {final}: {resp.status} {await resp.text()}"
    q = parse_qs(urlparse(final).query)
    assert q["state"] == [state]
    assert q["iss"] == [idp.issuer]
    return q["code"][0], verifier, nonce


async def token(http, idp, **form):
    meta = await discovery(http, idp)
    async with http.post(meta["token_endpoint"], data=form, headers=BASIC) as r:
        return r.status, await r.json()


async def tokens_for_alice(http, idp):
    code, verifier, nonce = await authorize(http, idp)
    status, body = await token(
        http, idp, grant_type="authorization_code", code=code, redirect_uri=CALLBACK, code_verifier=verifier
    )
    assert status == 200, body
    return body, nonce


async def test_discovery(idp, http):
    assert idp.issuer == f"http://127.0.0.1:{idp.port}"
    assert idp.discovery_url == idp.issuer + "/.well-known/openid-configuration"
    meta = await discovery(http, idp)
    assert meta["issuer"] == idp.issuer
    for key in (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "end_session_endpoint",
        "introspection_endpoint",
    ):
        assert meta[key].startswith(idp.issuer + "/"), key
    assert "S256" in meta["code_challenge_methods_supported"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(meta["grant_types_supported"])
    assert {"groups", "eduperson_entitlement", "realm_access"} <= set(meta["claims_supported"])
    async with http.get(meta["jwks_uri"]) as r:
        keys = (await r.json())["keys"]
    assert [k["kid"] for k in keys] == [k["kid"] for k in idp.private_jwks["keys"]]
    assert all("d" not in k for k in keys)


async def test_code_flow_with_pkce(idp, http):
    body, nonce = await tokens_for_alice(http, idp)
    assert body["token_type"].lower() == "bearer"
    assert body["expires_in"] == 300
    assert body["refresh_token"] and body["access_token"]
    assert set(body["scope"].split()) == {"openid", "offline_access"}

    meta = await discovery(http, idp)
    signing_key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(body["id_token"])
    claims = jwt.decode(
        body["id_token"], signing_key.key, algorithms=["RS256"], audience=CLIENT_ID, issuer=idp.issuer
    )
    assert claims["nonce"] == nonce
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 400
    for name, value in ALICE_CLAIMS.items():
        assert claims[name] == value, name

    async with http.get(
        meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {body['access_token']}"}
    ) as r:
        assert r.status == 200
        info = await r.json()
    assert info["sub"] == "alice"
    assert info["groups"] == ALICE_CLAIMS["groups"]  # order preserved
    assert info["resource_access"] == ALICE_CLAIMS["resource_access"]

    async with http.post(
        meta["introspection_endpoint"],
        data={"token": body["access_token"]},
        headers=BASIC,
    ) as r:
        intro = await r.json()
    assert intro["active"] is True and intro["sub"] == "alice"

    log = idp.log_path.read_text()
    assert "grant_type=authorization_code client=apex-hub sub=alice ok" in log
    for value in (body["access_token"], body["refresh_token"], body["id_token"]):
        assert value not in log


async def test_tampered_id_token_is_rejected(idp, http):
    body, _ = await tokens_for_alice(http, idp)
    claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    forged = jwt.encode(
        {**claims, "groups": ["admins"]},
        jwt.PyJWK(generate_jwks(kid=idp.private_jwks["keys"][0]["kid"])["keys"][0]).key,
        algorithm="RS256",
        headers={"kid": idp.private_jwks["keys"][0]["kid"]},
    )
    # the real key (exposed for tests) verifies; a look-alike key with the same kid does not
    real = jwt.PyJWK(idp.private_jwks["keys"][0]).key
    resigned = jwt.encode({**claims, "groups": ["admins"]}, real, algorithm="RS256")
    public = jwt.PyJWK(idp.public_jwks["keys"][0]).key
    assert jwt.decode(resigned, public, algorithms=["RS256"], audience=CLIENT_ID)["groups"] == ["admins"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, public, algorithms=["RS256"], audience=CLIENT_ID)


async def test_wrong_password_shows_the_form_again(idp, http):
    url, _, _, _ = await authorize_url(http, idp, "openid")
    final, resp = await login(http, url, "alice", "wrong", stop_prefix=CALLBACK)
    assert resp is not None and resp.status == 200
    page = await resp.text()
    assert f"<title>{LOGIN_TITLE}</title>" in page
    assert LOGIN_ERROR in page
    form = parse_forms(page)[0]
    assert {"login", "password"} <= set(form["fields"])
    assert '<button type="submit">Sign in</button>' in page
    # the same form, right password this time, completes the flow
    final, resp = await follow_until(
        http, "POST", final, CALLBACK, {"login": "alice", "password": "alice-pw"}
    )
    assert resp is None and "code=" in final
    assert 'user="alice" failed' in idp.log_path.read_text()


async def test_refresh_rotation(idp, http):
    body, _ = await tokens_for_alice(http, idp)
    first = body["refresh_token"]
    status, second = await token(http, idp, grant_type="refresh_token", refresh_token=first)
    assert status == 200, second
    assert second["refresh_token"] != first
    assert second["expires_in"] == 300
    claims = jwt.decode(second["id_token"], options={"verify_signature": False})
    assert claims["groups"] == ALICE_CLAIMS["groups"]
    status, again = await token(http, idp, grant_type="refresh_token", refresh_token=first)
    assert status == 400 and again["error"] == "invalid_grant"
    assert "grant_type=refresh_token client=apex-hub" in idp.log_path.read_text()


async def test_no_rotation_when_disabled(http):
    async with make_idp(rotate_refresh_tokens=False) as idp:
        body, _ = await tokens_for_alice(http, idp)
        for _ in range(2):
            status, out = await token(
                http, idp, grant_type="refresh_token", refresh_token=body["refresh_token"]
            )
            assert status == 200, out
            assert out["refresh_token"] == body["refresh_token"]


async def test_revocation_then_refresh_fails(idp, http):
    body, _ = await tokens_for_alice(http, idp)
    meta = await discovery(http, idp)
    async with http.post(
        meta["revocation_endpoint"],
        data={"token": body["refresh_token"], "token_type_hint": "refresh_token"},
        headers=BASIC,
    ) as r:
        assert r.status == 200
    status, out = await token(http, idp, grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert status == 400 and out["error"] == "invalid_grant"


async def test_client_credentials(idp, http):
    status, body = await token(http, idp, grant_type="client_credentials")
    assert status == 200, body
    assert body["access_token"] and body["expires_in"] == 300
    assert "refresh_token" not in body
    assert "grant_type=client_credentials client=apex-hub" in idp.log_path.read_text()
    meta = await discovery(http, idp)
    form = {"grant_type": "client_credentials", "client_id": "apex-hub-post", "client_secret": "p0st"}
    async with http.post(meta["token_endpoint"], data=form) as r:
        assert r.status == 200, await r.text()
    async with http.post(meta["token_endpoint"], data={**form, "client_secret": "wrong"}) as r:
        assert r.status == 401 and (await r.json())["error"] == "invalid_client"


async def test_restart_with_new_keys(idp, http):
    issuer, port = idp.issuer, idp.port
    old_kid = idp.private_jwks["keys"][0]["kid"]
    new = generate_jwks(kid="rotated-1")
    await idp.restart(jwks=new)
    assert (idp.issuer, idp.port) == (issuer, port)
    meta = await discovery(http, idp)
    assert meta["issuer"] == issuer
    async with http.get(meta["jwks_uri"]) as r:
        kids = [k["kid"] for k in (await r.json())["keys"]]
    assert kids == ["rotated-1"] and old_kid not in kids
    # users and clients survive; new tokens are signed with the new key
    body, _ = await tokens_for_alice(http, idp)
    assert jwt.get_unverified_header(body["id_token"])["kid"] == "rotated-1"


async def test_end_session(idp, http):
    body, _ = await tokens_for_alice(http, idp)
    meta = await discovery(http, idp)
    url = (
        meta["end_session_endpoint"]
        + "?"
        + urlencode(
            {
                "id_token_hint": body["id_token"],
                "post_logout_redirect_uri": AFTER_LOGOUT,
                "state": "bye",
            }
        )
    )
    # the page: one auto-submitting form with hidden xsrf and logout=yes
    async with http.get(url) as r:
        page = await r.text()
    form = parse_forms(page)[0]
    assert form["method"] == "post" and form["fields"]["logout"] == "yes" and "xsrf" in form["fields"]
    final, resp = await submit_form(http, url, AFTER_LOGOUT)
    assert resp is None, await resp.text()
    assert parse_qs(urlparse(final).query)["state"] == ["bye"]
    # the provider session is gone: authorizing again shows the login form
    auth_url, _, _, _ = await authorize_url(http, idp, "openid")
    _, resp = await follow_until(http, "GET", auth_url, CALLBACK)
    assert resp is not None and LOGIN_TITLE in await resp.text()
    # without a provider session (another browser, or after restart()) the same steps complete
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        final, resp = await submit_form(other, url, AFTER_LOGOUT)
    assert resp is None and parse_qs(urlparse(final).query)["state"] == ["bye"]
    # the refresh token of an offline_access grant survives logout
    status, _ = await token(http, idp, grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert status == 200


async def test_session_cookie_signs_in_again_without_form(idp, http):
    await authorize(http, idp)
    # the second authorization request rides on the provider session: no form on the way
    await authorize(http, idp, password="not-used")


async def test_stop_leaves_no_process(http):
    idp = make_idp()
    await idp.start()
    pid = idp.pid
    assert pid and os.path.exists(f"/proc/{pid}")
    await idp.stop()
    assert idp.pid is None
    await until(lambda: not os.path.exists(f"/proc/{pid}"), interval=0.05)  # reaped
    assert not idp.config_path.exists()  # passwords and keys do not stay on disk
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(idp.discovery_url):
            pass


def test_start_failure_reports_the_log(tmp_path):
    with socket.socket() as busy:  # a port in use: node cannot listen there
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        idp = make_idp(port=busy.getsockname()[1], workdir=tmp_path)
        with pytest.raises(LocalIdPError, match="did not start") as info:
            idp.start_sync(timeout=30)
    assert "EADDRINUSE" in str(info.value)
    assert idp.pid is None


def test_invalid_client_metadata_fails_the_start(tmp_path):
    idp = LocalIdP(
        users=[], clients=[{"client_id": "c", "client_secret": "s", "redirect_uris": []}], workdir=tmp_path
    )
    with pytest.raises(LocalIdPError, match=r"client c: .*redirect_uris"):
        idp.start_sync()
    assert idp.pid is None


def test_available_names_a_wrong_major(tmp_path):
    package = tmp_path / "oidc-provider"
    package.mkdir()
    (package / "package.json").write_text('{"version": "9.0.0", "main": "lib/index.js"}')
    reason = LocalIdP.available(node_modules=tmp_path)
    assert reason and "9.0.0" in reason and "8.x" in reason


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"users\[0\]\.password"):
        LocalIdP(users=[{"username": "a"}], clients=[])
    with pytest.raises(ValueError, match=r"clients\[0\]\.client_id"):
        LocalIdP(users=[], clients=[{}])
