"""kubesim's Job controller (jobs.py) and hostPath volumes, over real HTTP with the process kubelet."""

from __future__ import annotations

import sys

import pytest
from kubernetes_asyncio import client

from apex_hub.kubesim import KubeSim
from tests.helpers.wait import until

pytestmark = pytest.mark.process


def job(name: str, code: str, backoff: int = 6, volumes=(), mounts=()) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": "busybox:1", "command": ["python3", "-c", code]}
                        | ({"volumeMounts": list(mounts)} if mounts else {})
                    ],
                    "volumes": list(volumes),
                },
            },
        },
    }


@pytest.fixture
async def sim(tmp_path):
    async with KubeSim(kubelet="process", workdir=tmp_path / "sim") as sim:
        async with sim.api_client() as api:
            await client.CoreV1Api(api).create_namespace({"metadata": {"name": "jhub"}})
        yield sim


async def _job(sim, name):
    async with sim.api_client() as api:
        return await client.BatchV1Api(api).read_namespaced_job(name, "jhub")


async def _pods(sim, name):
    async with sim.api_client() as api:
        found = await client.CoreV1Api(api).list_namespaced_pod(
            "jhub", label_selector=f"batch.kubernetes.io/job-name={name}"
        )
        return found.items


def _conditions(job) -> dict[str, str]:
    return {c.type: c.status for c in (job.status.conditions or [])}


async def test_a_job_runs_its_pod_once_and_completes(sim):
    async with sim.api_client() as api:
        created = await client.BatchV1Api(api).create_namespaced_job("jhub", job("hello", "print('hi')"))
    assert created.metadata.name == "hello"

    async def complete():
        found = await _job(sim, "hello")
        return found if _conditions(found).get("Complete") == "True" else None

    done = await until(complete)
    assert done.status.succeeded == 1 and not done.status.failed and done.status.active == 0
    assert done.status.completion_time is not None and done.status.start_time is not None
    assert _conditions(done) == {"SuccessCriteriaMet": "True", "Complete": "True"}
    # what the API server defaults on a Job
    assert done.spec.completions == 1 and done.spec.parallelism == 1
    assert done.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": done.metadata.uid}
    (pod,) = await _pods(sim, "hello")
    assert pod.metadata.name.startswith("hello-") and pod.status.phase == "Succeeded"
    assert pod.metadata.labels["app"] == "hello"  # the template's labels, plus the controller's
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Job", "hello", done.metadata.uid, True)
    assert sim.kubelet.logs("jhub", pod.metadata.name) == "hi\n"

    # a second create of the same name is refused: Jobs are idempotent by name
    async with sim.api_client() as api:
        with pytest.raises(client.ApiException) as info:
            await client.BatchV1Api(api).create_namespaced_job("jhub", job("hello", "print('again')"))
    assert info.value.status == 409
    assert len(await _pods(sim, "hello")) == 1

    # deleting the Job deletes its pods (ownerReferences)
    async with sim.api_client() as api:
        await client.BatchV1Api(api).delete_namespaced_job("hello", "jhub", propagation_policy="Background")

    async def no_pods():
        return not await _pods(sim, "hello")

    await until(no_pods)


async def test_a_failing_pod_is_replaced_until_the_backoff_limit(sim):
    async with sim.api_client() as api:
        await client.BatchV1Api(api).create_namespaced_job(
            "jhub", job("broken", "import sys; print('no'); sys.exit(3)", backoff=1)
        )

    async def failed():
        found = await _job(sim, "broken")
        return found if _conditions(found).get("Failed") == "True" else None

    done = await until(failed)
    assert done.status.failed == 2 and not done.status.succeeded and done.status.active == 0
    reasons = {c.type: c.reason for c in done.status.conditions}
    assert reasons == {"FailureTarget": "BackoffLimitExceeded", "Failed": "BackoffLimitExceeded"}
    pods = await _pods(sim, "broken")
    assert sorted(p.status.phase for p in pods) == ["Failed", "Failed"]  # one try + one retry


async def test_a_host_path_is_shared_by_pods_and_seen_at_its_own_path(sim, tmp_path):
    shared = tmp_path / "cache"
    volume = {"name": "cache", "hostPath": {"path": str(shared), "type": "DirectoryOrCreate"}}
    mount = {"name": "cache", "mountPath": str(shared)}
    write = "import os, sys; p = os.environ['CACHE'] + '/made'; open(p, 'w').write(sys.executable); print(p)"
    body = job("writer", write, volumes=[volume], mounts=[mount])
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "CACHE", "value": str(shared)}]
    async with sim.api_client() as api:
        await client.BatchV1Api(api).create_namespaced_job("jhub", body)

    async def complete():
        return _conditions(await _job(sim, "writer")).get("Complete") == "True"

    await until(complete)
    (pod,) = await _pods(sim, "writer")
    # the process saw the host path itself (not one under its pod's root), and wrote there
    assert sim.kubelet.logs("jhub", pod.metadata.name) == f"{shared}/made\n"
    assert (shared / "made").read_text() == sys.executable
    # the pod's teardown (a delete) leaves the node's directory alone
    async with sim.api_client() as api:
        await client.BatchV1Api(api).delete_namespaced_job("writer", "jhub", propagation_policy="Background")

    async def gone():
        return not await _pods(sim, "writer")

    await until(gone)
    await until(lambda: not (sim.workdir / "node" / "pods" / "jhub" / pod.metadata.name).exists())
    assert (shared / "made").exists()
