"""The accounting service's pod watch on kubesim (in process, instant kubelet): backfill, watch,
``410 Gone`` re-list, dropped watches, restarts, exclusion and group fallback — no session lost,
none counted twice. The users' JupyterHub groups are given as the hub round would set them (the
end-to-end test in test_accounting_hub.py gets them from a real hub)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes_asyncio import client

from apex_hub.kubesim import KubeSim
from apex_hub.services.accounting.db import Ledger
from apex_hub.services.accounting.ingest import observation, quantity
from apex_hub.services.accounting.service import HEARTBEAT, AccountingService, kube_factory
from apex_hub.services.culler.service import HubClient
from tests.helpers.wait import until


def pod(
    name: str,
    user: str,
    *,
    group: str | None = None,
    server: str = "",
    profile: str = "lab",
    apex: bool = True,
) -> dict:
    labels = {"component": "singleuser-server"}
    if apex:
        labels.update(
            {
                "app.kubernetes.io/part-of": "apex-workspace",
                "apex.esa.int/user": user,
                "apex.esa.int/profile": profile,
                "app.kubernetes.io/managed-by": "kubespawner",
            }
        )
    ann = {"apex.esa.int/username": user}
    if group:
        ann["apex.esa.int/group"] = group
    if server:
        ann["hub.jupyter.org/servername"] = server
    return {
        "metadata": {"name": name, "labels": labels, "annotations": ann},
        "spec": {
            "containers": [
                {
                    "name": "notebook",
                    "image": "img:2",
                    "resources": {"requests": {"cpu": "250m", "memory": "1Gi", "nvidia.com/gpu": "1"}},
                },
                {"name": "sidecar", "image": "side", "resources": {"limits": {"cpu": "1", "memory": "500M"}}},
            ],
            "volumes": [{"name": "ws", "persistentVolumeClaim": {"claimName": "ws"}}],
        },
    }


@pytest.fixture
async def env(tmp_path):
    async with KubeSim(kubelet="instant") as sim:
        async with sim.api_client() as api:
            v1 = client.CoreV1Api(api)
            await v1.create_namespace({"metadata": {"name": "apex-u"}})
            await v1.create_namespaced_persistent_volume_claim(
                "apex-u",
                {
                    "metadata": {"name": "ws"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}},
                },
            )
            yield sim, v1, f"sqlite:///{tmp_path}/ledger.sqlite"


def service(url: str, sim: KubeSim, **kw) -> AccountingService:
    hub = HubClient("http://127.0.0.1:9", "unused", tries=1)  # the hub rounds are not run here
    svc = AccountingService(
        Ledger(url), hub=hub, kube=kube_factory(sim.kubeconfig_path), interval=3600, watch_timeout=2, **kw
    )
    svc.groups = {"alice": ["apex-small", "students"], "bob": ["apex-probe"], "carol": []}
    return svc


def test_requested_resources_and_quantities():
    assert quantity("250m") == quantity("0.25") and quantity("1Gi") == 2**30 and quantity("500M") == 5 * 10**8
    assert quantity("1e3") == 1000
    now = datetime.now(UTC)
    p = pod("p", "alice")
    p["metadata"].update(uid="u1", namespace="apex-u")
    assert observation(p, now=now) is None  # not started yet: not a session
    p["status"] = {"startTime": "2026-11-23T10:00:00Z", "phase": "Running"}
    o = observation(p, now=now, group="g")
    assert (o.cpu, o.memory_bytes, o.gpu, o.image, o.group, o.profile) == (
        1.25,
        2**30 + 5 * 10**8,
        1.0,
        "img:2",
        "g",
        "lab",
    )
    p["metadata"]["labels"]["app.kubernetes.io/part-of"] = "something-else"
    assert observation(p, now=now) is None  # exact labels, not names


async def test_watch_relist_restart_no_loss_no_double_count(env):
    sim, v1, url = env
    svc = service(url, sim)
    task = asyncio.create_task(svc.watch_pods())
    try:
        await v1.create_namespaced_pod("apex-u", pod("jupyter-alice", "alice"))
        await v1.create_namespaced_pod("apex-u", pod("jupyter-alice-2", "alice", group="ops", server="gpu"))
        await v1.create_namespaced_pod("apex-u", pod("jupyter-bob", "bob"))  # probe: excluded
        await v1.create_namespaced_pod("apex-u", pod("other", "carol", apex=False))  # not ours
        await until(lambda: len(svc.ledger.sessions()) == 2)
        a1, a2 = sorted(svc.ledger.sessions(), key=lambda s: s["server"])
        assert (a1["group"], a1["server"], a1["pvc_bytes"], a1["cpu"]) == ("apex-small", "", 5 * 2**30, 1.25)
        assert (a2["group"], a2["server"]) == ("ops", "gpu")  # the annotation wins over the hub's groups
        await until(lambda: svc.stats.excluded >= 1)

        # history compacted: the watch gets 410 Gone, re-lists, and nothing is counted twice
        relists = svc.stats.relists
        sim.store.compact()
        sim.drop_watches()
        await until(lambda: svc.stats.relists > relists and svc.stats.watching.is_set())
        await v1.delete_namespaced_pod("jupyter-alice", "apex-u")
        await until(lambda: svc.ledger.session(a1["id"])["stop"] is not None)
        s = svc.ledger.session(a1["id"])
        assert s["stop_reason"] == "user" and s["status"] == "stopped"
        assert svc.ledger.count()[0] == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # the service is down: a2's pod goes, a new pod starts; the last heartbeat was 1 s ago
    heartbeat = datetime.now(UTC) - timedelta(seconds=1)
    svc.ledger.set_state(HEARTBEAT, heartbeat.isoformat())
    await v1.delete_namespaced_pod("jupyter-alice-2", "apex-u")
    await v1.create_namespaced_pod("apex-u", pod("jupyter-carol", "carol"))
    svc2 = service(url, sim)
    task = asyncio.create_task(svc2.watch_pods())
    try:
        await until(lambda: svc2.stats.watching.is_set())
        rows = {s["pod"]: s for s in svc2.ledger.sessions()}
        assert set(rows) == {"jupyter-alice", "jupyter-alice-2", "jupyter-carol"}
        gone = rows["jupyter-alice-2"]
        assert gone["stop"] == max(heartbeat.replace(microsecond=heartbeat.microsecond), gone["start"])
        assert gone["stop_reason"] == "external"
        [stopped] = [e for e in svc2.ledger.events(gone["id"]) if e["kind"] == "stopped"]
        assert stopped["source"] == "backfill" and stopped["data"]["estimated"] is True
        assert rows["jupyter-carol"]["group"] is None and rows["jupyter-carol"]["stop"] is None
        opened = [e["session_id"] for e in svc2.ledger.events() if e["kind"] == "opened"]
        assert len(opened) == len(set(opened)) == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        svc.ledger.close()
        svc2.ledger.close()


async def test_pods_wait_for_unknown_users_and_culler_reasons_attach(env, tmp_path):
    sim, v1, url = env
    reasons = tmp_path / "stop-reasons.jsonl"
    svc = service(url, sim, stop_reasons=reasons)
    svc.groups = {}
    task = asyncio.create_task(svc.watch_pods())
    try:
        await v1.create_namespaced_pod("apex-u", pod("jupyter-dora", "dora"))
        await until(lambda: svc.stats.deferred >= 1)
        assert svc.ledger.sessions() == []  # unknown user: exclusion cannot be decided yet
        svc.groups = {"dora": ["apex-probe", "lab-users"]}  # what the next hub round would set
        for _uid, (p, deleted) in list(svc._deferred.items()):
            await svc.handle_pod(p, deleted=deleted, source="deferred")
        assert svc.ledger.sessions() == []  # dora is in apex-probe: never recorded
        svc.groups["erin"] = ["lab-users"]
        await v1.create_namespaced_pod("apex-u", pod("jupyter-erin", "erin", server="x"))
        [s] = await until(lambda: svc.ledger.sessions())
        assert s["group"] == "lab-users"
        await v1.delete_namespaced_pod("jupyter-erin", "apex-u")
        await until(lambda: svc.ledger.session(s["id"])["stop"])
        with open(reasons, "w") as f:
            for rec in (
                {"event": "warning", "reason": "schedule"},
                {"reason": "idle", "dry_run": True},
                {"reason": "max-age"},
            ):
                f.write(
                    json.dumps(
                        {
                            "event": "stop",
                            "time": datetime.now(UTC).isoformat(),
                            "user": "erin",
                            "server": "x",
                            "started": s["start"].isoformat(),
                            **rec,
                        }
                    )
                    + "\n"
                )
            f.write('{"partial line')
        await svc.read_stop_reasons()
        assert svc.ledger.session(s["id"])["stop_reason"] == "max-age"
        assert [e["kind"] for e in svc.ledger.events(s["id"])] == ["opened", "stopped", "reason"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        svc.ledger.close()
