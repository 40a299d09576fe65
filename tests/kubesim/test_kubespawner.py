"""Unmodified KubeSpawner 7 against kubesim, in process: reflectors, watches, faults.

The end-to-end run with a real hub, proxy and single-user server is in
``test_kubespawner_hub.py``; here KubeSpawner is driven directly so that its reflectors
can be inspected.
"""

import asyncio

import pytest
from jupyterhub.objects import Hub, Server
from kubernetes_asyncio import client
from kubespawner import KubeSpawner
from traitlets.config import Config

from apex_hub.kubesim import KubeSim
from tests.helpers.wait import until


class HubUser:
    """The attributes of ``jupyterhub.user.User`` that KubeSpawner reads when not under a hub."""

    def __init__(self, name, uid=1):
        self.name, self.id = name, uid
        self.server = Server(base_url=f"/user/{name}/")
        self.url = self.server.base_url
        self.progress_url = f"/hub/api/users/{name}/server/progress"
        self.groups = []


def make_spawner(sim, name, uid, **extra):
    c = Config()
    c.KubeSpawner.k8s_api_host = sim.url
    c.KubeSpawner.enable_user_namespaces = True
    c.KubeSpawner.user_namespace_template = "ks-{username}"
    c.KubeSpawner.image = "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0"
    c.KubeSpawner.start_timeout = 20
    c.KubeSpawner.events_enabled = True
    for k, v in extra.items():
        setattr(c.KubeSpawner, k, v)
    return KubeSpawner(hub=Hub(), user=HubUser(name, uid), config=c, api_token="t", oauth_client_id="c")


@pytest.fixture
async def ksim(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "")
    async with KubeSim(kubelet="instant") as sim:
        sim.make_default()  # KubeSpawner loads a kubeconfig before applying k8s_api_host
        yield sim
        await KubeSpawner._stop_all_reflectors()


async def wait_for(pred):
    await until(pred, interval=0.05)


async def test_start_poll_stop_with_user_namespace_and_pvc(ksim):
    spawner = make_spawner(
        ksim,
        "alice",
        1,
        storage_pvc_ensure=True,
        storage_capacity="1Gi",
        pvc_name_template="claim-{username}",
    )
    assert await spawner.poll() == 1  # nothing running yet
    url = await spawner.start()
    pod = ksim.store.get(ksim.store._rt("pods"), "ks-alice", "jupyter-alice")
    assert url == f"http://{pod['status']['podIP']}:8888"
    assert await spawner.poll() is None
    await spawner.stop()
    assert await spawner.poll() == 1
    async with ksim.api_client() as api:
        v1 = client.CoreV1Api(api)
        assert not (await v1.list_namespaced_pod("ks-alice")).items
        pvc = await v1.read_namespaced_persistent_volume_claim("claim-alice", "ks-alice")
        assert pvc.status.phase == "Bound"  # a stop keeps the user's data
    counts = ksim.counts()
    assert counts["create namespaces"] == 1 and counts["create pods"] == 1 and counts["delete pods"] >= 1


async def test_decoy_pod_never_reaches_the_reflector(ksim):
    async with ksim.api_client() as api:
        v1 = client.CoreV1Api(api)
        await v1.create_namespace({"metadata": {"name": "other-team"}})
        await v1.create_namespaced_pod(
            "other-team",
            {
                "metadata": {"name": "decoy", "labels": {"app": "else"}},
                "spec": {"containers": [{"name": "c", "image": "x:1"}]},
            },
        )
    spawner = make_spawner(ksim, "bob", 2)
    await spawner.start()
    pods = spawner.pod_reflector.pods
    assert "ks-bob/jupyter-bob" in pods
    assert not any("decoy" in key for key in pods)
    watch_requests = [r for r in ksim.requests if r.verb == "watch" and r.resource == "pods"]
    assert watch_requests and all(r.namespace is None for r in watch_requests)  # cluster-wide, by label
    await spawner.stop()


async def test_reflector_survives_dropped_watch_and_410(ksim):
    first = make_spawner(ksim, "carol", 3)
    await first.start()
    reflector = first.pod_reflector
    assert ksim.drop_watches(abrupt=True) >= 1
    ksim.store.compact()  # the reflector's resourceVersion is now too old: 410 Gone on re-watch
    await asyncio.sleep(0.2)
    second = make_spawner(ksim, "dave", 4)
    await second.start()
    await wait_for(lambda: "ks-dave/jupyter-dave" in reflector.pods)
    assert second.pod_reflector is reflector
    await second.stop()
    await wait_for(lambda: "ks-dave/jupyter-dave" not in reflector.pods)
    await first.stop()


async def test_slow_pod_create_times_out_and_converges_through_409(ksim):
    # The first create answers after KubeSpawner's request timeout but still creates the pod, as a
    # slow API server does; KubeSpawner retries, gets 409 AlreadyExists, deletes and creates again.
    ksim.inject(verb="create", resource="pods", status=None, delay=1.5)
    spawner = make_spawner(ksim, "erin", 5, k8s_api_request_timeout=1)
    url = await spawner.start()
    assert url.startswith("http://127.0.0.")
    statuses = [r.status for r in ksim.requests if r.verb == "create" and r.resource == "pods"]
    assert 409 in statuses and statuses[-1] == 201
    await spawner.stop()


async def test_unmodified_kubespawner_fails_on_a_500(ksim):
    # Baseline that APExSpawner improves on: KubeSpawner 7 retries timeouts and 409 only.
    ksim.inject(verb="create", resource="pods", status=500, message="etcdserver: request timed out")
    spawner = make_spawner(ksim, "gina", 7)
    with pytest.raises(client.ApiException) as e:
        await spawner.start()
    assert e.value.status == 500 and "etcdserver: request timed out" in e.value.body


async def test_spawn_progress_shows_kubelet_events(ksim):
    spawner = make_spawner(ksim, "frank", 6)
    await spawner.start()
    messages = []

    async def read():
        async for event in spawner.progress():
            messages.append(event["message"])

    await read()  # the spawner is up: its progress ends with the events so far
    assert any("Successfully assigned ks-frank/jupyter-frank" in m for m in messages) and any(
        "Started container" in m for m in messages
    ), messages
    await spawner.stop()
