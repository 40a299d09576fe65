"""Behaviour found against the real API server (or by users), which kubesim now reproduces.

Each test is one row of the README's "found against the real API server" list; the fast lane
runs on kubesim, so a leniency here hides a production failure.
"""

import json

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from apex_hub.kubesim import KubeSim
from tests.helpers.wait import until


def pod(name, **spec):
    containers = spec.pop("containers", [{"name": "c", "image": "busybox:1.36"}])
    return {"metadata": {"name": name}, "spec": {"containers": containers, **spec}}


def error(exc: ApiException) -> dict:
    return json.loads(exc.body)


# -- 1. ServiceAccount admission --------------------------------------------------------------


async def test_pod_naming_a_missing_service_account_is_forbidden(v1):
    await v1.create_namespace({"metadata": {"name": "team"}})
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_pod("team", pod("x", serviceAccountName="sa"))
    assert e.value.status == 403
    assert error(e.value)["message"] == (
        'pods "x" is forbidden: error looking up service account team/sa: serviceaccount "sa" not found'
    )
    assert error(e.value)["reason"] == "Forbidden"
    await v1.create_namespaced_service_account("team", {"metadata": {"name": "sa"}})
    made = await v1.create_namespaced_pod("team", pod("x", serviceAccountName="sa"))
    assert made.spec.service_account_name == "sa"
    # no name: the namespace's "default" account, which the serviceaccount controller created
    assert (await v1.create_namespaced_pod("team", pod("y"))).spec.service_account_name == "default"


async def test_pod_without_the_default_service_account_is_forbidden(v1):
    await v1.delete_namespaced_service_account("default", "default")
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_pod("default", pod("z"))
    assert e.value.status == 403 and 'serviceaccount "default" not found' in error(e.value)["message"]


# -- 2. namespace deletion takes time -----------------------------------------------------------


async def test_namespace_stays_terminating_while_its_pods_terminate():
    # phase_delay: the instant kubelet takes that long to stop a pod, as a real kubelet takes seconds
    async with KubeSim(kubelet="instant", kubelet_options={"phase_delay": 0.3}) as sim:
        async with sim.api_client() as api:
            v1 = client.CoreV1Api(api)
            await v1.create_namespace({"metadata": {"name": "doomed"}})
            await v1.create_namespaced_pod("doomed", pod("p"))
            await until(
                lambda: (
                    sim.store.get(sim.store.registry.get("", "v1", "pods"), "doomed", "p")["status"]["phase"]
                    == "Running"
                )
            )
            await v1.delete_namespace("doomed")

            async def remaining():
                ns = await v1.read_namespace("doomed")
                conds = {c.type: c for c in ns.status.conditions or []}
                return ns if "NamespaceContentRemaining" in conds else None

            ns = await until(remaining)
            assert ns.status.phase == "Terminating" and ns.metadata.deletion_timestamp
            conds = {c.type: c for c in ns.status.conditions}
            assert conds["NamespaceContentRemaining"].status == "True"
            assert conds["NamespaceContentRemaining"].reason == "SomeResourcesRemain"
            # as a real namespace controller words it (checked against kube-apiserver 1.35)
            assert conds["NamespaceContentRemaining"].message == (
                "Some resources are remaining: pods. has 1 resource instances"
            )
            assert conds["NamespaceDeletionContentFailure"].status == "False"
            terminating = await v1.read_namespaced_pod("p", "doomed")
            assert terminating.metadata.deletion_timestamp  # graceful: the kubelet finishes it
            with pytest.raises(ApiException) as e:
                await v1.create_namespaced_config_map("doomed", {"metadata": {"name": "late"}})
            assert e.value.status == 403
            assert error(e.value)["message"] == (
                'configmaps "late" is forbidden: unable to create new content in '
                "namespace doomed because it is being terminated"
            )

            async def gone():
                try:
                    await v1.read_namespace("doomed")
                except ApiException as err:
                    return err.status == 404
                return False

            await until(gone)
            assert not (
                await v1.list_pod_for_all_namespaces(field_selector="metadata.namespace=doomed")
            ).items


