"""The ingestion pipeline step of a cycle: plan after the service plan, delete before, write after.

The agent calls three things: :meth:`PipelineStep.plan` (reads only, also in a dry run),
:meth:`PipelineStep.delete` before the service writes and deletes (a service that still has a
pipeline cannot be deleted), and :meth:`PipelineStep.write` after them (a new service's id is
needed for its pipeline). Failures stay local: each becomes a ``pipeline`` failure of its
service in the report, with the server's reason; nothing here sets ``report.fatal`` or
stops the services from being written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from mlsvc_discover._errors import OpenMetadataAuthError, OpenMetadataError
from mlsvc_discover.config import AgentConfig
from mlsvc_discover.discoverers.base import Finding
from mlsvc_discover.mapper import DesiredService
from mlsvc_discover.openmetadata.client import OpenMetadataClient
from mlsvc_discover.openmetadata.entities import CurrentService
from mlsvc_discover.openmetadata.pipelines import PipelineClient, PipelineServiceResponse
from mlsvc_discover.pipelines import (
    SERVICE_ENTITY_TYPE,
    CurrentPipeline,
    PipelineChange,
    PipelinePlan,
    WantedPipeline,
    compute_pipeline_plan,
    pipeline_name,
)
from mlsvc_discover.plan import Plan
from mlsvc_discover.report import CycleFailure, Report

__all__ = ["PipelineStep"]

log = logging.getLogger(__name__)

_NO_CLIENT = (
    "OpenMetadata has no pipeline service client (Airflow or Argo) configured: the pipeline is saved but not "
    "deployed, so it will not run (server: {reason!r})"
)
_FORBIDDEN_HINT = "; give the bot Create, EditAll, Delete, Deploy and Trigger on ingestion pipelines"


class _Stopped(Exception):
    """The token was refused (401): no more pipeline requests this cycle."""


class PipelineStep:
    """One cycle's pipeline work for ``config``; ``client`` is None when there is no server."""

    def __init__(self, config: AgentConfig, client: OpenMetadataClient | None) -> None:
        self.config = config
        self.name = pipeline_name(config.ownership_classification, config.owner_id)
        self.owner = f"{config.ownership_classification}.{config.owner_id}"
        self._om = client
        self._client = PipelineClient(client, page_size=config.openmetadata.page_size) if client else None
        self._service_ids: dict[str, str] = {}
        self._sem = asyncio.Semaphore(config.openmetadata.max_concurrency)
        self._refused = False
        # Changes a stop left unsent; the service step rewrites report.not_applied, so they are
        # added to it again after the service writes.
        self._not_applied: list[str] = []
        self.plan_: PipelinePlan | None = None

    def wanted(
        self,
        findings: Iterable[Finding],
        desired: Mapping[str, DesiredService],
        plan: Plan,
        current: Mapping[str, CurrentService],
    ) -> list[WantedPipeline]:
        """Every desired service the agent owns or creates, with its resolved ingestion settings."""
        layers = {(f.source, f.key): f.metadata.ingestion for f in findings}
        conflicts = {c.name for c in plan.conflicts}
        out: list[WantedPipeline] = []
        for name, want in desired.items():
            if name in conflicts:
                continue
            settings = self.config.ingestion.merged(layers.get((want.source, want.key))).resolve()
            cur = current.get(name)
            out.append(WantedPipeline(name, settings, cur.id if cur is not None else None, want.source))
        return out

    async def plan(
        self,
        report: Report,
        *,
        findings: Iterable[Finding],
        desired: Mapping[str, DesiredService],
        plan: Plan,
        current: Mapping[str, CurrentService],
    ) -> PipelinePlan | None:
        """Read the agent's pipelines (when pipelines are in play) and plan them into the report."""
        wanted = self.wanted(findings, desired, plan, current)
        deletes = {c.name: c.service_id for c in plan.delete if c.service_id is not None}
        in_play = any(w.settings.enabled for w in wanted) or (self.config.policy == "sync" and (wanted or deletes))
        if not in_play:
            return None
        existing: list[CurrentPipeline] = []
        if self._client is not None:
            try:
                existing = [CurrentPipeline.from_entity(e) for e in await self._client.list()]
            except (OpenMetadataError, KeyError, TypeError, ValueError) as exc:
                reason = f"cannot list ingestion pipelines, none planned this cycle: {exc}"
                log.warning("%s", reason)
                report.failures.append(CycleFailure("pipeline", "ingestionPipelines", reason, kind=_kind(exc)))
                return None
        self.plan_ = compute_pipeline_plan(
            wanted, existing, name=self.name, owner=self.owner, policy=self.config.policy, service_deletes=deletes
        )
        report.pipeline_plan = self.plan_
        for c in self.plan_.conflicts:
            report.pipeline_outcomes["conflict"] += 1
            log.warning("pipeline conflict on %s: %s", c.service, c.reason)
        report.pipeline_outcomes["held"] += len(self.plan_.held)
        report.pipeline_outcomes["unchanged"] += len(self.plan_.unchanged)
        return self.plan_

    # --- apply ---------------------------------------------------------------------------------

    async def delete(self, report: Report, stop: asyncio.Event | None = None) -> None:
        """Delete the agent's pipelines that go (before any service delete)."""
        if self.plan_ is None or self._client is None:
            return
        await self._each(self.plan_.delete, self._delete_one, report, stop)

    async def write(self, report: Report, stop: asyncio.Event | None = None) -> None:
        """Create, update and deploy the agent's pipelines (after the services are written)."""
        if self.plan_ is None or self._client is None:
            return
        p = self.plan_
        await self._learn_service_ids(p, report)
        await self._each((*p.create, *p.update), self._write_one, report, stop)
        await self._each(p.deploy, self._deploy_only, report, stop)
        report.not_applied.extend(n for n in self._not_applied if n not in report.not_applied)

    async def _each(
        self,
        changes: Iterable[PipelineChange],
        action: Callable[[PipelineChange, Report], Awaitable[None]],
        report: Report,
        stop: asyncio.Event | None,
    ) -> None:
        async def guarded(change: PipelineChange) -> None:
            async with self._sem:
                # Checked once a slot is held, so a stop or a refused token halts the queue.
                if self._refused:
                    return
                if stop is not None and stop.is_set():
                    self._not_applied.append(f"{change.service} (pipeline {change.action})")
                    report.interrupted = True
                    return
                try:
                    await action(change, report)
                except _Stopped:
                    return
                except OpenMetadataError as exc:
                    self._fail(report, change, f"{change.action} failed: {exc}", _kind(exc))

        await asyncio.gather(*(guarded(c) for c in changes))

    def _fail(self, report: Report, change: PipelineChange, reason: str, kind: str) -> None:
        report.pipeline_outcomes["failed"] += 1
        log.warning("pipeline %s on %s: %s", change.pipeline, change.service, reason)
        report.failures.append(CycleFailure("pipeline", change.service, reason, change.source, kind))

    async def _call(self, report: Report, change: PipelineChange, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run one request; a 401 stops the step (one failure), a 403 fails only this pipeline."""
        try:
            return await make()
        except OpenMetadataAuthError as exc:
            if exc.status == 403:
                # The client's own hint is about services; this one names the pipeline operations.
                message = str(exc).split("; give the bot permission")[0]
                raise OpenMetadataError(f"{message}{_FORBIDDEN_HINT}", status=403) from exc
            if not self._refused:
                self._refused = True
                self._fail(report, change, f"OpenMetadata refused the token ({exc}); pipeline step stopped", "auth")
            raise _Stopped from exc

    async def _delete_one(self, change: PipelineChange, report: Report) -> None:
        assert self._client is not None
        assert change.pipeline_id is not None
        client, pipeline_id = self._client, change.pipeline_id
        await self._call(report, change, lambda: client.delete(pipeline_id))
        report.pipeline_outcomes["deleted"] += 1
        log.info("deleted pipeline %s of %s: %s", change.pipeline, change.service, change.reason)

    async def _learn_service_ids(self, plan: PipelinePlan, report: Report) -> None:
        """Ids of the services created this cycle: one list instead of one GET per new service."""
        missing = [c for c in plan.create if c.service_id is None]
        if len(missing) < 2 or self._om is None:
            return
        try:
            listed = await self._om.list_services(include="non-deleted")
        except OpenMetadataError as exc:
            log.info("cannot list services for their ids (%s); looking them up one by one", exc)
            return
        self._service_ids.update({str(e["name"]): str(e["id"]) for e in listed if "name" in e and "id" in e})

    async def _write_one(self, change: PipelineChange, report: Report) -> None:
        assert self._client is not None
        assert change.body is not None
        client = self._client
        service_id = change.service_id or self._service_ids.get(change.service)
        if service_id is None:
            service_id = await self._call(report, change, lambda: client.service_id(change.service))
            if service_id is None:
                self._fail(report, change, "its service is not in OpenMetadata (its write failed?)", "service_missing")
                return
        body = {**change.body, "service": {"id": service_id, "type": SERVICE_ENTITY_TYPE}}
        entity = await self._call(report, change, lambda: client.put(body))
        outcome = "created" if change.action == "create" else "updated"
        report.pipeline_outcomes[outcome] += 1
        log.info("%s pipeline %s of %s: %s", outcome, change.pipeline, change.service, change.reason)
        deployed = await self._deploy(change, str(entity["id"]), report)
        if deployed and change.trigger:
            pipeline_id = str(entity["id"])
            answer: PipelineServiceResponse = await self._call(report, change, lambda: client.trigger(pipeline_id))
            if answer.ok:
                report.pipeline_outcomes["triggered"] += 1
            else:
                self._fail(report, change, f"trigger failed: {answer.reason} (code {answer.code})", "trigger_failed")

    async def _deploy_only(self, change: PipelineChange, report: Report) -> None:
        assert change.pipeline_id is not None
        await self._deploy(change, change.pipeline_id, report)

    async def _deploy(self, change: PipelineChange, pipeline_id: str, report: Report) -> bool:
        assert self._client is not None
        client = self._client
        answer: PipelineServiceResponse = await self._call(report, change, lambda: client.deploy(pipeline_id))
        if answer.client_disabled:
            self._fail(report, change, _NO_CLIENT.format(reason=answer.reason), "no_pipeline_client")
            return False
        if not answer.ok:
            self._fail(report, change, f"deploy failed: {answer.reason} (code {answer.code})", "deploy_failed")
            return False
        report.pipeline_outcomes["deployed"] += 1
        return True


def _kind(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return f"http_{status}" if isinstance(status, int) else "unavailable"
