"""The workspace client's own request path sends what kubernetes_asyncio's ``call_api`` sends.

``Kube.send_once`` builds its requests itself (less work on the hub's loop than the generic,
model-oriented ``ApiClient.call_api``), and the API client stops looking up proxies and
``.netrc`` before each request when there is nothing to find. Both are checked against a
recording HTTP server on loopback: same method, path, query, headers and JSON, the same
answers and errors, and a proxy in the environment still used.
"""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration, V1DeleteOptions
from kubernetes_asyncio.client.exceptions import ApiException

from apex_hub.local import free_port
from apex_hub.spawner.kube import Kube, env_lookups_matter, skip_env_lookups
from tests.helpers.spawner import make_spawner


class Recorder:
    """An HTTP server that records every request and answers what it is told."""

    def __init__(self):
        self.seen: list[dict] = []
        self.status, self.answer = 200, {"kind": "Status", "ok": True}

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": list(request.query.items()),
                "url": str(request.url),
                "headers": {k.lower(): v for k, v in request.headers.items() if k.lower() not in SKIP},
                "body": await request.read(),
            }
        )
        return web.json_response(self.answer, status=self.status)

    async def __aenter__(self):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()


#: Headers that name the connection, not the request.
SKIP = {"host", "content-length", "connection", "accept-encoding"}


def empty_netrc(tmp_path) -> str:
    path = tmp_path / "empty-netrc"
    path.write_text("")
    path.chmod(0o600)
    return str(path)


def client_for(url: str) -> ApiClient:
    conf = Configuration(host=url)
    conf.api_key = {"BearerToken": "s3cret"}
    conf.api_key_prefix = {"BearerToken": "Bearer"}
    return ApiClient(conf)


async def via_call_api(client, method, path, query=None, body=None, content_type="application/json"):
    """The request as the typed client made it before (``Kube.send_once`` until issue 19)."""
    return await client.call_api(
        path,
        method,
        query_params=list(query or []),
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        response_types_map={200: "object", 201: "object", 202: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        _preload_content=True,
        _request_timeout=5,
    )


def pod_model():
    from kubernetes_asyncio.client import V1Container, V1ObjectMeta, V1Pod, V1PodSpec

    return V1Pod(
        metadata=V1ObjectMeta(name="jupyter-ada", labels={"a": "b"}),
        spec=V1PodSpec(
            containers=[V1Container(name="notebook", image="busybox", env=[{"name": "X", "value": "1"}])],
            volumes=[{"name": "w", "persistentVolumeClaim": {"claimName": "c"}}],
        ),
    )


CASES = [
    (
        "PATCH",
        "/api/v1/namespaces/apex-ada/configmaps/bashrc",
        [("fieldManager", "apex-hub"), ("force", "true")],
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bashrc"}, "data": {"k": "ü v"}},
        "application/apply-patch+yaml",
    ),
    ("POST", "/api/v1/namespaces/apex-ada/pods", [], pod_model(), "application/json"),
    (
        "DELETE",
        "/api/v1/namespaces/apex-ada/pods/jupyter-ada",
        [("gracePeriodSeconds", 1)],
        V1DeleteOptions(grace_period_seconds=1),
        "application/json",
    ),
    (
        "DELETE",
        "/api/v1/namespaces/apex-ada/configmaps",
        [("labelSelector", "a=b,c in (d)")],
        {"propagationPolicy": "Background"},
        "application/json",
    ),
    ("GET", "/api/v1/namespaces/apex-ada", [], None, "application/json"),
]


@pytest.mark.parametrize("method, path, query, body, content_type", CASES, ids=[c[0] for c in CASES])
async def test_the_request_is_the_one_call_api_sends(method, path, query, body, content_type):
    async with Recorder() as server:
        async with client_for(server.url) as client:
            before = await via_call_api(client, method, path, query, body, content_type)
            now = await Kube(client, None).send_once(
                method, path, query=query, body=body, content_type=content_type
            )
    old, new = server.seen
    assert new["method"] == old["method"] == method
    assert new["url"] == old["url"]
    assert new["headers"] == old["headers"]
    assert new["headers"]["authorization"] == "Bearer s3cret"
    assert new["headers"]["content-type"] == content_type
    assert new["body"] == old["body"]
    if body is not None:
        assert json.loads(new["body"])  # the model was serialised, not its repr
    assert now == before == {"kind": "Status", "ok": True}


@pytest.mark.parametrize("status", [404, 409, 422, 500])
async def test_an_error_is_the_api_exception_call_api_raises(status):
    async with Recorder() as server:
        server.status, server.answer = status, {"kind": "Status", "message": f"nope ü {status}"}
        async with client_for(server.url) as client:
            with pytest.raises(ApiException) as before:
                await via_call_api(client, "GET", "/api/v1/namespaces/x")
            with pytest.raises(ApiException) as now:
                await Kube(client, None).send_once("GET", "/api/v1/namespaces/x")
    assert type(now.value) is type(before.value)
    assert now.value.status == before.value.status == status
    assert now.value.reason == before.value.reason
    assert now.value.body == before.value.body and isinstance(now.value.body, str)
    assert now.value.headers["Content-Type"] == before.value.headers["Content-Type"]


def test_env_lookups_matter_only_for_a_proxy_or_netrc_entry_of_the_api_host(monkeypatch, tmp_path):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", empty_netrc(tmp_path))
    assert not env_lookups_matter("https://10.0.0.1:6443")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert env_lookups_matter("https://10.0.0.1:6443")
    assert not env_lookups_matter("http://10.0.0.1:6443")  # no HTTP_PROXY
    monkeypatch.setenv("NO_PROXY", "10.0.0.1")
    assert not env_lookups_matter("https://10.0.0.1:6443")
    monkeypatch.delenv("HTTPS_PROXY")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 10.0.0.1 login u password p\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert env_lookups_matter("https://10.0.0.1:6443")
    assert not env_lookups_matter("https://10.0.0.2:6443")


async def test_a_proxy_in_the_environment_is_still_used(monkeypatch, tmp_path):
    """With HTTP_PROXY for the API server, aiohttp's per-request lookup stays on and the
    requests go through the proxy (the recorder sees the absolute URL a proxy is sent)."""
    monkeypatch.setenv("NETRC", empty_netrc(tmp_path))
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with Recorder() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with client_for("http://api.invalid:6443") as client:
            assert not skip_env_lookups(client)
            assert client.rest_client.pool_manager.trust_env
            await Kube(client, None).send_once("GET", "/api/v1/namespaces/x")
    assert proxy.seen[0]["url"] == "http://api.invalid:6443/api/v1/namespaces/x"


async def test_without_proxy_or_netrc_the_lookups_stop_and_spawns_work(ksim, monkeypatch, tmp_path):
    monkeypatch.setenv("NETRC", empty_netrc(tmp_path))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    spawner = make_spawner(ksim, "ada")
    await spawner.start()
    session = spawner.api.api_client.rest_client.pool_manager
    assert not session.trust_env  # checked once, when the spawner's client was first used
    assert not skip_env_lookups(spawner.api.api_client)  # and only once
    await spawner.stop()
    assert ksim.counts()["create pods"] == 1


async def test_the_sessions_checked_are_not_kept_alive():
    import gc
    import weakref

    from apex_hub.spawner import kube

    async with client_for("http://127.0.0.1:1") as client:
        session = client.rest_client.pool_manager
        skip_env_lookups(client)
        assert session in kube._CHECKED_SESSIONS
        gone = weakref.ref(session)
    del client, session
    gc.collect()
    assert gone() is None  # the set held it weakly: a closed client's session is freed