async def test_an_emptied_namespace_still_takes_time_to_go():
    """Even with nothing inside, a namespace outlives its deletion request (a re-spawn right after it fails)."""
    async with KubeSim(kubelet="instant", namespace_deletion_delay=600) as sim:
        async with sim.api_client() as api:
            v1 = client.CoreV1Api(api)
            await v1.create_namespace({"metadata": {"name": "empty"}})
            await v1.delete_namespace("empty")

            async def content_removed():
                ns = await v1.read_namespace("empty")
                conds = {c.type: c for c in ns.status.conditions or []}
                done = conds.get("NamespaceContentRemaining")
                return ns if done is not None and done.status == "False" else None

            ns = await until(content_removed)  # the default ServiceAccount is gone: content removed
            assert ns.status.phase == "Terminating"
            assert {c.type: c.reason for c in ns.status.conditions}[
                "NamespaceContentRemaining"
            ] == "ContentRemoved"
            with pytest.raises(ApiException) as e:
                await v1.create_namespaced_service_account("empty", {"metadata": {"name": "late"}})
            assert e.value.status == 403 and "because it is being terminated" in error(e.value)["message"]


async def test_namespace_conditions_name_remaining_finalizers(v1):
    """Worded as kube-apiserver 1.35's namespace controller words them (checked on the real lane)."""
    await v1.create_namespace({"metadata": {"name": "held"}})
    await v1.create_namespaced_config_map(
        "held", {"metadata": {"name": "h", "finalizers": ["example.com/x"]}}
    )
    await v1.delete_namespace("held")

    async def conditions():
        ns = await v1.read_namespace("held")
        conds = {c.type: (c.status, c.reason, c.message) for c in ns.status.conditions or []}
        return conds if "NamespaceFinalizersRemaining" in conds else None

    conds = await until(conditions)
    assert conds["NamespaceContentRemaining"] == (
        "True",
        "SomeResourcesRemain",
        "Some resources are remaining: configmaps. has 1 resource instances",
    )
    assert conds["NamespaceFinalizersRemaining"] == (
        "True",
        "SomeFinalizersRemain",
        "Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances",
    )
    assert conds["NamespaceDeletionDiscoveryFailure"] == (
        "False",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    )
    await v1.patch_namespaced_config_map("h", "held", {"metadata": {"finalizers": None}})

    async def gone():
        try:
            await v1.read_namespace("held")
        except ApiException as err:
            return err.status == 404
        return False

    await until(gone)


# -- 3. the instant kubelet resolves references ---------------------------------------------------


async def _waiting_reason(v1, name):
    p = await v1.read_namespaced_pod(name, "default")
    statuses = p.status.container_statuses or []
    return p.status.phase, (
        statuses[0].state.waiting.reason if statuses and statuses[0].state.waiting else None
    )


async def _warnings(v1, name):
    items = (await v1.list_namespaced_event("default", field_selector=f"involvedObject.name={name}")).items
    return [(e.reason, e.message) for e in items if e.type == "Warning"]


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "a"}}}]},
            'configmap "settings" not found',
        ),
        (
            {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "token", "key": "t"}}}]},
            'secret "token" not found',
        ),
        ({"envFrom": [{"configMapRef": {"name": "settings"}}]}, 'configmap "settings" not found'),
    ],
)
async def test_instant_kubelet_refuses_missing_env_references(sim, v1, env, message):
    container = {"name": "c", "image": "busybox:1.36", **env}
    await v1.create_namespaced_pod("default", pod("e", containers=[container]))
    await until(lambda: _has(_warnings(v1, "e"), ("Failed", f"Error: {message}")))
    assert await _waiting_reason(v1, "e") == ("Pending", "CreateContainerConfigError")
    # creating what it needs lets it start, as a kubelet retries
    data = {"a": "1", "t": "dA=="}
    if "secret" in message:
        await v1.create_namespaced_secret(
            "default", {"metadata": {"name": "token"}, "data": {"t": data["t"]}}
        )
    else:
        await v1.create_namespaced_config_map(
            "default", {"metadata": {"name": "settings"}, "data": {"a": "1"}}
        )
    await until(lambda: _is(_waiting_reason(v1, "e"), ("Running", None)))


