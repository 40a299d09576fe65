"""The monitoring service: start-up cleanup, the probe loop, the component checks, metrics and status."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..common.hub import HubClient
from .checks import Checks
from .probe import Probe, ProbeSettings
from .status import NAMES, OK, PHASES, Check, ProbeResult, iso, overall, probe_verdict

log = logging.getLogger("apex_hub.monitoring")

HISTORY_FILE = "monitoring-history.json"
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


@dataclass
class Settings:
    name: str = "apex-monitoring"
    api_url: str = ""
    api_token: str = ""
    public_url: str = "http://127.0.0.1:8000"
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    interval: float = 300.0  # seconds between probe starts
    stale_after: float = 0.0  # 0: stale_intervals * interval + the longest a probe may take
    stale_intervals: float = 3.0
    check_interval: float = 60.0  # component checks
    proxy_routes: bool = False
    kube_api: str = "off"  # off | incluster | kubeconfig path | URL
    services: list[str] | None = None
    history: int = 50
    state_dir: str = ""
    pause_file: str = ""

    def staleness(self) -> float:
        if self.stale_after:
            return self.stale_after
        p = self.probe
        longest = p.ready_timeout + p.proxy_timeout + (p.kernel_timeout if p.kernel else 0) + p.stop_timeout
        return self.stale_intervals * self.interval + longest


class Metrics:
    """The Prometheus metrics (one registry per service; ``generate_latest(metrics.registry)``)."""

    def __init__(self, service: MonitoringService):
        r = self.registry = CollectorRegistry()
        p = "apex_monitoring_"
        self.status = Gauge(
            p + "status", "Overall Nagios code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN", registry=r
        )
        self.status.set_function(lambda: service.status()["code"])
        self.probe_success = Gauge(p + "probe_success", "1 if the last probe passed (OK), else 0", registry=r)
        self.probe_code = Gauge(
            p + "probe_status", "Nagios code of the last probe (staleness not included)", registry=r
        )
        self.stale = Gauge(
            p + "probe_stale", "1 when the last probe result is older than the staleness limit", registry=r
        )
        self.stale.set_function(lambda: float(service.is_stale()))
        self.runs = Counter(p + "probe_runs", "Probes run, by result", ["result"], registry=r)
        for name in NAMES.values():
            self.runs.labels(name)
        self.phase = Histogram(
            p + "probe_phase_seconds", "Duration of each probe phase", ["phase"], buckets=BUCKETS, registry=r
        )
        self.last_phase = Gauge(
            p + "probe_last_phase_seconds", "Phase durations of the last probe", ["phase"], registry=r
        )
        self.last_run = Gauge(
            p + "probe_last_run_timestamp_seconds", "When the last probe finished", registry=r
        )
        self.last_success = Gauge(
            p + "probe_last_success_timestamp_seconds", "When a probe last passed", registry=r
        )
        self.since_success = Gauge(
            p + "probe_seconds_since_last_success",
            "Seconds since a probe last passed (+Inf: never)",
            registry=r,
        )
        self.since_success.set_function(service.seconds_since_success)
        self.component = Gauge(
            p + "component_status", "Nagios code of each component check", ["component"], registry=r
        )
        self.component_up = Gauge(
            p + "component_up", "1 if the component check is OK, else 0", ["component"], registry=r
        )

    def probe(self, result: ProbeResult) -> None:
        self.runs.labels(result.status).inc()
        self.probe_code.set(result.code)
        self.probe_success.set(1 if result.code == OK else 0)
        self.last_run.set(result.finished or 0)
        for phase in PHASES:
            if phase in result.phases:
                self.phase.labels(phase).observe(result.phases[phase])
                self.last_phase.labels(phase).set(result.phases[phase])
            else:
                self.last_phase.labels(phase).set(float("nan"))
        if result.code == OK:
            self.last_success.set(result.finished or 0)

    def components(self, checks: dict[str, Check]) -> None:
        for name, check in checks.items():
            self.component.labels(name).set(check.code)
            self.component_up.labels(name).set(1 if check.code == OK else 0)


class MonitoringService:
    """``clock``: the wall time of results and staleness; ``monotonic``: the probe's timeouts (a test
    moves both ahead with a :class:`~apex_hub.services.common.clock.FileOffsetClock`)."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.s, self.clock = settings, clock
        self.started = clock()
        self.hub = HubClient(settings.api_url, settings.api_token, timeout=30)
        self.probe = Probe(self.hub, settings.public_url, settings.probe, clock, monotonic)
        self.checks = Checks(
            self.hub,
            settings.public_url,
            self_name=settings.name,
            proxy_routes=settings.proxy_routes,
            kube_api=settings.kube_api,
            services=settings.services,
            clock=clock,
        )
        self.history: deque[ProbeResult] = deque(maxlen=settings.history)
        self.components: dict[str, Check] = {}
        self.running: ProbeResult | None = None
        self.startup_cleanup = ""
        self.metrics = Metrics(self)
        self._load_history()

    # ---- state --------------------------------------------------------------------------

    @property
    def last(self) -> ProbeResult | None:
        return self.history[-1] if self.history else None

    def last_success(self) -> ProbeResult | None:
        return next((r for r in reversed(self.history) if r.code == OK), None)

    def seconds_since_success(self) -> float:
        ok = self.last_success()
        return float("inf") if ok is None else self.clock() - (ok.finished or ok.started)

    def is_stale(self) -> bool:
        ref = self.last.finished if self.last and self.last.finished else self.started
        return self.clock() - ref > self.s.staleness()

    def probe_check(self) -> Check:
        return probe_verdict(self.last, self.clock(), self.s.staleness(), self.started)

    def status(self) -> dict:
        """The JSON status (Nagios codes), as served at ``status.json``."""
        probe = self.probe_check()
        code, message = overall(probe, self.components)
        last_ok = self.last_success()
        return {
            "service": self.s.name,
            "code": code,
            "status": NAMES[code],
            "message": message,
            "time": iso(self.clock()),
            "probe": {
                **probe.to_json(),
                "stale_after_seconds": self.s.staleness(),
                "interval_seconds": self.s.interval,
                "user": self.s.probe.user,
                "profile": self.s.probe.profile,
                "paused": self.paused(),
                "running": self.running.to_json() if self.running else None,
                "last": self.last.to_json() if self.last else None,
                "last_success_at": iso(last_ok.finished) if last_ok else None,
            },
            "components": {name: c.to_json() for name, c in self.components.items()},
            "startup_cleanup": self.startup_cleanup,
            "history": [r.to_json() for r in reversed(self.history)],
        }

    def paused(self) -> bool:
        return bool(self.s.pause_file) and os.path.exists(self.s.pause_file)

    def _history_path(self) -> Path | None:
        return Path(self.s.state_dir) / HISTORY_FILE if self.s.state_dir else None

    def _load_history(self) -> None:
        path = self._history_path()
        if path is None or not path.exists():
            return
        try:
            for item in json.loads(path.read_text()):
                self.history.append(ProbeResult.from_json(item))
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)

    def _save_history(self) -> None:
        path = self._history_path()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([r.to_json() for r in self.history]))
        os.replace(tmp, path)

    # ---- work ---------------------------------------------------------------------------

    async def cleanup_leftovers(self) -> None:
        """On start-up: stop a probe server (and tokens) left by a previous run that was killed."""
        for attempt in range(30):
            try:
                self.startup_cleanup = await self.probe.cleanup() or "nothing left over"
                log.info("start-up cleanup: %s", self.startup_cleanup)
                return
            except Exception as exc:
                log.warning("start-up cleanup failed (%s), retrying", exc)
                await asyncio.sleep(min(2**attempt, 30))

    async def run_probe(self) -> ProbeResult:
        n = (self.last.id if self.last else 0) + 1
        self.running = ProbeResult(id=n, started=self.clock(), profile=self.s.probe.profile)
        try:
            result = await self.probe.run(n)
        finally:
            self.running = None
        self.history.append(result)
        self.metrics.probe(result)
        self._save_history()
        return result

    async def run_checks(self) -> dict[str, Check]:
        self.components = await self.checks.run()
        self.metrics.components(self.components)
        return self.components

    async def probe_loop(self) -> None:
        await self.cleanup_leftovers()
        while True:
            begin = time.monotonic()
            if self.paused():
                log.info("probe paused (%s exists)", self.s.pause_file)
            else:
                await self.run_probe()
            await asyncio.sleep(max(0.0, self.s.interval - (time.monotonic() - begin)))

    async def check_loop(self) -> None:
        while True:
            await self.run_checks()
            await asyncio.sleep(self.s.check_interval)

    async def close(self) -> None:
        await self.hub.close()
