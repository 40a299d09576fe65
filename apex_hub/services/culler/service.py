"""The culler loop: list servers once, decide, stop, restart, record reasons.

One round is one paged listing of the users (``GET /users``, JupyterHub's pagination, each page
retried on its own) and, for each server to stop, one ``DELETE`` whose answer confirms the stop
(:meth:`CullerService._stop`). Every decision — per-profile / per-group idle timeouts, max ages,
schedules, session modes — is made by :func:`decide` with our injectable clock from that listing; the
checks jupyterhub-idle-culler makes before a stop (no pending action, the server ready) are part of it.

Every stop is appended to ``<state_dir>/stop-reasons.jsonl`` once it is confirmed (the server is
gone or pending stop): ``{"time", "user", "server", "profile", "reason", "detail", "dry_run",
"started", "last_activity", "policy"}``. Dry-run records would-be stops (``"dry_run": true``), once
per server session. Servers that we saw running and that stopped without us are recorded with
reason ``external`` (stopped by the user, an admin or a crash).

The same ledger holds two other kinds of lines, told apart by ``"event"`` (``"stop"`` on stop lines):
``"warning"`` — a schedule or max-age stop is due within ``warn_before`` (once per server session and
stop time) — and ``"restart-limit"`` — the always-on restart rate limit gave up on a server (see
:mod:`.restarts`). The upcoming stops are also written to ``<state_dir>/upcoming.json`` (for the
hub-page banner, :mod:`.announce`) and served at ``/services/<name>/api/upcoming`` (:mod:`.web`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...profiles.catalogue import CatalogueFile
from ...profiles.errors import CatalogueError
from ..announce import write_json
from ..common.hub import HubAPIError, HubClient, server_path
from .announce import UPCOMING_FILE
from .decide import Decision, decide, server_profile, upcoming_stops
from .policy import CullingPolicy
from .restarts import RestartLimiter

log = logging.getLogger("apex_hub.culler")

STOP_REASONS_FILE = "stop-reasons.jsonl"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Candidate:
    user: str
    name: str
    server: dict
    groups: list[str]
    decision: Decision

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.user, self.name, self.server.get("started"))


@dataclass
class Report:
    """What one iteration did (for tests and logs)."""

    decisions: list[Candidate] = field(default_factory=list)
    stopped: list[Candidate] = field(default_factory=list)
    would_stop: list[Candidate] = field(default_factory=list)
    restarted: list[Candidate] = field(default_factory=list)
    held_back: list[Candidate] = field(default_factory=list)  # restarts the rate limit put off
    external: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class StopLog:
    """Append-only JSON lines: one object per stop (``"event": "stop"``), warning or restart give-up.

    Why bounded: the culler runs for months. The file is rotated once it passes ``max_bytes``
    (renamed to ``stop-reasons.jsonl.1``, replacing the previous one; the accounting service's
    reader follows the rename), and the keys remembered against double records are those of the
    last ``max_keys`` records (a server's stop or warning is repeated, if ever, within a few rounds;
    10,000 records are days of a 2,000-user hub), read back from both files at start.
    """

    ROTATED_SUFFIX = ".1"

    def __init__(self, state_dir: str | Path, max_bytes: int = 16 * 1024 * 1024, max_keys: int = 10_000):
        self.path = Path(state_dir) / STOP_REASONS_FILE
        self.rotated = self.path.with_name(self.path.name + self.ROTATED_SUFFIX)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_keys = max_bytes, max_keys
        self._recent: dict[tuple, None] = {}  # insertion-ordered: the oldest first
        for path in (self.rotated, self.path):
            self._read_keys(path)

    def _read_keys(self, path: Path) -> None:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    self._remember(self._key(json.loads(line)))
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue

    def _remember(self, key: tuple) -> None:
        self._recent.pop(key, None)
        self._recent[key] = None
        while len(self._recent) > self.max_keys:
            del self._recent[next(iter(self._recent))]

    def _known(self, key: tuple) -> bool:
        return key in self._recent

    def seen(self, user: str, server: str, started: str | None, dry_run: bool) -> bool:
        return self._known((user, server, started, dry_run))

    def has(self, record: dict) -> bool:
        """Whether the ledger already holds this record (a stop of that session, that warning, ...)."""
        return self._known(self._key({"event": "stop", **record}))

    def __len__(self) -> int:
        """How many records' keys are remembered (at most ``max_keys``)."""
        return len(self._recent)

    @staticmethod
    def _key(rec: dict) -> tuple:
        event = rec.get("event", "stop")
        key = (rec["user"], rec["server"], rec.get("started"), bool(rec.get("dry_run")))
        if event == "stop":
            return key
        if event == "warning":
            return (event, *key, rec.get("reason"), rec.get("at"))
        return (event, *key, rec.get("time"))

    def append(self, record: dict) -> None:
        record = {"event": "stop", **record}
        key = self._key(record)
        if self._known(key):
            return
        line = json.dumps(record, sort_keys=True) + "\n"
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(line) > self.max_bytes:
            self._rotate()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._remember(key)

    def _rotate(self) -> None:
        os.replace(self.path, self.rotated)  # atomic: a reader sees the old file or the new one
        log.info("stop log rotated: %s -> %s", self.path, self.rotated)


