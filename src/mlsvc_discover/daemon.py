"""The long-running mode: a cycle at start, then on the schedule, until SIGTERM or SIGINT.

Scheduling is APScheduler 3.x (:class:`AsyncIOScheduler`) on an asyncio loop this module owns.
Guarantees, each tested:

- never two cycles at once: a cycle due while one still runs is *skipped*, logged and counted
  (``mlsvc_discover_cycles_skipped_total``), never queued, so a slow OpenMetadata cannot pile
  cycles up;
- a failing cycle (OpenMetadata down, a discoverer failing, even an exception escaping
  :meth:`Agent.run_once`) never stops the process: it is logged, counted, and the next cycle
  runs on time;
- on SIGTERM/SIGINT the cycle in flight stops after the write it is doing (the ``stop`` event
  the agent checks between writes), gets ``schedule.grace_period`` to get there, and the
  services it did and did not apply are logged; the exit code is 0 either way, because
  stopping on request is not a failure and the next run reconciles whatever was left. A
  second signal cuts the grace period short, and the process is gone
  ``grace_period + HARD_EXIT_MARGIN`` seconds after the first signal whatever any remote does;
- SIGHUP re-reads the config file (the Prometheus convention): a valid one replaces the running
  config before the next cycle, an invalid one is logged with its reason and the running
  config stays; the process never stops for it;
- every cycle ends at ``cycle_timeout`` (the agent enforces it); ``/healthz`` fails when
  one is still in flight ``server.liveness_margin`` later, so an orchestrator restarts a
  wedged agent;
- the state file is locked for the life of the process: a second agent on the same
  ``state.path`` exits 3 at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from mlsvc_discover._crontab import cron_trigger, crontab_weekdays
from mlsvc_discover._errors import ConfigError, StateError, StateLockedError
from mlsvc_discover._exit import EXIT_CANNOT_SERVE, EXIT_CONFIG, EXIT_LOCKED, EXIT_OK
from mlsvc_discover._logging import add_secrets, configure_logging, redact
from mlsvc_discover._process import HARD_EXIT_MARGIN, arm_watchdog, run
from mlsvc_discover.agent import Agent
from mlsvc_discover.config import AgentConfig, ScheduleConfig, load_config
from mlsvc_discover.metrics import Metrics, succeeded
from mlsvc_discover.report import Report
from mlsvc_discover.server import HealthServer, Liveness, Readiness
from mlsvc_discover.status import StatusBoard

__all__ = [
    "DEFAULT_INTERVAL",
    "Daemon",
    "OnCycle",
    "build_trigger",
    "cron_trigger",
    "crontab_weekdays",
    "run_forever",
    "serve",
]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 15 * 60.0
_CRON_SAMPLES = 8

OnCycle = Callable[[Report], Awaitable[None] | None]
"""Called after every cycle with its report (tests use it to change the world in between)."""


def _cron_interval(expr: str) -> float:
    """The longest gap between the next few fire times of a crontab expression, in seconds.

    Readiness needs "one interval" of a cron schedule. The longest of several gaps rather than
    the next one, so that ``0 9 * * 1-5`` is not unready every weekend.
    """
    trigger = cron_trigger(expr)
    now = datetime.now(trigger.timezone)
    times = [trigger.get_next_fire_time(None, now)]
    for _ in range(_CRON_SAMPLES):
        previous = times[-1]
        if previous is None:
            break
        times.append(trigger.get_next_fire_time(previous, previous + timedelta(microseconds=1)))
    fired = [t for t in times if t is not None]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fired)]
    return max(gaps) if gaps else DEFAULT_INTERVAL


def build_trigger(schedule: ScheduleConfig) -> tuple[Any, float]:
    """The APScheduler trigger for ``schedule`` and its interval in seconds (for readiness).

    Raises ConfigError when ``schedule.cron`` cannot be read with crontab's weekday numbers.
    """
    jitter = schedule.jitter or None
    if schedule.cron is not None:
        try:
            trigger = cron_trigger(schedule.cron, jitter=jitter)
            interval = _cron_interval(schedule.cron)
        except ValueError as exc:
            raise ConfigError(
                f"{schedule.cron!r} is not a valid crontab expression: {exc}", key="schedule.cron"
            ) from exc
        return trigger, interval
    from apscheduler.triggers.interval import IntervalTrigger

    interval = schedule.interval if schedule.interval is not None else DEFAULT_INTERVAL
    return IntervalTrigger(seconds=interval, jitter=jitter), interval


def _describe(schedule: ScheduleConfig, interval: float) -> str:
    what = f"cron {schedule.cron!r}" if schedule.cron is not None else f"every {interval:g}s"
    return what + (f" with up to {schedule.jitter:g}s jitter" if schedule.jitter else "")


class Daemon:
    """One agent, its schedule, its metrics and its health endpoint.

    Build it, then ``await daemon.run(stop)``; setting ``stop`` shuts it down gracefully.
    ``port`` is the bound port of the health endpoint once ``started`` is set.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        agent: Agent | None = None,
        registry: CollectorRegistry | None = None,
        on_cycle: OnCycle | None = None,
    ) -> None:
        self.config = config
        self.agent = agent if agent is not None else Agent(config)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.trigger, self.interval = build_trigger(config.schedule)
        self.metrics.interval.set(self.interval)
        self.metrics.cycle_timeout.set(config.cycle_timeout)
        self.readiness = Readiness(self.interval, config.server.ready_intervals, jitter=config.schedule.jitter)
        self.liveness = Liveness(config.cycle_timeout + config.server.liveness_margin)
        self.metrics.watch_in_flight(self.liveness.in_flight, self.liveness.oldest_age)
        self._pending: AgentConfig | None = None
        self._scheduler: Any = None
        self.server: HealthServer | None = None
        self.port: int | None = None
        self.status: StatusBoard | None = (
            StatusBoard(
                # Through self.agent at call time: a SIGHUP reload replaces the agent and its secrets.
                lambda: self.agent.secrets(),  # noqa: PLW0108
                owner_id=config.owner_id,
                policy=config.policy,
                stale_after=config.stale_after,
            )
            if config.server.status_page
            else None
        )
        self.started = asyncio.Event()
        self.cycles = 0
        self.exit_code = EXIT_OK  # what run() returns once stopped
        self.skipped = 0
        self._on_cycle = on_cycle
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._inflight: asyncio.Task[Report] | None = None
        self._current: Report | None = None
        self._inflight_since = 0.0

    # --- running ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until ``stop`` is set; 0 after a graceful stop, 1 if the endpoint cannot bind."""
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._stop = stop
        try:
            self.agent.claim_state()
        except StateError as exc:
            log.error("%s", exc)
            await self.agent.aclose()
            return EXIT_LOCKED if isinstance(exc, StateLockedError) else EXIT_CANNOT_SERVE
        if self.config.server.enabled:
            self.server = HealthServer(
                self.config.server.address,
                self.readiness,
                self.registry,
                status=self.status,
                liveness=self.liveness,
            )
            try:
                self.port = self.server.start()
            except OSError as exc:
                log.error(
                    "cannot serve health and metrics on %s: %s; free the port or change server.address",
                    self.config.server.address,
                    exc.strerror or exc,
                )
                self.server = None
                await self.agent.aclose()
                return EXIT_CANNOT_SERVE

        self._scheduler = scheduler = AsyncIOScheduler()
        scheduler.add_listener(self._on_max_instances, EVENT_JOB_MAX_INSTANCES)
        scheduler.add_job(
            self._job,
            trigger=self.trigger,
            id="cycle",
            name="discovery cycle",
            max_instances=1,
            # A late run (loop busy, host suspended) still runs, once, rather than never.
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
        scheduler.start()
        self.started.set()
        log.info(
            "agent %s started: a cycle now, then %s",
            self.config.owner_id,
            _describe(self.config.schedule, self.interval),
        )
        try:
            await stop.wait()
            # No new cycle may start while the one in flight drains.
            scheduler.pause()
            await self._drain()
        finally:
            inflight = self._inflight
            if inflight is not None and not inflight.done():
                inflight.cancel()  # only when run() itself was cancelled; the drain finished it otherwise
            scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # shutdown is scheduled on the loop; let it run
            await self.agent.aclose()
            if self.server is not None:
                self.server.close()
        log.info("agent %s stopped", self.config.owner_id)
        return self.exit_code

    def force_stop(self) -> None:
        """Cancel the cycle in flight now instead of waiting out the grace period."""
        self._force.set()

    async def _drain(self) -> None:
        task = self._inflight
        if task is None or task.done():
            log.info("stopping: no cycle in flight")
            return
        grace = self.config.schedule.grace_period
        log.info("stopping: the cycle in flight stops after its current write (grace period %gs)", grace)
        force = asyncio.ensure_future(self._force.wait())
        try:
            await asyncio.wait({task, force}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            force.cancel()
        if task.done() and not task.cancelled():
            report = task.result()
            log.info(
                "stopped after the cycle in flight: applied %d: %s; not applied %d: %s",
                len(report.applied),
                ", ".join(sorted(report.applied)) or "none",
                len(report.not_applied),
                ", ".join(sorted(report.not_applied)) or "none",
            )
            return
        task.cancel()
        await asyncio.wait({task}, timeout=2)
        why = "a second signal" if self._force.is_set() else f"the grace period of {grace:g}s ran out"
        done = sorted(self._current.applied) if self._current is not None else []
        log.warning(
            "%s: the cycle in flight was cancelled; confirmed applied before that %d: %s; "
            "writes already sent stay, the rest is applied on the next run",
            why,
            len(done),
            ", ".join(done) or "none",
        )

    # --- one cycle -------------------------------------------------------------------------

    def _on_max_instances(self, event: Any) -> None:
        self._skip()

    def _skip(self) -> None:
        self.skipped += 1
        self.metrics.skipped()
        running = time.monotonic() - self._inflight_since
        log.warning(
            "cycle skipped: the previous cycle is still running (for %.1fs); if this repeats, lengthen "
            "schedule.interval or find what makes cycles slow",
            running,
        )

    def reload(self, config: AgentConfig) -> None:
        """Use ``config`` from the next cycle on (SIGHUP); the cycle in flight keeps the old one."""
        self._pending = config

    async def _swap_config(self) -> None:
        new, self._pending = self._pending, None
        if new is None:
            return
        old = self.config
        await self.agent.aclose()
        try:
            trigger, interval = build_trigger(new.schedule)
            agent = Agent(new)
            agent.claim_state()
        except (ConfigError, StateError) as exc:
            log.error("config reload failed, keeping the running config: %s", exc)
            self.agent = Agent(old)
            self.agent.claim_state()
            return
        self.config, self.agent = new, agent
        if new.schedule != old.schedule and self._scheduler is not None:
            self.trigger, self.interval = trigger, interval
            self.readiness.interval, self.readiness.jitter = interval, new.schedule.jitter
            self._scheduler.reschedule_job("cycle", trigger=trigger)
        self.readiness.ready_intervals = new.server.ready_intervals
        self.liveness.limit = new.cycle_timeout + new.server.liveness_margin
        self.metrics.interval.set(self.interval)
        self.metrics.cycle_timeout.set(new.cycle_timeout)
        configure_logging(new.logging.level, new.logging.format, agent.secrets())
        if new.server.address != old.server.address or new.server.enabled != old.server.enabled:
            log.warning("server.address and server.enabled changes take effect only after a restart")
        log.info("config reloaded: the new config runs from this cycle on")

    async def _job(self) -> None:
        if self._stop.is_set():
            return
        if self._inflight is not None and not self._inflight.done():
            # APScheduler's max_instances=1 normally catches this first; kept as a second lock.
            self._skip()
            return
        if self._pending is not None:
            await self._swap_config()
        self._inflight_since = time.monotonic()
        task = asyncio.create_task(self._cycle(), name="mlsvc-discover-cycle")
        self._inflight = task
        # Shielded: stopping the scheduler cancels its job, but the cycle must get its grace.
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if self._stop.is_set():
                return  # shutdown: the drain waits for the cycle; this wrapper has nothing left to do
            raise

    def _redact(self, text: str) -> str:
        return redact(text, self.agent.secrets())

    async def _cycle(self) -> Report:
        self.cycles += 1
        number = self.cycles
        started = time.monotonic()
        crashed = False
        # Created here so that a cancelled cycle still tells what it had applied.
        self._current = report = Report()
        if self.status is not None:
            self.status.cycle_started()
        alive = self.liveness.begin()
        try:
            report = await self.agent.run_once(stop=self._stop, report=report)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an unexpected bug must cost one cycle, not the process
            crashed = True
            log.exception("cycle %d crashed; the next cycle runs on schedule", number)
            report = Report(
                started_at=time.time(), fatal=self._redact(f"the cycle crashed: {type(exc).__name__}: {exc}")
            )
            report.duration = time.monotonic() - started
        finally:
            self.liveness.end(alive)
        # Discoverers learn secrets as they run (assumed-role keys, passwords in a uris_file).
        add_secrets(self.agent.secrets())
        self.metrics.observe(report, crashed=crashed)
        ok = succeeded(report)
        reason = report.fatal or ("interrupted by shutdown" if report.interrupted else None)
        self.readiness.record(success=ok, duration=report.duration, reason=self._redact(reason) if reason else None)
        if self.status is not None:
            self.status.record(report, cycle=number, success=ok and not crashed)
        self._log_report(number, report, ok)
        if report.fatal_kind == "openmetadata_version":
            # Nothing a later cycle can change: refuse the server once, here, instead of logging
            # the same fatal line every cycle; the orchestrator shows the exit and the reason.
            log.error("stopping: %s", self._redact(report.fatal or "unsupported OpenMetadata version"))
            self.exit_code = EXIT_CANNOT_SERVE
            self._stop.set()
        if self._on_cycle is not None:
            try:
                result = self._on_cycle(report)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("the on_cycle callback failed")
        return report

    def _log_report(self, number: int, report: Report, ok: bool) -> None:
        found = sum(s.findings for s in report.discoverers.values())
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted((+report.outcomes).items())) or "no writes"
        state = "ok" if ok else "FAILED"
        log.info(
            "cycle %d %s in %.2fs: %d found; %s; %d failures",
            number,
            state,
            report.duration,
            found,
            outcomes,
            len(report.failures),
        )
        if report.fatal:
            log.error("cycle %d: %s", number, self._redact(report.fatal))
        for f in report.failures:
            src = f"{f.source}: " if f.source else ""
            log.warning("cycle %d: [%s] %s%s: %s", number, f.stage, src, f.item, self._redact(f.reason))
        if report.plan is not None:
            for why in sorted({c.reason for c in report.plan.held}):
                log.warning("cycle %d: held back: %s", number, why)


async def serve(config: AgentConfig, *, stop: asyncio.Event, on_cycle: OnCycle | None = None) -> int:
    """Run the agent in this process until ``stop`` is set (no signal handlers, no logging set-up)."""
    return await Daemon(config, on_cycle=on_cycle).run(stop)


async def _main(config: AgentConfig, config_path: str | None = None) -> int:
    try:
        daemon = Daemon(config)
    except ConfigError as exc:
        print(f"mlsvc-discover: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format, daemon.agent.secrets())
    # The daemon logs skips itself; APScheduler's per-run INFO lines would only add noise.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("received %s again: cancelling the cycle in flight", sig.name)
            daemon.force_stop()
            return
        log.info("received %s: stopping", sig.name)
        stop.set()
        grace = daemon.config.schedule.grace_period
        arm_watchdog(grace + HARD_EXIT_MARGIN, EXIT_OK, f"stopping on {sig.name}")

    def on_hangup() -> None:
        # Read here, not later: the operator wants to know now whether the new file is valid.
        try:
            new = load_config(config_path)
        except ConfigError as exc:
            log.error("received SIGHUP: config is invalid, keeping the running one: %s", exc)
            return
        log.info("received SIGHUP: config is valid; it replaces the running one before the next cycle")
        daemon.reload(new)

    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for sig in signals[:2]:
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        return await daemon.run(stop)
    finally:
        for sig in signals:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)


def run_forever(config: AgentConfig, *, config_path: str | None = None) -> int:
    """``mlsvc-discover discover`` without ``--once``: run until SIGTERM/SIGINT; the exit code.

    ``config_path`` is re-read on SIGHUP (``None``: ``$MLSVC_DISCOVER_CONFIG``).
    """
    return run(_main(config, config_path))