async def test_instant_kubelet_optional_reference_runs(sim, v1):
    container = {
        "name": "c",
        "image": "busybox:1.36",
        "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "a", "optional": True}}}
        ],
    }
    await v1.create_namespaced_pod("default", pod("o", containers=[container]))
    await until(lambda: _is(_waiting_reason(v1, "o"), ("Running", None)))


@pytest.mark.parametrize(
    "volume, message",
    [
        (
            {"configMap": {"name": "settings"}},
            'MountVolume.SetUp failed for volume "v" : configmap "settings" not found',
        ),
        (
            {"secret": {"secretName": "token"}},
            'MountVolume.SetUp failed for volume "v" : secret "token" not found',
        ),
        (
            {"persistentVolumeClaim": {"claimName": "home"}},
            'MountVolume.SetUp failed for volume "v" : persistentvolumeclaim "home" not found',
        ),
    ],
)
async def test_instant_kubelet_refuses_missing_volumes(sim, v1, volume, message):
    container = {"name": "c", "image": "busybox:1.36", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}
    await v1.create_namespaced_pod(
        "default", pod("m", containers=[container], volumes=[{"name": "v", **volume}])
    )
    await until(lambda: _has(_warnings(v1, "m"), ("FailedMount", message)))
    assert await _waiting_reason(v1, "m") == ("Pending", "ContainerCreating")


async def _has(items_coro, item):
    return item in await items_coro


async def _is(value_coro, value):
    return await value_coro == value


# -- 5. the API server knows its kubelet ---------------------------------------------------------


async def test_api_server_kubelet_is_set_explicitly():
    async with KubeSim(kubelet="instant") as sim:
        assert sim.api.kubelet is sim.kubelet is not None
    async with KubeSim(kubelet=None) as sim:
        assert sim.api.kubelet is None


# -- 6. what local mode users saw ----------------------------------------------------------------


def test_crash_backoff_grows_from_the_base_to_thirty_times_it():
    from apex_hub.kubesim.kubelet import crash_backoff, go_duration

    assert [crash_backoff(10, n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]
    assert crash_backoff(10, 0) == 10  # a clean exit of an Always container: the base
    assert [go_duration(s) for s in (10, 80, 160, 300, 0.2, 1.5)] == [
        "10s",
        "1m20s",
        "2m40s",
        "5m0s",
        "200ms",
        "1.5s",
    ]


async def test_crash_loop_back_off_doubles(tmp_path):
    """The kubelet's own messages show the growing back-off (a base of 50 ms keeps the test fast)."""
    async with KubeSim(kubelet="process", workdir=tmp_path, kubelet_options={"restart_backoff": 0.05}) as sim:
        async with sim.api_client() as api:
            v1 = client.CoreV1Api(api)
            crash = {"name": "c", "image": "python:3.11", "command": ["python", "-c", "raise SystemExit(3)"]}
            await v1.create_namespaced_pod("default", pod("crash", containers=[crash]))
            seen, was_backing_off = [], False
            async with watch.Watch() as w:
                async for ev in w.stream(
                    v1.list_namespaced_pod,
                    "default",
                    field_selector="metadata.name=crash",
                    timeout_seconds=120,
                ):
                    statuses = ev["object"].status.container_statuses or []
                    waiting = statuses[0].state.waiting if statuses else None
                    backing_off = bool(waiting and waiting.reason == "CrashLoopBackOff")
                    if backing_off and not was_backing_off:  # each entry into back-off, once
                        seen.append(waiting.message)
                    was_backing_off = backing_off
                    if len(seen) >= 6:
                        break
            delays = [m.split()[1] for m in seen]
            assert delays == ["100ms", "200ms", "400ms", "800ms", "1.5s", "1.5s"]
            assert seen[0].startswith("back-off 100ms restarting failed container=c pod=crash_default(")
