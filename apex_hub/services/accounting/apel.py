"""APEL cloud usage records, message format v0.4, for an SSM sender.

One record per *stopped* server session (``Status: completed``), records separated by ``%%``,
at most ``batch`` (default 1000) records per message file, each file starting with the header
``APEL-cloud-message: v0.4``. Files are written atomically (temporary name, then rename) into the
directory that ``ssmsend`` sends from (SSM ``path_type: directory``), named
``<UTC time>-<random>-<n>.apel``. Exported sessions are remembered in the ``apel_exports`` table, so running
the export again writes only new sessions; should the service die between writing a file and
recording it, the next export writes those sessions again (at least once, never lost); a repeat carries
the same ``VMUUID``, which the APEL repository uses to replace the earlier record of that VM.

Fields, in the v0.4 order (APEL's ``CloudRecord``), and what we put in them:

=====================  ==================================================================
VMUUID                 the pod uid (the session id)
SiteName               ``site_name`` (GOCDB site)
CloudComputeService    ``cloud_compute_service`` (omitted when empty)
MachineName            ``<namespace>/<pod>``
LocalUserId            the JupyterHub user name
LocalGroupId           the session's group (omitted when none)
GlobalUserName         the JupyterHub user name (the IdP subject when the authenticator makes it the name)
FQAN                   ``/<group>/Role=NULL/Capability=NULL`` (``None`` without a group)
Status                 ``completed``
StartTime, EndTime     epoch seconds (UTC), integers
SuspendDuration        0 (servers are never suspended)
WallDuration           seconds, integer
CpuDuration            seconds: requested cores × WallDuration (requested, not measured CPU time)
CpuCount               requested cores rounded up
PublicIPCount          0 (servers are reached through the hub's proxy)
Memory                 requested memory in MB (MiB, 2²⁰ bytes), rounded
Disk                   workspace claims' requested size in GB (10⁹ bytes), rounded up; omitted if unknown
BenchmarkType,         ``benchmark_type`` / ``benchmark`` when configured (e.g. HEPSPEC 10.0), else omitted
Benchmark
ImageId                the container image
CloudType              ``cloud_type`` (default ``apex-hub``)
=====================  ==================================================================

Not measured and therefore left out (APEL treats a missing field as NULL): ``NetworkType``,
``NetworkInbound``, ``NetworkOutbound``, ``StorageRecordId``.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .db import Ledger, utcnow

HEADER = "APEL-cloud-message: v0.4"
SEPARATOR = "%%"
FIELDS = (
    "VMUUID",
    "SiteName",
    "CloudComputeService",
    "MachineName",
    "LocalUserId",
    "LocalGroupId",
    "GlobalUserName",
    "FQAN",
    "Status",
    "StartTime",
    "EndTime",
    "SuspendDuration",
    "WallDuration",
    "CpuDuration",
    "CpuCount",
    "NetworkType",
    "NetworkInbound",
    "NetworkOutbound",
    "PublicIPCount",
    "Memory",
    "Disk",
    "BenchmarkType",
    "Benchmark",
    "StorageRecordId",
    "ImageId",
    "CloudType",
)


@dataclass
class ApelSettings:
    directory: str
    site_name: str
    cloud_compute_service: str = ""
    cloud_type: str = "apex-hub"
    benchmark_type: str = ""
    benchmark: float | None = None
    batch: int = 1000


def record(s: dict, cfg: ApelSettings) -> dict[str, str]:
    """The APEL fields of one stopped session (only the fields we know)."""
    start, stop = int(s["start"].timestamp()), int(s["stop"].timestamp())
    wall = max(stop - start, 0)
    group = s.get("group")
    rec = {
        "VMUUID": s["id"],
        "SiteName": cfg.site_name,
        "CloudComputeService": cfg.cloud_compute_service,
        "MachineName": f"{s['namespace']}/{s['pod']}",
        "LocalUserId": s["user"],
        "LocalGroupId": group or "",
        "GlobalUserName": s["user"],
        "FQAN": f"/{group}/Role=NULL/Capability=NULL" if group else "None",
        "Status": "completed",
        "StartTime": str(start),
        "EndTime": str(stop),
        "SuspendDuration": "0",
        "WallDuration": str(wall),
        "CpuDuration": str(round(s["cpu"] * wall)),
        "CpuCount": str(math.ceil(s["cpu"])),
        "PublicIPCount": "0",
        "Memory": str(round(s["memory_bytes"] / 2**20)),
        "Disk": "" if s.get("pvc_bytes") is None else str(math.ceil(s["pvc_bytes"] / 10**9)),
        "BenchmarkType": cfg.benchmark_type if cfg.benchmark is not None else "",
        "Benchmark": "" if cfg.benchmark is None else repr(float(cfg.benchmark)),
        "ImageId": s["image"],
        "CloudType": cfg.cloud_type,
    }
    return {k: rec[k] for k in FIELDS if rec.get(k, "") != ""}


def message(records: list[dict[str, str]]) -> str:
    body = f"\n{SEPARATOR}\n".join("\n".join(f"{k}: {v}" for k, v in r.items()) for r in records)
    return f"{HEADER}\n{body}\n{SEPARATOR}\n"


def parse(text: str) -> list[dict[str, str]]:
    """Records from a message (for tests and for checking files by hand)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER:
        raise ValueError(f"not an APEL cloud v0.4 message (first line {lines[:1]!r})")
    out, cur = [], {}
    for line in lines[1:]:
        if line.strip() == SEPARATOR:
            if cur:
                out.append(cur)
            cur = {}
        elif line.strip():
            key, _, value = line.partition(": ")
            cur[key] = value
    if cur:
        out.append(cur)
    return out


def export(
    ledger: Ledger, cfg: ApelSettings, now: datetime | None = None, limit: int | None = None
) -> list[Path]:
    """Write every stopped, not yet exported session (at most ``limit``); returns the files written."""
    now = now or utcnow()
    directory = Path(cfg.directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    after, done = "", 0
    while limit is None or done < limit:
        sessions = ledger.unexported(limit=min(cfg.batch, limit - done) if limit else cfg.batch, after=after)
        if not sessions:
            break
        name = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:12]}-{len(written) + 1}.apel"  # never overwrites
        tmp = directory / f".{name}.tmp"
        tmp.write_text(message([record(s, cfg) for s in sessions]), encoding="utf-8")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
        ledger.mark_exported([s["id"] for s in sessions], name, now)
        written.append(directory / name)
        after, done = sessions[-1]["id"], done + len(sessions)
    return written
