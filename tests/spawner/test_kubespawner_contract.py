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
    # the 409 replacement stops the old pod from inside the create call (see _REPLACING_POD)
    create = inspect.getsource(KubeSpawner._make_create_pod_request)
    assert "409" in create and "self.stop(True)" in create
    assert isinstance(inspect.getattr_static(Spawner, "_log_name"), property)


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
