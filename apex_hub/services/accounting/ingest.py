"""From Kubernetes pods and the culler's stop reasons to ledger observations (pure functions).

A pod is an APEx server session when it carries ``component=singleuser-server`` (KubeSpawner's
server pods) and ``app.kubernetes.io/part-of=apex-workspace`` plus an ``apex.esa.int/user`` label
(APExSpawner's ownership labels): exact label matches, never name prefixes. (Pods also carry
``app.kubernetes.io/managed-by=apex-hub``, but an operator may change KubeSpawner's
``common_labels``, so that label is not relied on.) The session's id is the
pod uid; the user is the ``apex.esa.int/username`` annotation (KubeSpawner's
``hub.jupyter.org/username`` as a fallback), the server name KubeSpawner's
``hub.jupyter.org/servername`` annotation ("" for the default server), the group the
``apex.esa.int/group`` annotation when present.

Times: a session starts at the pod's ``status.startTime`` (the kubelet accepted it: from then on
its requests are reserved on a node); pods deleted before that are not sessions. It stops at the
deletion request (when the watch sees ``deletionTimestamp`` appear; at the latest the
``deletionTimestamp``), or when its containers terminated (phase Succeeded/Failed), or — for a
DELETED event without either — when we saw it go.
Requested resources are the sum over the pod's containers of ``requests`` (``limits`` when a
container has no request), so they are what the scheduler reserved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from ...spawner import labels as L
from ..common.units import quantity
from .db import Observation

COMPONENT = "component"
SINGLEUSER = "singleuser-server"
POD_SELECTOR = f"{COMPONENT}={SINGLEUSER},{L.PART_OF}=apex-workspace,{L.USER}"
GROUP_ANNOTATION = L.GROUP_ANNOTATION  # the primary group, set by APExSpawner
SERVERNAME_ANNOTATION = "hub.jupyter.org/servername"
HUB_USERNAME_ANNOTATION = "hub.jupyter.org/username"
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def is_session_pod(pod: dict) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return (
        labels.get(COMPONENT) == SINGLEUSER
        and labels.get(L.PART_OF) == "apex-workspace"
        and bool(labels.get(L.USER))
    )


def pod_user(pod: dict) -> str | None:
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    return ann.get(L.USERNAME_ANNOTATION) or ann.get(HUB_USERNAME_ANNOTATION)


def requested(pod: dict) -> tuple[float, int, float]:
    """(CPU cores, memory bytes, GPUs) requested by the pod's containers."""
    cpu = mem = gpu = Decimal(0)
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}

        def pick(key, req=req, lim=lim):
            return quantity(req.get(key, lim.get(key)))

        cpu += pick("cpu")
        mem += pick("memory")
        gpu += sum(
            (pick(k) for k in set(req) | set(lim) if k in GPU_RESOURCES or k.endswith("/gpu")), Decimal(0)
        )
    return float(cpu), int(mem), float(gpu)


def claims(pod: dict) -> list[str]:
    return [
        v["persistentVolumeClaim"]["claimName"]
        for v in (pod.get("spec") or {}).get("volumes") or []
        if v.get("persistentVolumeClaim")
    ]


def stop_time(pod: dict, *, deleted: bool, now: datetime) -> tuple[datetime | None, str | None]:
    """When the session ended and the provisional reason (``user``: the hub deleted the pod;
    ``external``: it ended by itself), or (None, None) while it runs."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        # Kubernetes sets deletionTimestamp to the request time + the grace period: seen live, "now" is
        # the request time (to within the watch latency); seen later, the deletionTimestamp bounds it
        return min(parse_time(meta["deletionTimestamp"]), now), "user"
    if status.get("phase") in ("Succeeded", "Failed"):
        ends = [
            parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
            for cs in status.get("containerStatuses") or []
        ]
        ends = [e for e in ends if e]
        return (max(ends) if ends else now), "external"
    if deleted:
        return now, "external"
    return None, None


def observation(
    pod: dict, *, deleted: bool = False, now: datetime, group: str | None = None, pvc_bytes: int | None = None
) -> Observation | None:
    """The session a pod is, or None (not ours, or never started)."""
    if not is_session_pod(pod):
        return None
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    user = pod_user(pod)
    start = parse_time(status.get("startTime"))
    if not user or start is None:
        return None
    labels, ann = meta.get("labels") or {}, meta.get("annotations") or {}
    containers = spec.get("containers") or [{}]
    main = next((c for c in containers if c.get("name") == "notebook"), containers[0])
    cpu, mem, gpu = requested(pod)
    stop, reason = stop_time(pod, deleted=deleted, now=now)
    return Observation(
        id=meta["uid"],
        user=user,
        user_slug=labels.get(L.USER, ""),
        server=ann.get(SERVERNAME_ANNOTATION, ""),
        namespace=meta.get("namespace", ""),
        pod=meta.get("name", ""),
        group=ann.get(GROUP_ANNOTATION) or group,
        profile=labels.get(L.PROFILE, ""),
        image=main.get("image", ""),
        cpu=cpu,
        memory_bytes=mem,
        gpu=gpu,
        pvc_bytes=pvc_bytes,
        start=start,
        stop=stop,
        stop_reason=reason,
        detail={"phase": status.get("phase")} if stop else {},
    )


# ---- the culler's stop reasons ----------------------------------------------------------


@dataclass
class StopRecord:
    user: str
    server: str
    time: datetime
    reason: str
    started: datetime | None
    detail: str = ""


class StopReasonsFile:
    """Reads ``stop-reasons.jsonl`` incrementally (complete lines only; dry-run lines skipped).

    Follows the culler's rotation (the file renamed to ``stop-reasons.jsonl.1`` and a new one
    begun: the rest of the old file is read first, then the new one from its start) and a file
    truncated or replaced by hand (read again from the start).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rotated = self.path.with_name(self.path.name + ".1")
        self.offset = 0
        self._inode: int | None = None

    def read_new(self) -> list[StopRecord]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        data = b""
        if self._inode is not None and stat.st_ino != self._inode:
            try:  # rotated: finish the old file, if it is the rotated one
                if self.rotated.stat().st_ino == self._inode:
                    data = self._read(self.rotated, self.offset, whole_lines=False)
            except FileNotFoundError:
                pass
            self.offset = 0
        elif stat.st_size < self.offset:  # truncated in place
            self.offset = 0
        self._inode = stat.st_ino
        new = self._read(self.path, self.offset)
        self.offset += len(new)
        return self._parse(data + new)

    @staticmethod
    def _read(path: Path, offset: int, whole_lines: bool = True) -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        if not whole_lines:
            return data if data.endswith(b"\n") or not data else data + b"\n"
        return data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next read

    @staticmethod
    def _parse(data: bytes) -> list[StopRecord]:
        out = []
        for line in data.splitlines():
            try:
                rec = json.loads(line)
                if rec.get("dry_run") or rec.get("event", "stop") != "stop":
                    continue  # would-be stops, warnings, restart give-ups
                out.append(
                    StopRecord(
                        rec["user"],
                        rec.get("server") or "",
                        parse_time(rec["time"]),
                        rec["reason"],
                        parse_time(rec.get("started")),
                        rec.get("detail") or "",
                    )
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        return out


def matches(rec: StopRecord, session: dict, slack: timedelta) -> bool:
    """The culler's record is about this session: same user and server, stopped inside its window."""
    if rec.user != session["user"] or rec.server != session["server"]:
        return False
    if rec.time < session["start"] - slack:
        return False
    return session["stop"] is None or rec.time <= session["stop"] + slack
