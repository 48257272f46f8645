"""The agent: one :meth:`Agent.run_once` behind ``--once``, ``--dry-run`` and the daemon.

discover (all discoverers concurrently) -> map -> read OpenMetadata -> plan -> apply -> report.

Soft errors (a discoverer, a URI, an account, OpenMetadata being down for a cycle) are
recorded in the report and the caller carries on; only a bad config is hard (it never gets
this far). Bookkeeping for safe deletes (consecutive misses, the scope of each owned
service) lives in memory and, when ``state.path`` is set, in a JSON file, written only after a
cycle that really ran (never by a dry run); see :mod:`mlsvc_discover.state`.

Every cycle has a deadline (``cycle_timeout``): discoverers get the first
:data:`DISCOVERY_SHARE` of it, each on its own (one still running then is a failed scope, so
nothing it owns is deleted); reading and writing OpenMetadata get what is left. Work cut off by
the deadline is cancelled, not waited for, so a call blocked in a worker thread cannot hold the
cycle: the thread is abandoned (see :func:`mlsvc_discover.cli.main` for how it cannot hold the
process either).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from mlsvc_discover._errors import (
    OpenMetadataAuthError,
    OpenMetadataBadAnswer,
    OpenMetadataError,
    OpenMetadataSetupError,
    StateError,
)
from mlsvc_discover._logging import redact
from mlsvc_discover.config import AgentConfig
from mlsvc_discover.discoverers.base import (
    Discoverer,
    DiscovererConfig,
    DiscoveryResult,
    ItemFailure,
    Progress,
    ProgressCallback,
    Scope,
    ScopeOutcome,
)
from mlsvc_discover.discoverers.registry import build
from mlsvc_discover.mapper import DesiredService, map_findings, owner_tag_fqn
from mlsvc_discover.openmetadata.client import OpenMetadataClient, Outcome, WriteResult, WritesStopped
from mlsvc_discover.openmetadata.entities import CurrentService
from mlsvc_discover.pipeline_step import PipelineStep
from mlsvc_discover.plan import Change, History, Looked, Plan, apply_policy, diff
from mlsvc_discover.report import CycleFailure, DiscovererStats, FindingRecord, Report, ScopeRecord
from mlsvc_discover.state import DeleteState, StateFile

__all__ = ["DISCOVERY_SHARE", "Agent", "config_secrets", "describe"]

log = logging.getLogger(__name__)

DISCOVERY_SHARE = 0.75
"""Share of ``cycle_timeout`` the discoverers may use; the rest is kept for OpenMetadata."""
# Closing is cleanup: a discoverer whose threads are stuck must not hold the caller.
_CLOSE_TIMEOUT = 2.0
# Oldest OpenMetadata with ``domains`` (a list) and ``fields=domains``: older ones answer 400.
MIN_VERSION = (1, 8)
# The 404 the server gives for a tag, domain, user or team a request names that does not exist.
_MISSING_REFERENCE = re.compile(r"\b(tag|domain|user|team|dataProduct) instance for (.+?) not found")


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
        self._progress: ProgressCallback | None = None
        self._state = StateFile(config.state.path) if config.state.path is not None else None
        # Per-process facts about the server: the marker tag made sure of, the version refused,
        # and what has been said once already (set-up help, values the server keeps).
        self._marker_ready = False
        self._unsupported: str | None = None
        self._said: set[str] = set()
        self._load_state()

    def set_progress(self, callback: ProgressCallback | None) -> None:
        """Send discovery progress (per discoverer) to ``callback``: the CLI's line on a terminal."""
        self._progress = callback
        for d in self._discoverers:
            d.set_progress(callback)

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
        async def close(d: Discoverer[DiscovererConfig]) -> None:
            try:
                await asyncio.wait_for(d.aclose(), _CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning("discoverer %s did not close within %gs; leaving it behind", d.name, _CLOSE_TIMEOUT)
            except Exception:  # closing must never mask the cycle's own outcome
                log.debug("closing discoverer %s failed", d.name, exc_info=True)

        await asyncio.gather(*(close(d) for d in self._discoverers))
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._state is not None:
            self._state.unlock()

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
        if self._state is not None:
            loaded = self._state.load(self.owner_tag)
            self.misses, self.scopes = loaded.misses, loaded.scopes

    def claim_state(self) -> None:
        """Lock the state file and, under ``sync``, check that it can be written.

        Raises StateLockedError when another agent holds it, StateError when it cannot be
        written. Called before anything is contacted (``--once``, the long-running agent);
        cycles call it too, so that a library user gets the same protection.
        """
        if self._state is None or self._state.locked:
            return
        self._state.lock()
        if self.config.policy == "sync":
            try:
                self._state.probe()
            except StateError:
                self._state.unlock()
                raise

    def _save_state(self, report: Report) -> None:
        if self._state is None:
            return
        try:
            self._state.save(self.owner_tag, DeleteState(self.misses, self.scopes))
        except StateError as exc:
            if self.config.policy != "sync":
                log.warning("%s", exc)  # only sync needs the counts
                return
            # Without the counts, sync would silently never delete: the run must say so.
            log.error("%s", exc)
            report.failures.append(CycleFailure("state", str(self._state.path), str(exc), "agent", "state_unwritable"))

    # --- the cycle -----------------------------------------------------------------------

    async def _discover_one(self, d: Discoverer[DiscovererConfig], until: float) -> tuple[DiscoveryResult, float]:
        started = time.monotonic()
        try:
            async with asyncio.timeout_at(_loop_time(until)):
                result = await d.discover()
        except TimeoutError:
            limit = self.config.cycle_timeout * DISCOVERY_SHARE
            reason = f"did not finish within {limit:g}s, its share of the cycle deadline (cycle_timeout)"
            log.warning("discoverer %s failed: %s", d.name, reason)
            result = DiscoveryResult(
                source=d.name,
                scopes=[ScopeOutcome(d.root_scope, False, reason)],
                failures=[ItemFailure(d.name, d.name, reason, kind="deadline")],
            )
        except Exception as exc:  # a broken discoverer must never stop the others
            reason = f"discoverer crashed: {type(exc).__name__}: {exc}"
            log.warning("discoverer %s failed: %s", d.name, reason)
            result = DiscoveryResult(
                source=d.name,
                scopes=[ScopeOutcome(d.root_scope, False, reason)],
                failures=[ItemFailure(d.name, d.name, reason, kind="crash")],
            )
        if self._progress is not None:
            try:
                self._progress(Progress(d.name, 0, 0, len(result.failures), finished=True))
            except Exception:  # a progress display must never cost a cycle
                log.debug("progress callback failed", exc_info=True)
        return result, time.monotonic() - started

    async def discover(self, until: float | None = None) -> list[tuple[DiscoveryResult, float]]:
        """Run every discoverer at once; ``until`` (monotonic) is the deadline of each."""
        if until is None:
            until = time.monotonic() + self.config.cycle_timeout * DISCOVERY_SHARE
        return list(await asyncio.gather(*(self._discover_one(d, until) for d in self._discoverers)))

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
        timeout = self.config.cycle_timeout
        try:
            if not dry_run:
                self.claim_state()
            async with asyncio.timeout_at(_loop_time(started + timeout)):
                await self._cycle(report, dry_run=dry_run, stop=stop, started=started)
        except StateError as exc:
            report.fatal = str(exc)
            report.fatal_kind = "state"
            log.error("%s", report.fatal)
        except TimeoutError:
            stage = "writing to" if report.plan is not None else "reading"
            report.fatal = (
                f"the cycle hit its deadline (cycle_timeout {timeout:g}s) while {stage} OpenMetadata; "
                "writes not confirmed by then are not applied"
            )
            report.fatal_kind = "cycle_deadline"
            if report.plan is not None:
                wanted = {c.name for c in (*report.plan.writes, *report.plan.delete)}
                report.not_applied = sorted(wanted - set(report.applied))
                report.interrupted = bool(report.not_applied)  # so the report lists them
            log.error("%s", report.fatal)
        finally:
            report.duration = time.monotonic() - started
        return report

    async def _cycle(self, report: Report, *, dry_run: bool, stop: asyncio.Event | None, started: float) -> None:  # noqa: PLR0912, PLR0915 - one cycle, stage after stage, each with its own soft-failure exit
        results = await self.discover(until=started + self.config.cycle_timeout * DISCOVERY_SHARE)
        outcomes: dict[Scope, bool] = {}
        findings = []
        for result, took in results:
            stats = DiscovererStats(
                findings=len(result.findings),
                failures=len(result.failures),
                ignored=len(result.ignored),
                ok=result.ok,
                duration=took,
            )
            report.discoverers[result.source] = stats
            findings.extend(result.findings)
            for s in result.scopes:
                outcomes[s.scope] = outcomes.get(s.scope, True) and s.ok
            report.scopes.extend(ScopeRecord(result.source, s.scope, s.ok, s.error) for s in result.scopes)
            for f in result.failures:
                report.failures.append(CycleFailure("discover", f.item, f.reason, f.source, f.kind))
            for f in result.ignored:
                log.info("ignored %s in %s: %s", f.item, f.source, f.reason)
            report.notes.extend(f"{result.source}: {note}" for note in result.notes)
        all_ok = all(r.ok for r, _ in results)

        mapped = map_findings(findings, owner_tag=self.owner_tag)
        names = {(d.source, d.key): d.name for d in mapped.desired.values()}
        report.findings = [
            FindingRecord(f.source, f.key, f.kind.value, f.scope, names.get((f.source, f.key))) for f in findings
        ]
        for f in mapped.failures:
            report.failures.append(CycleFailure("map", f.item, f.reason, f.source, f.kind))
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
                if not await self._supported(client, report):
                    return
                for entity in await client.list_services():
                    svc = CurrentService.from_entity(entity)
                    current[svc.name] = svc
            except (OpenMetadataError, ValueError) as exc:
                if isinstance(exc, ValueError):
                    exc = OpenMetadataBadAnswer(f"OpenMetadata answered something unexpected: {exc}")
                report.fatal = f"cannot read ML model services from OpenMetadata: {exc}"
                report.fatal_kind = (
                    "openmetadata_auth"
                    if isinstance(exc, OpenMetadataAuthError)
                    else "openmetadata_bad_answer"
                    if isinstance(exc, OpenMetadataBadAnswer)
                    else "openmetadata_unavailable"
                )
                log.error("%s", report.fatal)
                return

        changes = diff(
            mapped.desired,
            current,
            owner_tag=self.owner_tag,
            looked=Looked(outcomes, all_ok),
            history=History(self.misses, self.scopes),
            stale_after=self.config.stale_after,
            protected=mapped.protected,
        )
        plan = apply_policy(changes, self.config.policy, max_delete_fraction=self.config.max_delete_fraction)
        report.plan = plan
        for c in plan.conflicts:
            report.outcomes["conflict"] += 1
            log.warning("conflict: %s", c.reason)
        report.outcomes["held"] += len(plan.held)
        report.outcomes["unchanged"] += len(plan.unchanged)
        for name, kept in plan.kept:
            self._say_once(
                report,
                f"kept:{name}:{kept}",
                f"{name}: OpenMetadata keeps the {kept} stored on the service against the agent's update, so the "
                f"configured {kept} is not applied (clear it in OpenMetadata to let the agent set it)",
            )
        # Ingestion pipelines (pipeline_step.py): planned here, deleted before the services
        # (a service with a pipeline cannot be deleted), written after them (new services' ids).
        pipelines = PipelineStep(self.config, client)
        await pipelines.plan(report, findings=findings, desired=mapped.desired, plan=plan, current=current)
        if dry_run:
            if client is not None:
                await self._check_names(client, mapped.desired, report)
            return
        assert client is not None  # a missing host returned above unless dry_run
        if plan.writes and not self._marker_ready:
            try:
                await self._ensure_marker(client)
            except OpenMetadataError as exc:
                report.fatal = f"cannot make sure the ownership tag {self.owner_tag} exists: {exc}"
                # The token may not create the tag: a matter of the bot's role, as a 401/403 is.
                refused = isinstance(exc, OpenMetadataAuthError | OpenMetadataSetupError)
                report.fatal_kind = "openmetadata_auth" if refused else "openmetadata_unavailable"
                report.not_applied = sorted({c.name for c in (*plan.writes, *plan.delete)})
                self._say_once(report, "setup", report.fatal, note=False)
                return
        await pipelines.delete(report, stop)
        await self._apply(client, plan, report, stop)
        if report.fatal is None:
            await pipelines.write(report, stop)
        self.misses = dict(plan.misses)
        self.scopes = dict(plan.scopes)
        self._save_state(report)

    async def _apply(self, client: OpenMetadataClient, plan: Plan, report: Report, stop: asyncio.Event | None) -> None:  # noqa: PLR0912, PLR0915 - the apply stage; each write kind accounts for its outcome where it happens
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
                    report.failures.append(CycleFailure("restore", change.name, str(exc), change.source))

            bodies = [dict(c.body) for c in plan.writes if c.body is not None]
            expected: dict[str, Outcome] = {c.name: _expected(c) for c in plan.writes}
            results = await client.upsert(bodies, expected=expected, stop=stop) if bodies else []
            lost = {r.name for r in results if not r.ok and self._marker_missing(r)}
            if lost and not stopped():
                # Someone deleted the marker while the agent runs: make it again, once, and
                # write what it refused, rather than report every service as failed.
                log.warning("the ownership tag %s disappeared from OpenMetadata; creating it again", self.owner_tag)
                self._marker_ready = False
                try:
                    await self._ensure_marker(client)
                except OpenMetadataError as exc:
                    self._record_writes(results, plan, report)
                    raise _SetupFailed(str(exc)) from exc
                kept = [r for r in results if r.name not in lost]
                try:
                    again = await client.upsert([b for b in bodies if b["name"] in lost], expected=expected, stop=stop)
                except WritesStopped as exc:
                    raise WritesStopped(exc, kept + exc.results) from exc
                results = kept + again
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
                    if exc.status == 400 and "not empty" in str(exc):
                        # Kept on purpose: a recursive delete would take ML models and ingestion
                        # pipelines that people or pipelines added with it (docs/guarantees.md).
                        report.not_empty.append(change.name)
                        report.notes.append(
                            f"not deleted {change.name}: it still holds ML models or ingestion pipelines, and "
                            "the agent never deletes recursively; delete them (or the service) in OpenMetadata"
                        )
                        log.warning("not deleting %s: OpenMetadata says it is not empty", change.name)
                        continue
                    report.failures.append(CycleFailure("delete", change.name, str(exc)))
                else:
                    report.outcomes["deleted"] += 1
                    report.applied.append(change.name)
                    log.info("deleted %s: %s", change.name, change.reason)
        except _SetupFailed as exc:
            report.fatal = str(exc)
            report.fatal_kind = "openmetadata_auth"
            log.error("%s", report.fatal)
        except OpenMetadataAuthError as exc:
            if isinstance(exc, WritesStopped):
                # Writes confirmed before the refusal are applied: the report must say so.
                self._record_writes(exc.results, plan, report)
            # No retry storm: the token or the bot's role is wrong; stop writing this cycle.
            report.fatal = f"OpenMetadata refused the agent ({exc}); writes stopped for this cycle"
            report.fatal_kind = "openmetadata_auth"
            log.error("%s", report.fatal)
        wanted = {c.name for c in (*plan.writes, *plan.delete)} - set(report.not_empty)
        report.not_applied = sorted(wanted - set(report.applied))
        if stopped() and report.not_applied:
            report.interrupted = True
        elif wanted and not report.applied and report.fatal is None:
            # Nothing it had to write was accepted (a marker refused, every item rejected):
            # the agent is not doing its job, whatever the per-item reasons, and /readyz says so.
            first = next((f.reason for f in report.failures if f.stage in ("write", "restore", "delete")), "")
            report.fatal = f"OpenMetadata accepted none of the {len(wanted)} writes this cycle needed ({first})"
            report.fatal_kind = "openmetadata_writes_refused"
            log.error("%s", report.fatal)

    def _record_writes(self, results: Sequence[WriteResult], plan: Plan, report: Report) -> None:
        sources: Mapping[str, str | None] = {c.name: c.source for c in plan.writes}
        for r in results:
            if r.ok:
                report.outcomes[r.outcome] += 1
                report.applied.append(r.name)
            else:
                report.outcomes["failed"] += 1
                message = r.message
                missing = _MISSING_REFERENCE.search(message) if r.status == 404 else None
                if missing is not None and missing.group(2) != self.owner_tag:
                    message = (
                        f"the {missing.group(1)} {missing.group(2)!r} named in the config does not exist in "
                        f"OpenMetadata; create it there or fix the config ({message})"
                    )
                report.failures.append(CycleFailure("write", r.name, message, sources.get(r.name), kind=_kind(r)))

    # --- the server: version, ownership marker, names the config uses ---------------------

    def _say_once(self, report: Report, key: str, text: str, *, note: bool = True) -> None:
        """Log ``text`` once per process (a dry run is a process: it always says it)."""
        if key in self._said:
            return
        self._said.add(key)
        if note:
            report.notes.append(text)
            log.info("%s", text)
        else:
            log.error("%s", text)

    async def _supported(self, client: OpenMetadataClient, report: Report) -> bool:
        """Refuse a server older than :data:`MIN_VERSION` (asked once per process)."""
        if self._unsupported is None:
            version = await client.server_version()
            numbers = re.findall(r"\d+", version or "")
            if len(numbers) >= 2 and (int(numbers[0]), int(numbers[1])) < MIN_VERSION:
                self._unsupported = (
                    f"OpenMetadata {version} is not supported: mlsvc-discover needs OpenMetadata "
                    f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or later (multi-domain `domains`); nothing is read or written"
                )
                log.error("%s", self._unsupported)
            elif version is not None:
                self._unsupported = ""  # else unknown (the server did not say): asked again next cycle
        if self._unsupported:
            report.fatal = self._unsupported
            report.fatal_kind = "openmetadata_version"
            return False
        return True

    def _marker_missing(self, result: WriteResult) -> bool:
        return result.status == 404 and f"tag instance for {self.owner_tag} not found" in result.message

    async def _ensure_marker(self, client: OpenMetadataClient) -> None:
        """Make sure the classification and the marker tag exist; leave them alone when they do."""
        classification = self.config.ownership_classification
        tag = self.config.owner_id
        try:
            if not await client.classification_exists(classification):
                await client.put_classification(
                    classification, "Marks ML model services that mlsvc-discover manages (one tag per agent)."
                )
                log.info("created the classification %s", classification)
            if not await client.tag_exists(self.owner_tag):
                await client.put_tag(classification, tag, f"ML model services managed by mlsvc-discover {tag}.")
                log.info("created the ownership tag %s", self.owner_tag)
        except OpenMetadataError as exc:
            if exc.status not in (401, 403):
                raise
            host = self.config.openmetadata.host
            auth = "-H 'Authorization: Bearer <ADMIN_TOKEN>' -H 'Content-Type: application/json'"
            make_classification = json.dumps({"name": classification, "description": "mlsvc-discover ownership"})
            make_tag = json.dumps({"classification": classification, "name": tag, "description": "mlsvc-discover"})
            raise OpenMetadataSetupError(
                f"the ownership tag {self.owner_tag} does not exist in OpenMetadata and this token may not create "
                f"it ({exc}). Grant the bot Create on classifications and tags, or run once, with an admin's "
                "token (both commands are idempotent):\n"
                f"  curl -X PUT {host}/v1/classifications {auth} -d '{make_classification}'\n"
                f"  curl -X PUT {host}/v1/tags {auth} -d '{make_tag}'",
                status=exc.status,
            ) from exc
        self._marker_ready = True

    async def _check_names(
        self, client: OpenMetadataClient, desired: Mapping[str, DesiredService], report: Report
    ) -> None:
        """``--dry-run``: report tags, domains and owners the config names that do not exist."""
        users: dict[tuple[str, str], list[str]] = {}
        for want in desired.values():
            body = want.body()
            for t in body.get("tags", []):
                if t["tagFQN"] != self.owner_tag:
                    users.setdefault(("tag", t["tagFQN"]), []).append(want.name)
            for d in body.get("domains", []):
                users.setdefault(("domain", d), []).append(want.name)
            for o in body.get("owners", []):
                users.setdefault((o["type"], o["id"]), []).append(want.name)
        try:
            if not await client.tag_exists(self.owner_tag):
                report.notes.append(
                    f"the ownership tag {self.owner_tag} does not exist yet; a real run creates it "
                    f"(and its classification {self.config.ownership_classification}) before its first write"
                )
            for (kind, key), names in sorted(users.items()):
                if kind == "tag":
                    found = await client.tag_exists(key)
                elif kind == "domain":
                    found = await client.domain_exists(key)
                else:
                    found = await client.owner_exists(kind, key)
                if not found:
                    shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
                    report.failures.append(
                        CycleFailure(
                            "check",
                            key,
                            f"the {kind} {key!r} named in the config does not exist in OpenMetadata; writing "
                            f"{len(names)} service(s) that use it would fail: {shown}",
                            kind="missing_reference",
                        )
                    )
        except OpenMetadataError as exc:
            report.notes.append(f"could not check the names the config uses: {exc}")


class _SetupFailed(Exception):
    """The marker tag vanished mid-run and could not be made again: stop writing this cycle."""


def _loop_time(monotonic: float) -> float:
    """A ``time.monotonic()`` instant on the running loop's clock (they may differ)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic - time.monotonic())


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
