"""The accounting service: pod watch + hub listing → ledger; stop reasons; quotas; APEL files.

Tasks (one event loop; the database on the threads of :mod:`.worker`, one writer):

* **pod watch** — list pods with :data:`POD_SELECTOR` cluster-wide, record each, close the sessions
  whose pods are gone, then watch from the list's resourceVersion; a watch that ends resumes from the
  last resourceVersion, ``410 Gone`` (or any error) re-lists. Every write is an idempotent upsert
  keyed by the pod uid, so re-lists, restarts and replays never count a session twice.
* **hub round** (every ``interval``) — users and groups from the hub REST API (the group of a pod
  without the ``apex.esa.int/group`` annotation is the user's first group; users in
  ``exclude_groups`` are not recorded); pods waiting for their user's groups; new lines of the
  culler's ``stop-reasons.jsonl``; quota warnings and stops; the heartbeat. The current quota
  warnings (users at ``quota_warn_fraction`` of a budget or over it) are written atomically to
  ``<state_dir>/quota-warnings.json`` for the hub's banner (:mod:`apex_hub.services.announce`).

Restart safety: on start-up the listing records every pod that started while the service was down
(with its real start time); sessions the ledger has open whose pods are gone are closed at the
culler's stop time when it recorded one, else at the service's last heartbeat (the last moment it
is known to have been running: a lower bound), with reason ``external`` and ``estimated: true``.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from ..announce import JSONFile, write_json
from ..common.hub import HubAPIError, HubClient, server_path
from .db import Ledger, Observation, utcnow
from .ingest import (
    GROUP_ANNOTATION,
    POD_SELECTOR,
    StopReasonsFile,
    StopRecord,
    claims,
    matches,
    observation,
    pod_user,
    quantity,
)
from .quota import WARNINGS_FILE, period_since
from .usage import CachedUsage, Miss, UsageCache, naive
from .worker import LedgerWorker

log = logging.getLogger("apex_hub.accounting")

HEARTBEAT = "heartbeat"
MISSING = object()  # a claim size that needs a request


@dataclass
class Stats:
    """Counters for /metrics and tests."""

    pod_events: int = 0
    relists: int = 0
    sessions_opened: int = 0
    sessions_closed: int = 0
    reasons_attached: int = 0
    excluded: int = 0
    deferred: int = 0
    quota_warnings: int = 0
    quota_stops: int = 0
    hub_errors: int = 0
    kube_errors: int = 0
    last_hub_round: datetime | None = None
    last_pod_event: datetime | None = None
    watching: asyncio.Event = field(default_factory=asyncio.Event)


class AccountingService:
    def __init__(
        self,
        ledger: Ledger,
        *,
        hub: HubClient,
        kube: Callable[[], Any],
        stop_reasons: str | Path | None = None,
        exclude_groups: list[str] | tuple[str, ...] = ("apex-probe",),
        interval: float = 60.0,
        watch_timeout: int = 300,
        reason_slack: float = 120.0,
        quotas: Any = None,
        quota_stop: bool = False,
        quota_warn_fraction: float = 0.9,
        state_dir: str | Path = ".",
        clock: Callable[[], datetime] = utcnow,
        ledger_threads: bool = True,
        usage_cache: bool = True,
    ):
        self.ledger, self.hub, self.kube = ledger, hub, kube
        # every ledger call goes through here: one writer thread, reader threads (worker.py);
        # ledger_threads=False runs them on the event loop (the benchmark's baseline)
        self.db = LedgerWorker(getattr(ledger, "url", ""), inline=not ledger_threads)
        self.stop_file = StopReasonsFile(stop_reasons) if stop_reasons else None
        self.exclude_groups = set(exclude_groups)
        self.interval, self.watch_timeout = interval, watch_timeout
        self.slack = timedelta(seconds=reason_slack)
        self.quotas, self.quota_stop, self.quota_warn_fraction = quotas, quota_stop, quota_warn_fraction
        self.clock = clock
        # the quota checks' usage in memory, kept by the writer after each commit (usage.py);
        # usage_cache=False: every check reads the ledger (the benchmark's earlier configurations)
        self.usage: UsageCache | None = None
        if quotas is not None and usage_cache:
            self.usage = UsageCache(ledger, clock)
            ledger.on_usage_change = self.usage.changed
        self._usage_filling: asyncio.Task | None = None
        self.warnings_file = Path(state_dir) / WARNINGS_FILE
        # user -> their current quota warning (QuotaStatus.warning); users without a running server
        # stay here (and are checked again every round) until their usage drops below the fraction
        self.quota_warnings: dict[str, dict] = (
            dict(JSONFile(self.warnings_file).read().get("users") or {}) if quotas is not None else {}
        )
        self.stats = Stats()
        self.groups: dict[str, list[str]] = {}  # user -> JupyterHub groups, from the last hub round
        self.hub_servers: dict[str, dict] = {}  # user -> servers, from the last hub round
        self._deferred: dict[str, tuple[dict, bool]] = {}  # pod uid -> (pod, deleted) waiting for groups
        self._unmatched: list[StopRecord] = []
        self._culler_records: list[StopRecord] = []
        self._pvc_cache: dict[tuple[str, str], int | None] = {}
        self._pvc_forbidden = False
        self._warned: set[str] = set()
        self._stop_requested: set[str] = set()
        self._first_list = True
        self._tasks: list[asyncio.Task] = []

    # ---- pods --------------------------------------------------------------------------

    def _group_for(self, user: str) -> tuple[bool, str | None]:
        """(known, group): whether the hub told us about the user, and their first group."""
        if user not in self.groups:
            return False, None
        groups = [g for g in self.groups[user] if g not in self.exclude_groups]
        return True, (groups[0] if groups else None)

    async def user_groups(self, user: str) -> list[str]:
        """A user's groups straight from the hub (for a user the last round did not list)."""
        model = await self.hub.user(user)
        groups = list((model or {}).get("groups") or [])
        if model is not None:
            self.groups[user] = groups
        return groups

    def excluded(self, user: str) -> bool:
        return bool(self.exclude_groups & set(self.groups.get(user, ())))

    async def _pvc_bytes(self, pod: dict) -> int | None:
        """The pod's claims' requested bytes (None: unknown); sizes not cached yet are read once."""
        known = self._pvc_known(pod)
        if known is not MISSING:
            return known
        ns = (pod.get("metadata") or {}).get("namespace", "")
        for name in claims(pod):
            if (ns, name) in self._pvc_cache:
                continue
            try:
                async with self.kube() as api:
                    resp = await client.CoreV1Api(api).read_namespaced_persistent_volume_claim(
                        name, ns, _preload_content=False
                    )
                    pvc = json.loads(await resp.read())
                size = (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
                self._pvc_cache[(ns, name)] = int(quantity(size)) if size else 0
            except ApiException as exc:
                if exc.status == 403:  # the hub's ClusterRole lacks get on claims: sizes stay unknown
                    log.warning("cannot read claim sizes (%s): Disk is left out of the records", exc.reason)
                    self._pvc_forbidden = True
                return None
            except Exception as exc:
                log.warning("cannot read claim %s/%s: %s", ns, name, exc)
                return None
        return self._pvc_known(pod)

    def _pvc_known(self, pod: dict) -> Any:
        """:meth:`_pvc_bytes` when it needs no request (no claims, sizes cached, or forbidden), else
        :data:`MISSING`."""
        ns = (pod.get("metadata") or {}).get("namespace", "")
        names = claims(pod)
        if not names:
            return 0
        if self._pvc_forbidden:
            return None
        total = 0
        for name in names:
            if (ns, name) not in self._pvc_cache:
                return MISSING
            size = self._pvc_cache[(ns, name)]
            if size is None:
                return None
            total += size
        return total

    async def handle_pod(self, pod: dict, *, deleted: bool = False, source: str = "pod-watch") -> None:
        now = self.clock()
        user = pod_user(pod)
        uid = (pod.get("metadata") or {}).get("uid")
        if not user or not uid:
            return
        has_group = bool(((pod.get("metadata") or {}).get("annotations") or {}).get(GROUP_ANNOTATION))
        known, group = self._group_for(user)
        step = functools.partial(
            self._pod_step,
            pod,
            uid,
            deleted,
            now,
            known,
            self.excluded(user),
            None if has_group else group,
            source,
            self._records_of({user}),
        )
        # one turn on the writer (after the writes before it): the session's row, the decision, the write
        outcome, done = await self.db.write(step, self._pvc_known(pod))
        if outcome == "claims":  # a session without its claims' size, which needs a request first
            outcome, done = await self.db.write(step, await self._pvc_bytes(pod))
        if outcome == "defer":
            # the hub has not told us the user's groups yet (exclusion needs them): wait for the next round
            if uid not in self._deferred:
                self.stats.deferred += 1
                log.info("pod %s of %s waits for the user's groups from the hub", uid, user)
            self._deferred[uid] = (pod, deleted)
            return
        self._deferred.pop(uid, None)
        if outcome == "excluded":
            self.stats.excluded += 1
        elif outcome == "not started":
            log.debug("pod %s of %s: not a started server pod yet", uid, user)
        else:
            obs, written, attached = done
            self._count(obs, written)
            self._attached(attached, self.clock())

    def _pod_step(
        self,
        pod: dict,
        uid: str,
        deleted: bool,
        now: datetime,
        known: bool,
        excluded: bool,
        group: str | None,
        source: str,
        records: list[StopRecord],
        pvc: Any,
    ) -> tuple[str, Any]:
        """(writer thread) What :meth:`handle_pod` does with a pod, given the ledger's row of it:
        ``defer`` (user unknown), ``excluded``, ``claims`` (the size is needed: ``pvc`` is
        :data:`MISSING`), ``not started``, or ``written`` with (observation, events, reasons attached)."""
        existing = self.ledger.session(uid)
        if existing is None and not known:
            return "defer", None
        if existing is None and excluded:
            return "excluded", None
        if existing is None or existing["pvc_bytes"] is None:
            if pvc is MISSING:
                return "claims", None
        else:
            pvc = None
        obs = observation(pod, deleted=deleted, now=now, group=group, pvc_bytes=pvc)
        if obs is None:
            return "not started", None
        results, attached = self._record([obs], source, self.clock(), records, False)
        return "written", (obs, results[0], attached)

    async def handle_pods(self, pods: list[dict], *, source: str) -> None:
        """Many pods (a listing) in one transaction: the sessions the ledger already has and the new
        ones of known, not excluded users (with their claim sizes); pods of unknown or excluded users
        one by one through :meth:`handle_pod` (deferral, exclusion)."""
        now = self.clock()
        ids = [(p.get("metadata") or {}).get("uid") for p in pods]
        have = await self.db.write(self.ledger.known, [i for i in ids if i])
        new: list[Observation] = []
        batch: list[Observation] = []
        for n, (pod, uid) in enumerate(zip(pods, ids)):
            if n % 50 == 49:
                await asyncio.sleep(0)  # thousands of pods: let the loop breathe between slices
            user = pod_user(pod)
            known, group = self._group_for(user or "")
            if not user or not uid or not known or self.excluded(user):
                await self.handle_pod(pod, source=source)  # the careful path: deferral, exclusion
                continue
            has_group = bool(((pod.get("metadata") or {}).get("annotations") or {}).get(GROUP_ANNOTATION))
            if uid in have:
                obs = observation(pod, now=now, group=None if has_group else group)
                if obs is not None:
                    batch.append(obs)
                continue
            self._deferred.pop(uid, None)
            pvc = await self._pvc_bytes(pod)
            obs = observation(pod, now=now, group=None if has_group else group, pvc_bytes=pvc)
            if obs is None:
                log.debug("pod %s of %s: not a started server pod yet", uid, user)
                continue
            new.append(obs)
        # the new sessions first, in listing order, then the known ones: as if one by one
        await self._write(new + batch, source, now=now, many=True)

    async def _write(
        self, items: list[Observation], source: str, *, now: datetime | None = None, many: bool = False
    ) -> None:
        """Record observations on the writer thread; after a session's stop, attach the culler's
        reasons (in the same turn on the writer, as the service did on the loop)."""
        if not items:
            return
        when = now or self.clock()
        records = self._records_of({o.user for o in items})
        results, attached = await self.db.write(self._record, items, source, when, records, many)
        for obs, written in zip(items, results):
            self._count(obs, written)
        self._attached(attached, self.clock())

    def _records_of(self, users: set[str]) -> list[StopRecord]:
        """The culler's records (of the last day) about these users: the ones a stop of their sessions
        can match (all of them would be a ledger query each, per stop: per user-day of work)."""
        return [r for r in self._culler_records if r.user in users]

    def _record(
        self, items: list[Observation], source: str, now: datetime, records: list[StopRecord], many: bool
    ) -> tuple[list[list[str]], int]:
        """(writer thread) ``observe`` each, or ``observe_many`` all; reasons attached after stops."""
        attached = 0
        if many:
            results = self.ledger.observe_many(items, source=source, now=now)
            if any("stopped" in w for w in results):
                attached += self._match_reasons(records, self.clock())[0]
            return results, attached
        results = []
        for obs in items:
            written = self.ledger.observe(obs, source=source, now=now)
            if "stopped" in written:
                attached += self._match_reasons(records, self.clock())[0]
            results.append(written)
        return results, attached

    def _count(self, obs: Observation, written: list[str]) -> None:
        if "opened" in written:
            self.stats.sessions_opened += 1
            log.info("session %s opened: %s/%s profile %s", obs.id, obs.user, obs.server, obs.profile)
        if "stopped" in written:
            self.stats.sessions_closed += 1
            log.info("session %s stopped (%s)", obs.id, obs.stop_reason)

    async def relist(self) -> str:
        """Record every current pod, close sessions whose pods are gone; returns the resourceVersion."""
        self.stats.relists += 1
        async with self.kube() as api:
            resp = await client.CoreV1Api(api).list_pod_for_all_namespaces(
                label_selector=POD_SELECTOR, _preload_content=False
            )
            raw = await resp.read()
        body = await asyncio.to_thread(json.loads, raw)  # thousands of pods: not on the loop
        await self.apply_listing(body.get("items") or [])
        return body.get("metadata", {}).get("resourceVersion", "")

    async def apply_listing(self, pods: list[dict]) -> None:
        """A pod listing's effect on the ledger (:meth:`relist` without the request)."""
        log.info("pod listing: %d server pods", len(pods))
        source = "backfill" if self._first_list else "relist"
        await self.handle_pods(pods, source=source)
        present = {p["metadata"]["uid"] for p in pods}
        now = self.clock()
        heartbeat, running = await self.db.write(
            lambda: (self.ledger.get_state(HEARTBEAT), self.ledger.open_sessions())
        )
        gone = []
        for s in running:
            if s["id"] in present:
                continue
            rec = self._best_record(s)
            if rec is not None:
                stop, reason, detail = rec.time, rec.reason, {"estimated": True, "from": "culler"}
            elif self._first_list and heartbeat:
                stop, reason, detail = (
                    max(datetime.fromisoformat(heartbeat), s["start"]),
                    "external",
                    {"estimated": True, "from": "last heartbeat"},
                )
            else:
                stop, reason, detail = now, "external", {"estimated": True, "from": "relist"}
            gone.append(
                Observation(
                    id=s["id"], user=s["user"], start=s["start"], stop=stop, stop_reason=reason, detail=detail
                )
            )
        await self._write(gone, source)
        self._first_list = False

    async def watch_pods(self) -> None:
        """List + watch forever; re-list on 410 and errors (idempotent)."""
        backoff = 1.0
        while True:
            try:
                rv = await self.relist()
                self.stats.watching.set()
                backoff = 1.0
                while True:
                    async with self.kube() as api:
                        w = watch.Watch()
                        async with w.stream(
                            client.CoreV1Api(api).list_pod_for_all_namespaces,
                            label_selector=POD_SELECTOR,
                            resource_version=rv,
                            allow_watch_bookmarks=True,
                            timeout_seconds=self.watch_timeout,
                        ) as s:
                            async for ev in s:
                                raw = ev["raw_object"]
                                rv = (raw.get("metadata") or {}).get("resourceVersion") or rv
                                if ev["type"] == "BOOKMARK":
                                    continue
                                self.stats.pod_events += 1
                                self.stats.last_pod_event = self.clock()
                                await self.handle_pod(raw, deleted=ev["type"] == "DELETED")
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                self.stats.watching.clear()
                if exc.status == 410:
                    log.info("pod watch expired (410 Gone): re-listing")
                    continue
                self.stats.kube_errors += 1
                log.warning("pod watch failed: %s; re-listing in %.0fs", exc, backoff)
            except Exception as exc:
                self.stats.watching.clear()
                self.stats.kube_errors += 1
                log.warning("pod watch failed: %r; re-listing in %.0fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    # ---- stop reasons ------------------------------------------------------------------

    def _best_record(self, session: dict) -> StopRecord | None:
        cands = [r for r in self._culler_records if matches(r, session, self.slack)]
        if not cands:
            return None
        return min(cands, key=lambda r: abs((r.started or r.time) - session["start"]).total_seconds())

    async def read_stop_reasons(self) -> None:
        if self.stop_file is None:
            return
        new = await self.db.write(self.stop_file.read_new)
        self._culler_records += new
        await self._attach_reasons(new + self._unmatched)

    async def _attach_reasons(self, records: list[StopRecord]) -> None:
        now = self.clock()
        attached, unmatched = await self.db.write(self._match_reasons, list(records), now)
        self._unmatched = unmatched
        self._attached(attached, now)

    def _attached(self, attached: int, now: datetime) -> None:
        self.stats.reasons_attached += attached
        # bound memory: keep the last day of records for matching
        self._culler_records = [r for r in self._culler_records if now - r.time < timedelta(days=1)]

    def _match_reasons(self, records: list[StopRecord], now: datetime) -> tuple[int, list[StopRecord]]:
        """(writer thread) Attach each record's reason to its session; (attached, still unmatched)."""
        attached, unmatched = 0, []
        for rec in records:
            sessions = [
                s
                for s in self.ledger.sessions(
                    user=rec.user, since=rec.time - self.slack, until=rec.time + self.slack
                )
                if matches(rec, s, self.slack)
            ]
            if not sessions:
                if now - rec.time < timedelta(days=1):
                    unmatched.append(rec)
                continue
            best = min(sessions, key=lambda s: abs((rec.started or rec.time) - s["start"]).total_seconds())
            if self.ledger.set_reason(best["id"], rec.reason, source="culler", detail={"detail": rec.detail}):
                attached += 1
        return attached, unmatched

    # ---- hub round ---------------------------------------------------------------------

    async def hub_round(self) -> None:
        try:
            users = await self.hub.users()
        except Exception as exc:
            self.stats.hub_errors += 1
            log.warning("hub listing failed: %s", exc)
            users = None
        if users is not None:
            self.groups = {u["name"]: list(u.get("groups") or []) for u in users}
            self.hub_servers = {u["name"]: u.get("servers") or {} for u in users}
            for _uid, (pod, deleted) in list(self._deferred.items()):
                await self.handle_pod(pod, deleted=deleted, source="deferred")
        await self.read_stop_reasons()
        if self.quotas is not None and users is not None:
            await self.enforce_quotas()
        await self.db.write(self.ledger.set_state, HEARTBEAT, self.clock().isoformat())
        self.stats.last_hub_round = self.clock()

    async def hub_loop(self) -> None:
        while True:
            try:
                await self.hub_round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("accounting round failed: %s", exc)
            await asyncio.sleep(self.interval)

    # ---- quotas ------------------------------------------------------------------------

    async def fill_usage(self, now: datetime | None = None) -> None:
        """Read this period's sessions into the usage cache (on the writer, in order with the writes)."""
        if self.usage is None:
            return
        now = now or self.clock()
        await self.db.write(self.usage.fill, period_since(now, self.quotas.period), now)

    def _usage_for(self, now: datetime) -> None:
        """A new period (or a cache not filled yet): fill the cache in the background; meanwhile the
        checks read the ledger."""
        if self.usage is None or self.usage.since == naive(period_since(now, self.quotas.period)):
            return
        if self._usage_filling is None or self._usage_filling.done():
            self._usage_filling = asyncio.create_task(self.fill_usage(now), name="usage-fill")

    async def quota_check(self, user: str, groups: list[str]) -> Any:
        """The pre-spawn check: from the usage cache on the loop (no database, no thread), else on a
        reader thread from the ledger. The same answer either way."""
        now = self.clock()
        if self.usage is not None:
            self._usage_for(now)
            try:
                return self.quotas.check(CachedUsage(self.usage), user, groups, now=now)
            except Miss:
                pass
        return await self.db.read(self.quotas.check, self.ledger, user, groups, now=now)

    async def enforce_quotas(self) -> None:
        """Warn (log + event + quota-warnings.json) at ``quota_warn_fraction`` of a budget; stop (reason
        ``quota``) when over. The budgets are read on a reader thread, each group's usage once."""
        now = self.clock()
        running = await self.db.read(self.ledger.open_sessions)
        # warned / stop requested are per session: a closed session's id is never seen again
        open_ids = {s["id"] for s in running}
        self._warned &= open_ids
        self._stop_requested &= open_ids
        mine: dict[str, list[dict]] = {}
        for s in running:
            mine.setdefault(s["user"], []).append(s)
        users = sorted(set(mine) | set(self.quota_warnings))
        ledger: Any = self.ledger
        if self.usage is not None:
            self._usage_for(now)
            ledger = CachedUsage(self.usage, self.ledger)
        statuses = await self.db.read(
            self.quotas.check_many, ledger, {u: self.groups.get(u, []) for u in users}, now=now
        )
        warnings: dict[str, dict] = {}
        for user in users:
            status = statuses[user]
            if status is None:
                continue
            warning = status.warning(self.quota_warn_fraction, stop=self.quota_stop)
            if warning is not None:
                warnings[user] = warning
            if not status.allowed:
                if not self.quota_stop:
                    continue
                for s in mine.get(user, []):
                    await self._quota_stop(s, status)
            elif status.fraction >= self.quota_warn_fraction:
                for s in mine.get(user, []):
                    if s["id"] not in self._warned:
                        self._warned.add(s["id"])
                        self.stats.quota_warnings += 1
                        log.warning("quota warning for %s: %s", user, status.message)
                        await self.db.write(
                            self.ledger.add_event,
                            s["id"],
                            "quota-warning",
                            source="quota",
                            data=status.as_dict(),
                        )
        self.quota_warnings = warnings
        data = {"time": now.isoformat(), "warn_fraction": self.quota_warn_fraction, "users": warnings}
        try:
            await self.db.write(self._write_warnings, data)
        except OSError as exc:  # the banner stays as it was; the ledger events are written
            log.error("cannot write %s: %s", self.warnings_file, exc)

    def _write_warnings(self, data: dict) -> None:
        self.warnings_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.warnings_file, data)

    async def _quota_stop(self, session: dict, status: Any) -> None:
        """Record the decision once, then ask the hub to stop the server until it has accepted."""
        if session["id"] in self._stop_requested:
            return
        if session["stop_reason"] != "quota":
            log.warning("stopping %s/%s: %s", session["user"], session["server"], status.message)
            await self.db.write(self._record_quota_stop, session["id"], status.message, status.as_dict())
            self.stats.quota_stops += 1
        try:
            await self.hub.request("DELETE", server_path(session["user"], session["server"]))
        except HubAPIError as exc:
            if exc.status != 404:  # 404: already gone
                log.error("cannot stop %s/%s (next round again): %s", session["user"], session["server"], exc)
                return
        except Exception as exc:
            log.error("cannot stop %s/%s (next round again): %s", session["user"], session["server"], exc)
            return
        self._stop_requested.add(session["id"])

    def _record_quota_stop(self, session_id: str, message: str, status: dict) -> None:
        self.ledger.set_reason(session_id, "quota", source="quota", detail={"detail": message})
        self.ledger.add_event(session_id, "quota-stop", source="quota", data=status)

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        # what is alive now (modules, SQLAlchemy's and tornado's objects, the application) lives as long
        # as the process: out of the collector's sight, a full collection no longer stops the loop for
        # a quarter of a second on a busy machine (benchmarks/accounting_loop.py)
        await self.fill_usage()  # first: the period's sessions are frozen with the rest
        gc.freeze()
        await self.hub_round()  # groups first, so the first listing needs no deferral
        self._tasks = [
            asyncio.create_task(self.watch_pods(), name="pod-watch"),
            asyncio.create_task(self._hub_loop_after_first(), name="hub-loop"),
        ]

    async def _hub_loop_after_first(self) -> None:
        await asyncio.sleep(self.interval)
        await self.hub_loop()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        await self.hub.close()
        await asyncio.get_running_loop().run_in_executor(None, self.db.close)  # what was submitted, then end


def kube_factory(config_file: str | None = None, host: str | None = None) -> Callable[[], Any]:
    """A callable returning a fresh ``ApiClient`` context (kubeconfig, in-cluster, or a host URL)."""
    from kubernetes_asyncio import config

    loaded: dict[str, Any] = {}

    async def _configuration() -> client.Configuration:
        if "cfg" not in loaded:
            cfg = client.Configuration()
            if host:
                cfg.host = host
            else:
                try:
                    config.load_incluster_config(client_configuration=cfg)
                except config.ConfigException:
                    await config.load_kube_config(config_file=config_file, client_configuration=cfg)
            loaded["cfg"] = cfg
        return loaded["cfg"]

    class _Ctx:
        async def __aenter__(self):
            self.api = client.ApiClient(await _configuration())
            return self.api

        async def __aexit__(self, *exc):
            await self.api.close()

    return _Ctx
