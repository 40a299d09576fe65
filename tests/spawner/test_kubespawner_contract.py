"""Issue 13.8: fail loudly when a KubeSpawner private that APExSpawner overrides or relies on
disappears or changes (the suite runs on KubeSpawner 7.0.0, the Z2JH 4.4.0 image, and the newest).

Each entry is what apex_hub/spawner/spawner.py calls or overrides; a change upstream must be
read and adapted to, not discovered in production.
"""

from __future__ import annotations

import inspect

import pytest
from jupyterhub.spawner import Spawner
from kubespawner import KubeSpawner

from apex_hub.spawner import APExSpawner
from tests.helpers.spawner import make_spawner

#: name -> (parameters, is a coroutine function, overridden by APExSpawner)
PRIVATES = {
    "_ensure_namespace": (["self"], True, True),
    "_make_create_pod_request": (["self", "pod", "request_timeout"], True, True),
    "_make_delete_pod_request": (
        ["self", "pod_name", "delete_options", "grace_seconds", "request_timeout"],
        True,
        True,
    ),
    "_render_options_form_dynamically": (["self", "current_spawner"], True, True),
    "_render_options_form": (["self", "profile_list"], False, False),
    "_apply_overrides": (["self", "spawner_override"], False, False),
    "_namespace_default": (["self"], False, False),
    "_start": (["self"], True, False),
    "_start_watching_pods": (["self", "replace"], True, False),
}


@pytest.mark.parametrize("name", sorted(PRIVATES))
def test_the_kubespawner_privates_we_use_keep_their_signature(name):
    params, is_coroutine, overridden = PRIVATES[name]
    assert hasattr(KubeSpawner, name), f"KubeSpawner.{name} is gone: adapt apex_hub/spawner/spawner.py"
    upstream = getattr(KubeSpawner, name)
    upstream = getattr(upstream, "func", upstream)  # a traitlets @default handler (_namespace_default)
    assert list(inspect.signature(upstream).parameters) == params, (
        f"KubeSpawner.{name}{inspect.signature(upstream)} changed; APExSpawner expects ({', '.join(params)})"
    )
    assert inspect.iscoroutinefunction(upstream) is is_coroutine, f"KubeSpawner.{name}: async changed"
    if overridden:
        ours = getattr(APExSpawner, name)
        assert ours is not upstream, f"APExSpawner no longer overrides {name}: update this list"
        assert inspect.signature(ours) == inspect.signature(upstream)


def test_the_upstream_behaviour_we_rely_on_is_still_there():
    start = inspect.getsource(KubeSpawner._start)
    # our workspace is provisioned from KubeSpawner's namespace step, after the options
    assert "await self.load_user_options()" in start and "await self._ensure_namespace()" in start
    assert (
        start.index("load_user_options") < start.index("_ensure_namespace") < start.index("get_pod_manifest")
    ), "the order load options -> namespace -> pod changed"
    # the pod is created through _make_create_pod_request, retried by exponential_backoff
    # (our override answers False to be called again); a warm spawn sends it from there
    # while the workspace round started in _ensure_namespace is in flight
    assert "exponential_backoff(" in start and "self._make_create_pod_request" in start
    assert start.index("_ensure_namespace") < start.index("_last_event") < start.index("_make_create_pod")
    # the 409 of an earlier pod is handled like upstream's: stop it, then try again
    create = inspect.getsource(KubeSpawner._make_create_pod_request)
    assert "409" in create and "self.stop(True)" in create
    assert isinstance(inspect.getattr_static(Spawner, "_log_name"), property)


def test_the_lean_watch_matches_what_kubernetes_asyncio_and_the_reflectors_do():
    """apex_hub.spawner.lean replaces ``watch.Watch`` in kubespawner.reflector: the reflectors
    must still build their watch from there and read only the raw objects; ``Watch`` must still
    set up exactly the attributes LeanWatch sets up, and take its model type from
    ``get_return_type``."""
    from kubernetes_asyncio import watch
    from kubespawner import reflector

    from apex_hub.spawner import lean

    source = inspect.getsource(reflector.ResourceReflector._watch_and_update)
    assert "watch.Watch()" in source and "watch_event['raw_object']" in source
    assert "watch_event['object']" not in source
    init = inspect.getsource(watch.Watch.__init__)
    assigned = {line.split("=")[0].strip() for line in init.splitlines() if line.strip().startswith("self.")}
    assert assigned == {
        "self._raw_return_type",
        "self._stop",
        "self._api_client",
        "self.resource_version",
        "self.resp",
    }
    assert "self.return_type = self.get_return_type(func)" in inspect.getsource(watch.Watch.stream)
    assert "self._api_client.close()" in inspect.getsource(watch.Watch.close)
    assert set(vars(lean.LeanWatch)) >= {"__init__", "get_return_type"}


async def test_runtime_contract(ksim):
    spawner = make_spawner(ksim, "zoe")
    # profile_list is callable, so KubeSpawner's form default is our dynamic renderer
    assert spawner.options_form == spawner._render_options_form_dynamically
    # KubeSpawner keeps the namespace in state and restores it (our migration relies on it)
    state = spawner.get_state()
    assert state["namespace"] == "apex-zoe"
    other = make_spawner(ksim, "zoe")
    other.load_state({**state, "namespace": "apex-zoe-old"})
    assert other.namespace == "apex-zoe-old"
    # start() keeps the future that progress() watches
    future = spawner.start()
    assert spawner._start_future is future
    await future
    await spawner.stop()
