"""The controller: one :meth:`Agent.run_once` behind ``--once``, ``--dry-run`` and the daemon.

discover (all discoverers concurrently) -> map -> read OpenMetadata -> plan -> apply -> report.

Soft errors (a discoverer, a URI, an account, OpenMetadata being down for a cycle) are
recorded in the report and the caller carries on; only a bad config is hard (it never gets
this far). Bookkeeping for safe deletes (consecutive misses, the scope of each owned
service) lives in memory and, when ``state.path`` is set, in a JSON file, written only after a
cycle that really ran (never by a dry run).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from mlsvc_discover._errors import OpenMetadataAuthError, OpenMetadataError
from mlsvc_discover._logging import redact
from mlsvc_discover.config import AgentConfig
from mlsvc_discover.mapper import map_findings, owner_tag_fqn
from mlsvc_discover.plan import Change, CurrentService, Plan, compute_plan
from mlsvc_discover.provider.openmetadata import OpenMetadataClient, Outcome, WriteResult, WritesStopped
from mlsvc_discover.report import DiscovererStats, Failure, Report
from mlsvc_discover.sources.base import Discoverer, DiscovererConfig, DiscoveryResult, ItemFailure, Scope, ScopeOutcome
from mlsvc_discover.sources.registry import build

__all__ = ["Agent", "config_secrets", "describe"]

log = logging.getLogger(__name__)


class Agent:
    """Holds discoverers, the OpenMetadata client and delete bookkeeping across cycles."""

    def __init__(self, config: AgentConfig, *, om_transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self._om_transport = om_transport
        self._discoverers: list[Discoverer[DiscovererConfig]] = [build(d) for d in config.discoverers if d.enabled]
        self._client: OpenMetadataClient | None = None
        self.owner_tag = owner_tag_fqn(config.ownership_classification, config.owner_id)
        self.misses: dict[str, int] = {}
        self.scopes: dict[str, Scope] = {}
        self._load_state()

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def client(self) -> OpenMetadataClient | None:
        if self._client is None and self.config.openmetadata.host:
            self._client = OpenMetadataClient(self.config.openmetadata, transport=self._om_transport)
        return self._client

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for d in self._discoverers:
            try:
                await d.aclose()
            except Exception:  # closing must never mask the cycle's own outcome
                log.debug("closing discoverer %s failed", d.name, exc_info=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def secrets(self) -> list[str]:
        """Every secret value the agent knows, for log and output redaction."""
        out: list[str] = []
        token = self.config.openmetadata.token
        if token is not None:
            out.append(token.get_secret_value())
        for d in self._discoverers:
            out.extend(d.secrets())
        return [s for s in out if s]

    # --- state ---------------------------------------------------------------------------

    def _load_state(self) -> None:
        path = self.config.state.path
        if path is None or not path.exists():
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("owner") != self.owner_tag:
                log.warning("state file %s belongs to %s, not %s; ignoring it", path, data.get("owner"), self.owner_tag)
                return
            self.misses = {str(k): int(v) for k, v in data.get("misses", {}).items()}
            self.scopes = {str(k): tuple(str(p) for p in v) for k, v in data.get("scopes", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # A broken state file only costs delete progress: misses start again from zero.
            log.warning("cannot read state file %s (%s); starting with no miss counts", path, exc)

    def _save_state(self) -> None:
        path: Path | None = self.config.state.path
        if path is None:
            return
        data = {"owner": self.owner_tag, "misses": self.misses, "scopes": {k: list(v) for k, v in self.scopes.items()}}
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write state file %s: %s", path, exc)

    # --- the cycle -----------------------------------------------------------------------

    async def _discover_one(self, d: Discoverer[DiscovererConfig]) -> tuple[DiscoveryResult, float]:
        started = time.monotonic()
        try:
            result = await d.discover()
        except Exception as exc:  # a broken discoverer must never stop the others
            reason = f"discoverer crashed: {type(exc).__name__}: {exc}"
            log.warning("discoverer %s failed: %s", d.name, reason)
            result = DiscoveryResult(
                source=d.name,
                scopes=[ScopeOutcome(d.root_scope, False, reason)],
                failures=[ItemFailure(d.name, d.name, reason, kind="crash")],
            )
        return result, time.monotonic() - started

    async def discover(self) -> list[tuple[DiscoveryResult, float]]:
        return list(await asyncio.gather(*(self._discover_one(d) for d in self._discoverers)))

    async def run_once(
        self, *, dry_run: bool = False, stop: asyncio.Event | None = None, report: Report | None = None
    ) -> Report:
        """Run one full cycle and return its report. Never raises for soft errors.

        Pass ``report`` to keep a handle on it: a caller that cancels the cycle (the daemon at
        the end of its grace period) can still say what was applied.
        """
        report = report or Report()
        report.dry_run = dry_run
        report.started_at = time.time()
        started = time.monotonic()
        try:
            await self._cycle(report, dry_run=dry_run, stop=stop)
        finally:
            report.duration = time.monotonic() - started
        return report

    async def _cycle(self, report: Report, *, dry_run: bool, stop: asyncio.Event | None) -> None:
        results = await self.discover()
        outcomes: dict[Scope, bool] = {}
        findings = []
        for result, took in results:
            stats = DiscovererStats(
                findings=len(result.findings),
                failures=len(result.failures),
                skipped=len(result.skipped),
                ok=result.ok,
                duration=took,
            )
            report.discoverers[result.source] = stats
            findings.extend(result.findings)
            for s in result.scopes:
                outcomes[s.scope] = outcomes.get(s.scope, True) and s.ok
            for f in result.failures:
                report.failures.append(Failure("discover", f.item, f.reason, f.source, f.kind))
            for f in result.skipped:
                log.info("skipped %s in %s: %s", f.item, f.source, f.reason)
            report.notes.extend(f"{result.source}: {note}" for note in result.notes)
        all_ok = all(r.ok for r, _ in results)

        mapped = map_findings(findings, owner_tag=self.owner_tag)
        for f in mapped.failures:
            report.failures.append(Failure("map", f.item, f.reason, f.source, f.kind))
            all_ok = False

        client = self.client
        current: dict[str, CurrentService] = {}
        if client is None:
            if not dry_run:
                report.fatal = "openmetadata.host is not set (config or OPENMETADATA_HOST); nothing can be written"
                report.fatal_kind = "config"
                return
            report.notes.append("openmetadata.host is not set: planned against an empty catalog")
        else:
            try:
                for entity in await client.list_services():
                    svc = CurrentService.from_entity(entity)
                    current[svc.name] = svc
            except (OpenMetadataError, KeyError, TypeError, ValueError) as exc:
                report.fatal = f"cannot read ML model services from OpenMetadata: {exc}"
                report.fatal_kind = (
                    "openmetadata_auth" if isinstance(exc, OpenMetadataAuthError) else "openmetadata_unavailable"
                )
                log.error("%s", report.fatal)
                return

        plan = compute_plan(
            mapped.desired,
            current,
            owner_tag=self.owner_tag,
            policy=self.config.policy,
            stale_after=self.config.stale_after,
            max_delete_fraction=self.config.max_delete_fraction,
            outcomes=outcomes,
            all_scopes_ok=all_ok,
            misses=self.misses,
            known_scopes=self.scopes,
            protected=mapped.protected,
        )
        report.plan = plan
        for c in plan.conflicts:
            report.outcomes["conflict"] += 1
            log.warning("conflict: %s", c.reason)
        report.outcomes["skipped"] += len(plan.skipped)
        report.outcomes["unchanged"] += len(plan.unchanged)
        if dry_run:
            return
        assert client is not None  # a missing host returned above unless dry_run
        await self._apply(client, plan, report, stop)
        self.misses = dict(plan.misses)
        self.scopes = dict(plan.scopes)
        self._save_state()

    async def _apply(self, client: OpenMetadataClient, plan: Plan, report: Report, stop: asyncio.Event | None) -> None:
        def stopped() -> bool:
            return stop is not None and stop.is_set()

        try:
            for change in plan.restore:
                if stopped():
                    break
                assert change.service_id is not None
                try:
                    await client.restore(change.service_id)
                except OpenMetadataAuthError:
                    raise
                except OpenMetadataError as exc:
                    report.failures.append(Failure("restore", change.name, str(exc), change.source))

            bodies = [dict(c.body) for c in plan.writes if c.body is not None]
            expected: dict[str, Outcome] = {c.name: _expected(c) for c in plan.writes}
            results = await client.upsert(bodies, expected=expected, stop=stop) if bodies else []
            self._record_writes(results, plan, report)

            for change in plan.delete:
                if stopped():
                    break
                assert change.service_id is not None
                try:
                    await client.delete(change.service_id)
                except OpenMetadataAuthError:
                    raise
                except OpenMetadataError as exc:
                    report.failures.append(Failure("delete", change.name, str(exc)))
                else:
                    report.outcomes["deleted"] += 1
                    report.applied.append(change.name)
                    log.info("deleted %s: %s", change.name, change.reason)
        except OpenMetadataAuthError as exc:
            if isinstance(exc, WritesStopped):
                # Writes confirmed before the refusal are applied: the report must say so.
                self._record_writes(exc.results, plan, report)
            # No retry storm: the token or the bot's role is wrong; stop writing this cycle.
            report.fatal = f"OpenMetadata refused the agent ({exc}); writes stopped for this cycle"
            report.fatal_kind = "openmetadata_auth"
            log.error("%s", report.fatal)
        wanted = {c.name for c in (*plan.writes, *plan.delete)}
        report.not_applied = sorted(wanted - set(report.applied))
        if stopped() and report.not_applied:
            report.interrupted = True

    def _record_writes(self, results: Sequence[WriteResult], plan: Plan, report: Report) -> None:
        sources: Mapping[str, str | None] = {c.name: c.source for c in plan.writes}
        for r in results:
            if r.ok:
                report.outcomes[r.outcome] += 1
                report.applied.append(r.name)
            else:
                report.outcomes["failed"] += 1
                report.failures.append(Failure("write", r.name, r.message, sources.get(r.name), kind=_kind(r)))


def _expected(change: Change) -> Outcome:
    return {"create": "created", "restore": "restored"}.get(change.action, "updated")  # type: ignore[return-value]


def _kind(result: WriteResult) -> str:
    if result.status is None:
        return "unavailable"
    return f"http_{result.status}"


def config_secrets(config: AgentConfig) -> list[str]:
    """Every secret value the config holds (disabled discoverers too), known before any cycle.

    Secrets learned while running (a ``uris_file``'s passwords, AWS keys in use) come from
    :meth:`Agent.secrets` instead.
    """
    out = [config.openmetadata.token.get_secret_value()] if config.openmetadata.token is not None else []
    out += [s for d in config.discoverers for s in build(d).secrets()]
    return [s for s in out if s]


def describe(config: AgentConfig) -> dict[str, Any]:
    """The resolved config as plain data with every secret redacted (``validate-config``).

    SecretStr fields dump as ``**********``, but some secrets live in plain strings: the
    password of a tracking or registry URI. Those are masked by value (each discoverer knows
    its own, disabled ones included) and by the ``user:password@`` pattern.
    """
    secrets = config_secrets(config)

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, secrets)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    data: dict[str, Any] = clean(config.model_dump(mode="json"))
    return data
