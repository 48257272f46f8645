"""Prometheus metrics of the long-running agent, fed from each cycle's :class:`Report`.

Every metric lives in a registry the caller owns (never the global default one), so that two
agents in one test process, or a library user's own metrics, never collide.

Label values come only from discoverer names (validated by the config) and from failure kinds
chosen by the code. Anything else is squeezed into ``other`` so that no URI, account, reason
text or secret can ever become a label value, and so that cardinality stays bounded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from mlsvc_discover.report import Report

__all__ = [
    "DELETION_REASONS",
    "PIPELINE_OUTCOMES",
    "RESULTS",
    "WRITE_OUTCOMES",
    "Metrics",
    "fatal_kind",
    "succeeded",
]

WRITE_OUTCOMES: Final = ("created", "updated", "unchanged", "restored", "deleted", "failed", "conflict", "held")
RESULTS: Final = ("success", "failure")
PIPELINE_OUTCOMES: Final = (
    "created",
    "updated",
    "deployed",
    "triggered",
    "deleted",
    "unchanged",
    "conflict",
    "held",
    "failed",
)
DELETION_REASONS: Final = ("stale", "blocked_max_fraction", "refused_not_empty")

# Cycles range from well under a second (a few static services) to many minutes (hundreds of
# AWS accounts); the buckets cover both ends.
_DURATION_BUCKETS: Final = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))
_NAME_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KIND_LABEL = re.compile(r"^[a-z0-9_]{1,64}$")
OPENMETADATA: Final = "openmetadata"


def succeeded(report: Report) -> bool:
    """Whether a cycle counts as a success for metrics and readiness.

    OpenMetadata was reachable and accepted the agent (``fatal`` is unset), and the plan was
    applied to the end (not cut short by a shutdown). Per-item failures (one URI, one account,
    one rejected write) do not make a cycle fail: they are counted in ``errors_total``.
    """
    return report.fatal is None and not report.interrupted


def fatal_kind(report: Report) -> str | None:
    """A low-cardinality kind for ``report.fatal``, as the agent classified it."""
    if report.fatal is None:
        return None
    return report.fatal_kind or "openmetadata_unavailable"


def _name_label(value: str | None) -> str:
    if value is None:
        return OPENMETADATA
    return value if _NAME_LABEL.match(value) else "other"


def _kind_label(value: str) -> str:
    return value if _KIND_LABEL.match(value) else "other"


class Metrics:
    """The agent's metrics; :meth:`observe` folds one cycle's report into them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.cycle_duration = Histogram(
            "mlsvc_discover_cycle_duration_seconds",
            "Wall time of one discovery cycle (discover, plan, apply).",
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.last_success = Gauge(
            "mlsvc_discover_last_success_timestamp_seconds",
            "Unix time at which the last successful cycle finished (0 before the first).",
            registry=registry,
        )
        self.consecutive_failures = Gauge(
            "mlsvc_discover_consecutive_failed_cycles",
            "Cycles that failed in a row (OpenMetadata unreachable or refusing, or a crash); 0 after a success.",
            registry=registry,
        )
        self.cycles = Counter(
            "mlsvc_discover_cycles_total",
            "Cycles run, by result (success: OpenMetadata reachable and the plan applied).",
            ["result"],
            registry=registry,
        )
        self.cycles_skipped = Counter(
            "mlsvc_discover_cycles_skipped_total",
            "Scheduled cycles skipped because the previous one was still running.",
            registry=registry,
        )
        self.findings = Gauge(
            "mlsvc_discover_findings",
            "Services found by each discoverer in the last cycle.",
            ["discoverer"],
            registry=registry,
        )
        self.writes = Counter(
            "mlsvc_discover_writes_total",
            "Outcome of each service the agent planned for (created, updated, unchanged, ...).",
            ["outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "mlsvc_discover_errors_total",
            "Failures by discoverer (or openmetadata) and kind.",
            ["discoverer", "kind"],
            registry=registry,
        )
        self.deletions = Counter(
            "mlsvc_discover_deletions_total",
            "Deletions applied (stale), held back by max_delete_fraction (blocked_max_fraction), and refused by "
            "OpenMetadata because the service still holds ML models or pipelines (refused_not_empty).",
            ["reason"],
            registry=registry,
        )
        # --- for the dashboard and alert rules in config/ (issue 13) ---------------------------
        self.conflicts = Gauge(
            "mlsvc_discover_conflicts",
            "Services in conflict in the last cycle: the desired name is taken by a service without this agent's tag.",
            registry=registry,
        )
        self.plan_changes = Gauge(
            "mlsvc_discover_plan_changes",
            "Services per plan action (create, update, restore, delete, unchanged, conflict, hold) in the last "
            "cycle, by discoverer.",
            ["discoverer", "action"],
            registry=registry,
        )
        self.write_failures = Counter(
            "mlsvc_discover_write_failures_total",
            "Writes to OpenMetadata that failed (creates, updates, restores, deletes), by discoverer and kind "
            "(http_401, http_403, http_404, http_409, unavailable, ...).",
            ["discoverer", "kind"],
            registry=registry,
        )
        self.interval = Gauge(
            "mlsvc_discover_schedule_interval_seconds",
            "The (longest) time between two scheduled cycles; alerts count intervals with it.",
            registry=registry,
        )
        self.cycle_timeout = Gauge(
            "mlsvc_discover_cycle_timeout_seconds",
            "The configured cycle deadline (cycle_timeout); the stuck-cycle alert compares ages with it.",
            registry=registry,
        )
        # process_start_time_seconds: "no success since start" needs the start.
        ProcessCollector(registry=registry)
        self._plan_labels: set[tuple[str, str]] = set()
        self.conflicts.set(0)
        self.pipelines = Counter(
            "mlsvc_discover_pipeline_operations_total",
            "Ingestion pipeline outcomes (created, updated, deployed, triggered, deleted, unchanged, conflict, "
            "held, failed).",
            ["outcome"],
            registry=registry,
        )
        # Pre-create the fixed label values so dashboards and alerts see 0, not "no data".
        for result in RESULTS:
            self.cycles.labels(result=result)
        for outcome in WRITE_OUTCOMES:
            self.writes.labels(outcome=outcome)
        for reason in DELETION_REASONS:
            self.deletions.labels(reason=reason)
        for outcome in PIPELINE_OUTCOMES:
            self.pipelines.labels(outcome=outcome)
        self.last_success.set(0)
        self.consecutive_failures.set(0)

    def watch_in_flight(self, in_flight: Callable[[], float], oldest_age: Callable[[], float]) -> None:
        """Gauges of cycles in flight and the age of the oldest, read at scrape time.

        At scrape time, so that a wedged event loop (which can no longer update anything)
        still shows its cycle growing older.
        """
        Gauge(
            "mlsvc_discover_cycles_in_flight",
            "Cycles running now (0 or 1; more means cycles are stuck).",
            registry=self.registry,
        ).set_function(in_flight)
        Gauge(
            "mlsvc_discover_oldest_cycle_in_flight_age_seconds",
            "How long the oldest cycle still running has run (0 when none is).",
            registry=self.registry,
        ).set_function(oldest_age)

    def skipped(self) -> None:
        """Count a scheduled cycle that did not run because one was still in flight."""
        self.cycles_skipped.inc()

    def observe(self, report: Report, *, crashed: bool = False) -> None:  # noqa: PLR0912 - a flat fold of the report into each metric family
        """Fold one finished cycle into the metrics.

        ``crashed`` marks a cycle that raised instead of returning its report; it is counted
        as an error of the agent itself (``discoverer="agent", kind="crash"``).
        """
        self.cycle_duration.observe(max(0.0, report.duration))
        self._observe_plan(report)
        ok = succeeded(report) and not crashed
        self.cycles.labels(result="success" if ok else "failure").inc()
        if ok:
            self.last_success.set(time.time())
            self.consecutive_failures.set(0)
        else:
            self.consecutive_failures.inc()

        for name, stats in report.discoverers.items():
            self.findings.labels(discoverer=_name_label(name)).set(stats.findings)

        for outcome, count in report.outcomes.items():
            if count > 0:
                label = outcome if outcome in WRITE_OUTCOMES else "other"
                self.writes.labels(outcome=label).inc(count)

        for outcome, count in report.pipeline_outcomes.items():
            if count > 0:
                self.pipelines.labels(outcome=outcome if outcome in PIPELINE_OUTCOMES else "other").inc(count)

        for failure in report.failures:
            self.errors.labels(discoverer=_name_label(failure.source), kind=_kind_label(failure.kind)).inc()
            if failure.stage in _WRITE_STAGES:
                source = failure.source or _scope_owner(report, failure.item)
                self.write_failures.labels(
                    discoverer=_name_label(source) if source else "unknown", kind=_kind_label(failure.kind)
                ).inc()
        if crashed:
            self.errors.labels(discoverer="agent", kind="crash").inc()
        else:
            kind = fatal_kind(report)
            if kind is not None:
                self.errors.labels(discoverer=OPENMETADATA, kind=kind).inc()

        deleted = report.outcomes.get("deleted", 0)
        if deleted:
            self.deletions.labels(reason="stale").inc(deleted)
        if report.not_empty:
            self.deletions.labels(reason="refused_not_empty").inc(len(report.not_empty))
        if report.plan is not None:
            # plan.py codes the fraction guard's holds this way; create-only holds are not deletions.
            blocked = sum(1 for c in report.plan.held if c.code == "max_delete_fraction")
            if blocked:
                self.deletions.labels(reason="blocked_max_fraction").inc(blocked)

    def _observe_plan(self, report: Report) -> None:
        plan = report.plan
        if plan is None:
            return  # no plan this cycle (OpenMetadata unreachable): keep the last known numbers
        self.conflicts.set(len(plan.conflicts))
        counts: dict[tuple[str, str], int] = {}
        for change in plan.changes():
            source = change.source or _scope_owner(report, change.name)
            key = (_name_label(source) if source else "unknown", _kind_label(change.action))
            counts[key] = counts.get(key, 0) + 1
        # A discoverer/action pair that had services and has none now must read 0, not its old value.
        for key in self._plan_labels - counts.keys():
            self.plan_changes.labels(discoverer=key[0], action=key[1]).set(0)
        for key, count in counts.items():
            self.plan_changes.labels(discoverer=key[0], action=key[1]).set(count)
        self._plan_labels |= counts.keys()


_WRITE_STAGES: Final = frozenset({"write", "restore", "delete"})


def _scope_owner(report: Report, name: str) -> str | None:
    """The discoverer of an owned service from its scope, ``(type, discoverer, ...)``."""
    if report.plan is None:
        return None
    scope = report.plan.scopes.get(name)
    return scope[1] if scope is not None and len(scope) > 1 else None