class CullerService:
    def __init__(
        self,
        policy: CullingPolicy,
        *,
        api_url: str | None = None,
        api_token: str | None = None,
        state_dir: str | Path = ".",
        interval: float = 60.0,
        dry_run: bool = False,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        tries: int = 5,
        backoff: float = 1.0,
        concurrency: int = 10,
        page_size: int = 0,
        catalogue: str | os.PathLike | CatalogueFile | None = None,
        warn_before: float = 0.0,
        restarts: RestartLimiter | None = None,
        service_url: str | None = None,
        service_prefix: str = "/",
        bind: str | None = None,
    ):
        self.policy = policy
        if catalogue is not None and not isinstance(catalogue, CatalogueFile):
            catalogue = CatalogueFile(catalogue, log)
            catalogue.current()  # raises CatalogueError when it cannot be read at start
        self.catalogue: CatalogueFile | None = catalogue
        self.warn_before = warn_before
        self.restarts = restarts or RestartLimiter()
        self.service_url, self.service_prefix, self.bind = service_url, service_prefix, bind
        self.state_dir = Path(state_dir)
        self._upcoming: dict[str, list[dict]] = {}
        self._upcoming_time: datetime | None = None
        self.api_url = (api_url or os.environ["JUPYTERHUB_API_URL"]).rstrip("/")
        self.api_token = api_token or os.environ["JUPYTERHUB_API_TOKEN"]
        self.interval, self.dry_run, self.clock, self.sleep = interval, dry_run, clock, sleep
        self.tries, self.backoff, self.concurrency, self.page_size = tries, backoff, concurrency, page_size
        self.hub = HubClient(
            self.api_url,
            self.api_token,
            tries=tries,
            backoff=backoff,
            sleep=sleep,
            page_size=page_size,
            logger=log,
        )
        self.stop_log = StopLog(state_dir)
        self._running: dict[tuple, dict] = {}  # servers seen running last iteration -> info
        self._stopped_by_us: set[tuple] = set()

    async def close(self) -> None:
        await self.hub.close()

    # ---- the profiles catalogue --------------------------------------------------------

    def _catalogue_modes(self) -> tuple[dict[str, str], Any]:
        """{slug: session_mode} for the profiles whose session_mode the catalogue sets, and the
        catalogue (the last good version; None without one)."""
        if self.catalogue is None:
            return {}, None
        try:
            cat = self.catalogue.current()
        except CatalogueError as exc:
            log.error("profiles catalogue: %s", exc)
            return {}, None
        return {p.slug: p.session_mode for p in cat.profiles if "session_mode" in p.model_fields_set}, cat

    @staticmethod
    def _catalogue_mode(modes: dict, cat: Any, server: dict, groups: list[str]) -> str | None:
        if not modes:
            return None
        slug = server_profile(server)
        if not slug and cat is not None:  # no profile asked for: the user's default profile
            default = cat.default_for(groups)
            slug = default.slug if default else None
        return modes.get(slug) if slug else None

    # ---- upcoming stops and warnings ---------------------------------------------------

    def upcoming_for(self, user: str) -> dict:
        return {
            "user": user,
            "now": self._upcoming_time.isoformat() if self._upcoming_time else None,
            "warn_before": self.warn_before,
            "servers": self._upcoming.get(user, []),
        }

    def _note_upcoming(self, cand: Candidate, now: datetime, upcoming: dict) -> None:
        if cand.decision.action != "keep" or cand.decision.policy is None:
            return
        stops = upcoming_stops(cand.server, now, cand.decision.policy)
        if not stops:
            return
        entries = []
        for stop in stops:
            due = (stop.at - now).total_seconds()
            warning = (
                bool(self.warn_before) and due <= self.warn_before and stop.reason in ("schedule", "max-age")
            )
            entries.append(
                {
                    "reason": stop.reason,
                    "at": stop.at.isoformat(),
                    "timezone": stop.timezone,
                    "detail": stop.detail,
                    "warning": warning,
                }
            )
            if warning:
                rec = {
                    "event": "warning",
                    "time": now.isoformat(),
                    "user": cand.user,
                    "server": cand.name,
                    "profile": cand.decision.profile,
                    "reason": stop.reason,
                    "at": stop.at.isoformat(),
                    "detail": f"{stop.detail}: stop due in {int(due)}s",
                    "dry_run": cand.decision.dry_run,
                    "started": cand.server.get("started"),
                    "groups": cand.groups,
                    "policy": list(cand.decision.policy.sources),
                }
                if not self.stop_log.has(rec):
                    log.warning(
                        "warning %s/%s: %s stop at %s (%s)",
                        cand.user,
                        cand.name,
                        stop.reason,
                        stop.at.isoformat(),
                        stop.detail,
                    )
                    self.stop_log.append(rec)
        upcoming.setdefault(cand.user, []).append(
            {"server": cand.name, "profile": cand.decision.profile, "stops": entries}
        )

    def _write_upcoming(self, now: datetime, upcoming: dict) -> None:
        self._upcoming, self._upcoming_time = upcoming, now
        # atomic: the hub reads it for the banner
        write_json(
            self.state_dir / UPCOMING_FILE,
            {"time": now.isoformat(), "warn_before": self.warn_before, "users": upcoming},
        )

    # ---- one iteration ----------------------------------------------------------------

    async def run_once(self) -> Report:
        report = Report()
        now = self.clock()
        modes, cat = self._catalogue_modes()
        may_restart = self.policy.may_restart or "always-on" in modes.values()
        params = {"include_stopped_servers": "1"} if may_restart else {"state": "active"}
        users = await self.hub.users(**params)
        running: dict[tuple, dict] = {}
        for user in users:
            groups = user.get("groups") or []
            for name, server in (user.get("servers") or {}).items():
                dec = decide(
                    server, groups, now, self.policy, self._catalogue_mode(modes, cat, server, groups)
                )
                if self.dry_run and not dec.dry_run:
                    dec = Decision(dec.action, dec.reason, dec.detail, dec.profile, True, dec.policy)
                cand = Candidate(user["name"], name, server, groups, dec)
                report.decisions.append(cand)
                if not server.get("stopped") and server.get("started"):
                    running[cand.key] = {"profile": dec.profile, "last_activity": server.get("last_activity")}
                    if server.get("ready"):
                        self.restarts.seen_running((cand.user, cand.name))
        self._record_external(now, running, report)
        self._running = running
        # a server stopped by us that is gone has just been told apart from an external stop:
        # only the ones still running (stopped this round or slow to stop) are needed again
        self._stopped_by_us &= set(running)
        upcoming: dict[str, list[dict]] = {}
        for cand in report.decisions:
            self._note_upcoming(cand, now, upcoming)
        self._write_upcoming(now, upcoming)

        stops = [c for c in report.decisions if c.decision.action == "stop"]
        for cand in stops:
            log.info(
                "%s %s/%s (profile %s): %s — %s",
                "would stop" if cand.decision.dry_run else "stopping",
                cand.user,
                cand.name,
                cand.decision.profile,
                cand.decision.reason,
                cand.decision.detail,
            )
            if cand.decision.dry_run:
                report.would_stop.append(cand)
                self._record(cand, now)
        real = [c for c in stops if not c.decision.dry_run]
        if real:
            await self._stop(real, now, report)
        for cand in report.decisions:
            if cand.decision.action == "restart":
                await self._restart(cand, report, now)
        self.restarts.prune(now)
        return report

    def _record(self, cand: Candidate, now: datetime) -> None:
        self.stop_log.append(
            {
                "time": now.isoformat(),
                "user": cand.user,
                "server": cand.name,
                "profile": cand.decision.profile,
                "reason": cand.decision.reason,
                "detail": cand.decision.detail,
                "dry_run": cand.decision.dry_run,
                "started": cand.server.get("started"),
                "last_activity": cand.server.get("last_activity"),
                "groups": cand.groups,
                "policy": list(cand.decision.policy.sources) if cand.decision.policy else [],
            }
        )

    def _record_external(self, now: datetime, running: dict, report: Report) -> None:
        for key, info in self._running.items():
            if key in running or key in self._stopped_by_us:
                continue
            user, name, started = key
            if self.stop_log.seen(user, name, started, False):
                continue
            rec = {
                "time": now.isoformat(),
                "user": user,
                "server": name,
                "profile": info["profile"],
                "reason": "external",
                "detail": "stopped outside the culler (user, admin or crash)",
                "dry_run": False,
                "started": started,
                "last_activity": info["last_activity"],
                "groups": [],
                "policy": [],
            }
            self.stop_log.append(rec)
            report.external.append(rec)

    async def _stop(self, cands: list[Candidate], now: datetime, report: Report) -> None:
        """``DELETE`` each server, at most ``concurrency`` at once, each request retried on its own.

        The hub's answer confirms the stop: 204 (stopped) or 202 (stopping: pending stop); 404 and 400
        (the server or its user already gone, or not running) confirm it too. Each confirmed stop is
        recorded. Anything else is an error of this round: the server stays running, and the next
        round decides again from its own listing.
        """
        gate = asyncio.Semaphore(max(1, self.concurrency))

        async def stop(cand: Candidate) -> str | None:
            async with gate:
                try:
                    await self.hub.request("DELETE", server_path(cand.user, cand.name))
                except HubAPIError as exc:
                    if exc.status in (400, 404):
                        return None
                    return f"stop {cand.user}/{cand.name}: {exc}"
                except Exception as exc:
                    return f"stop {cand.user}/{cand.name}: {exc}"
            return None

        outcomes = await asyncio.gather(*(stop(c) for c in cands))
        for cand, error in zip(cands, outcomes, strict=True):  # recorded in listing order
            if error:
                log.error("%s", error)
                report.errors.append(error)
                continue
            self._stopped_by_us.add(cand.key)
            self._record(cand, now)
            report.stopped.append(cand)

    async def _restart(self, cand: Candidate, report: Report, now: datetime) -> None:
        if cand.decision.dry_run:
            log.info(
                "would restart always-on server %s/%s (profile %s)",
                cand.user,
                cand.name,
                cand.decision.profile,
            )
            return
        key = (cand.user, cand.name)
        verdict = self.restarts.check(key, now)
        if not verdict.allowed:
            report.held_back.append(cand)
            if verdict.gave_up:
                log.error(
                    "giving up restarting always-on server %s/%s (profile %s): %s",
                    cand.user,
                    cand.name,
                    cand.decision.profile,
                    verdict.detail,
                )
                self.stop_log.append(
                    {
                        "event": "restart-limit",
                        "time": now.isoformat(),
                        "user": cand.user,
                        "server": cand.name,
                        "profile": cand.decision.profile,
                        "reason": "always-on",
                        "detail": verdict.detail,
                        "dry_run": False,
                        "started": cand.server.get("started"),
                        "failures": self.restarts.failures(key),
                        "groups": cand.groups,
                        "policy": list(cand.decision.policy.sources) if cand.decision.policy else [],
                    }
                )
            else:
                log.info("not restarting %s/%s yet: %s", cand.user, cand.name, verdict.detail)
            return
        log.info(
            "restarting always-on server %s/%s (profile %s)", cand.user, cand.name, cand.decision.profile
        )
        self.restarts.attempted(key, now)
        try:
            await self.hub.request(
                "POST", server_path(cand.user, cand.name), json_body=cand.server.get("user_options") or {}
            )
        except HubAPIError as exc:
            if exc.status == 400 and "already" in str(exc.body):
                return
            self._restart_failed(cand, report, now, exc)
            return
        except Exception as exc:
            self._restart_failed(cand, report, now, exc)
            return
        report.restarted.append(cand)

    def _restart_failed(self, cand: Candidate, report: Report, now: datetime, exc: Exception) -> None:
        self.restarts.failed((cand.user, cand.name), now)
        report.errors.append(f"restart {cand.user}/{cand.name}: {exc}")
        log.error(
            "cannot restart %s/%s (failure %d): %s",
            cand.user,
            cand.name,
            self.restarts.failures((cand.user, cand.name)),
            exc,
        )

    # ---- the loop ---------------------------------------------------------------------

    def _serve(self):
        """Start the HTTP API when the hub gave this service a URL (``JUPYTERHUB_SERVICE_URL``)."""
        if not self.service_url:
            return None
        from ..common.listen import listen_address
        from .web import make_app

        host, port = listen_address(self.service_url, self.bind)
        server = make_app(self, self.service_prefix).listen(port, address=host, xheaders=True)
        log.info("serving %sapi/upcoming on %s:%d", self.service_prefix, host, port)
        return server

    async def run_forever(self, iterations: int | None = None) -> None:
        n = 0
        server = self._serve()
        try:
            while iterations is None or n < iterations:
                n += 1
                try:
                    await self.run_once()
                except Exception as exc:
                    log.error("culler iteration failed: %s", exc)
                if iterations is None or n < iterations:
                    await self.sleep(self.interval)
        finally:
            if server is not None:
                server.stop()
            await self.close()
