"""The per-run report: counts per discoverer and per outcome, every failure with its reason.

Failures are collected, never raised: one bad URI or account never hides the others. The
report decides the exit code of ``discover --once``: 0 when everything worked, 1 when anything
failed (the rest was applied).

Words (README "Vocabulary"): a :class:`CycleFailure` is one failure of the cycle at a stage;
a discoverer's deliberately left-out items are *ignored* (not failures); plan changes the policy
holds back are *held* (action ``hold``); *skipped* is only the daemon's overlapping cycle.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mlsvc_discover._exit import EXIT_OK, EXIT_PARTIAL
from mlsvc_discover.discoverers.base import Scope
from mlsvc_discover.pipelines import PipelinePlan
from mlsvc_discover.plan import Plan

__all__ = ["CycleFailure", "DiscovererStats", "FindingRecord", "Report", "ScopeRecord"]


@dataclass(frozen=True)
class CycleFailure:
    """One thing that went wrong in a cycle: the stage, which item, and why.

    A discoverer or the mapper reports an :class:`~mlsvc_discover.discoverers.base.ItemFailure`
    (no stage: it knows only its item); the agent records it here with the stage it came from.
    """

    stage: str  # discover | map | check | read | write | delete | restore | pipeline
    item: str
    reason: str
    source: str | None = None
    kind: str = "error"

    def to_dict(self) -> dict[str, Any]:
        out = {"stage": self.stage, "item": self.item, "reason": self.reason, "kind": self.kind}
        if self.source:
            out["source"] = self.source
        return out


@dataclass
class DiscovererStats:
    """What one discoverer found and what failed in it."""

    findings: int = 0
    failures: int = 0
    ignored: int = 0
    ok: bool = True
    duration: float = 0.0


# --- what the status page needs beyond the counts: every scope and every finding -------------


@dataclass(frozen=True)
class ScopeRecord:
    """One scope a discoverer looked at this cycle, and how that went."""

    source: str
    scope: Scope
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class FindingRecord:
    """One finding and the service name it maps to (None when it could not be mapped)."""

    source: str
    key: str
    kind: str
    scope: Scope
    name: str | None


@dataclass
class Report:
    """Everything one cycle did; rendered as text or JSON."""

    dry_run: bool = False
    started_at: float = 0.0
    duration: float = 0.0
    discoverers: dict[str, DiscovererStats] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[CycleFailure] = field(default_factory=list)
    plan: Plan | None = None
    fatal: str | None = None
    # Low-cardinality kind of ``fatal`` for metrics: openmetadata_unavailable, openmetadata_auth, config.
    fatal_kind: str | None = None
    notes: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    not_applied: list[str] = field(default_factory=list)
    interrupted: bool = False
    # For the status page (not in to_dict: the CLI's report stays as it was).
    scopes: list[ScopeRecord] = field(default_factory=list)
    findings: list[FindingRecord] = field(default_factory=list)
    # Ingestion pipelines (None when no pipeline was planned): the plan and what was done
    # (created, updated, deployed, triggered, deleted, unchanged, conflict, held, failed).
    pipeline_plan: PipelinePlan | None = None
    pipeline_outcomes: Counter[str] = field(default_factory=Counter)
    # Stale services the server refused to delete because they still hold children.
    not_empty: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.fatal is None and not self.failures and not self.interrupted

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_PARTIAL

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "duration_seconds": round(self.duration, 3),
            "discoverers": {
                name: {
                    "ok": s.ok,
                    "findings": s.findings,
                    "failures": s.failures,
                    "ignored": s.ignored,
                    "duration_seconds": round(s.duration, 3),
                }
                for name, s in sorted(self.discoverers.items())
            },
            "outcomes": dict(sorted((+self.outcomes).items())),
            "failures": [f.to_dict() for f in self.failures],
        }
        if self.plan is not None:
            out["plan"] = self.plan.to_dict()
        if self.pipeline_plan is not None:
            out["pipelines"] = {
                "outcomes": dict(sorted((+self.pipeline_outcomes).items())),
                "plan": self.pipeline_plan.to_dict(),
            }
        if self.fatal:
            out["fatal"] = self.fatal
            out["fatal_kind"] = self.fatal_kind
        if self.notes:
            out["notes"] = list(self.notes)
        if self.interrupted:
            out["interrupted"] = True
            out["not_applied"] = sorted(self.not_applied)
        if self.not_empty:
            out["not_deleted_not_empty"] = sorted(self.not_empty)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def render_text(self) -> str:
        lines: list[str] = []
        head = "DRY RUN: nothing was written. " if self.dry_run else ""
        status = "ok" if self.ok else "with failures"
        lines.append(f"{head}mlsvc-discover cycle finished {status} in {self.duration:.2f}s")
        if self.fatal:
            lines.append(f"fatal: {self.fatal}")
        for note in self.notes:
            lines.append(f"note: {note}")
        lines.append("discoverers:")
        for name, s in sorted(self.discoverers.items()):
            mark = "ok" if s.ok else "FAILED"
            lines.append(f"  {name}: {mark}, {s.findings} found, {s.failures} failed, {s.ignored} ignored")
        if self.plan is not None:
            p = self.plan
            lines.append(
                f"plan: {len(p.create)} create, {len(p.update)} update, {len(p.restore)} restore, "
                f"{len(p.delete)} delete, {len(p.unchanged)} unchanged, {len(p.conflicts)} conflict, "
                f"{len(p.held)} held"
            )
            for change in (*p.create, *p.update, *p.restore, *p.delete, *p.conflicts, *p.held):
                lines.append(f"  {change.action:<8} {change.name}: {change.reason}")
        if +self.outcomes:
            counts = ", ".join(f"{k} {v}" for k, v in sorted((+self.outcomes).items()))
            lines.append(f"outcomes: {counts}")
        if self.pipeline_plan is not None:
            pp = self.pipeline_plan
            lines.append(
                f"pipelines: {len(pp.create)} create, {len(pp.update)} update, {len(pp.deploy)} deploy, "
                f"{len(pp.delete)} delete, {len(pp.unchanged)} unchanged, {len(pp.conflicts)} conflict, "
                f"{len(pp.held)} held"
            )
            for pc in (*pp.create, *pp.update, *pp.deploy, *pp.delete, *pp.conflicts, *pp.held):
                lines.append(f"  {pc.action:<8} {pc.service}/{pc.pipeline}: {pc.reason}")
            if +self.pipeline_outcomes:
                counts = ", ".join(f"{k} {v}" for k, v in sorted((+self.pipeline_outcomes).items()))
                lines.append(f"pipeline outcomes: {counts}")
        if self.failures:
            lines.append("failures:")
            for f in self.failures:
                src = f"{f.source}: " if f.source else ""
                lines.append(f"  [{f.stage}] {src}{f.item}: {f.reason}")
        if self.interrupted:
            lines.append(f"interrupted: not applied: {', '.join(sorted(self.not_applied)) or 'none'}")
        return "\n".join(lines)
