"""Metadata ingestion pipelines of owned services: desired state, ownership and the plan (pure).

One pipeline per owned service whose ingestion is enabled, named :func:`pipeline_name`
(``<ownership_classification>-<owner_id>-metadata``). ``CreateIngestionPipelineRequest`` has no
tags, so the ownership marker is the pair (a service that carries this agent's owner tag, a
pipeline on it with exactly this name): the name is the one field of a pipeline that no PUT
can change (a PUT addresses the pipeline by it) and the UI does not rename pipelines, while the
parent's tag is the marker the agent already relies on. ``displayName``, ``description`` and
``owners`` are edited freely by people (and a bot's PUT cannot put them back), and
``provider: automation`` is what OpenMetadata's AutoPilot marks its own pipelines with, so none
of them is a marker. A pipeline with the agent's name that is not an ML model metadata
pipeline is someone else's: a conflict, never overwritten. Every other pipeline is left alone.

A PUT resets ``deployed`` (and ``enabled``) on the server, so the plan diffs first: a pipeline
whose managed fields match costs no write, one that only lacks a deploy gets a deploy alone.
Managed fields: ``pipelineType``, ``sourceConfig.config`` (type, ``mlModelFilterPattern``,
``markDeletedMlModels``), ``airflowConfig.scheduleInterval`` and ``loggerLevel``. ``enabled`` is
not managed: a person who pauses the agent's pipeline in the UI keeps it paused until the
config changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mlsvc_discover.ingestion import ResolvedIngestion

__all__ = [
    "PIPELINE_TYPE",
    "SERVICE_ENTITY_TYPE",
    "SOURCE_CONFIG_TYPE",
    "CurrentPipeline",
    "PipelineChange",
    "PipelinePlan",
    "WantedPipeline",
    "compute_pipeline_plan",
    "desired_body",
    "pipeline_name",
]

PIPELINE_TYPE = "metadata"
SOURCE_CONFIG_TYPE = "MlModelMetadata"
SERVICE_ENTITY_TYPE = "mlmodelService"
Policy = Literal["upsert-only", "create-only", "sync"]
PipelineAction = Literal["create", "update", "deploy", "delete", "unchanged", "conflict", "hold"]


def pipeline_name(classification: str, owner_id: str) -> str:
    """The name of this agent instance's pipeline on each service it owns."""
    return f"{classification}-{owner_id}-metadata"


def _filter_pattern(settings: ResolvedIngestion) -> dict[str, list[str]] | None:
    out: dict[str, list[str]] = {}
    if settings.includes:
        out["includes"] = list(settings.includes)
    if settings.excludes:
        out["excludes"] = list(settings.excludes)
    return out or None


def desired_body(
    service: str, service_id: str | None, settings: ResolvedIngestion, *, name: str, owner: str
) -> dict[str, Any]:
    """The ``CreateIngestionPipelineRequest`` for ``service``; ``service.id`` is filled when known."""
    config: dict[str, Any] = {"type": SOURCE_CONFIG_TYPE, "markDeletedMlModels": settings.mark_deleted_models}
    pattern = _filter_pattern(settings)
    if pattern is not None:
        config["mlModelFilterPattern"] = pattern
    body: dict[str, Any] = {
        "name": name,
        "displayName": f"ML models of {service}",
        "description": (
            f"Metadata ingestion of the ML models of `{service}`, created and kept in step by mlsvc-discover "
            f"(`{owner}`). Its schedule, filter and logger level come from the agent's config: edits made "
            "here are overwritten at the next config change."
        ),
        "pipelineType": PIPELINE_TYPE,
        "sourceConfig": {"config": config},
        "airflowConfig": {"scheduleInterval": settings.schedule},
        "loggerLevel": settings.logger_level,
        "provider": "user",
    }
    if service_id is not None:
        body["service"] = {"id": service_id, "type": SERVICE_ENTITY_TYPE}
    return body


@dataclass(frozen=True)
class CurrentPipeline:
    """The parts of an OpenMetadata ``IngestionPipeline`` the plan looks at."""

    id: str
    name: str
    service: str  # the service's name ("" when the server did not say)
    service_id: str
    pipeline_type: str
    source_config: Mapping[str, Any]
    schedule: str | None
    logger_level: str
    deployed: bool
    deleted: bool

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any]) -> CurrentPipeline:
        service = entity.get("service") or {}
        config = (entity.get("sourceConfig") or {}).get("config") or {}
        airflow = entity.get("airflowConfig") or {}
        name = str(entity["name"])
        if service.get("type") not in (None, SERVICE_ENTITY_TYPE):
            service_name = ""  # another kind of service's pipeline: never one of the agent's
        else:
            service_name = str(service.get("name") or _service_from_fqn(entity.get("fullyQualifiedName"), name))
        return cls(
            id=str(entity["id"]),
            name=name,
            service=service_name,
            service_id=str(service.get("id") or ""),
            pipeline_type=str(entity.get("pipelineType", "")),
            source_config=dict(config) if isinstance(config, Mapping) else {},
            schedule=airflow.get("scheduleInterval") if isinstance(airflow, Mapping) else None,
            logger_level=str(entity.get("loggerLevel") or "INFO"),
            deployed=bool(entity.get("deployed", False)),
            deleted=bool(entity.get("deleted", False)),
        )

    @property
    def is_model_metadata(self) -> bool:
        """Whether this is an ML model metadata pipeline (the only kind the agent ever makes)."""
        kind = self.source_config.get("type") or SOURCE_CONFIG_TYPE
        return self.pipeline_type == PIPELINE_TYPE and kind == SOURCE_CONFIG_TYPE


def _service_from_fqn(fqn: Any, name: str) -> str:
    """The service name in ``<service FQN>.<pipeline name>``, for an answer that left ``service`` out."""
    suffix = "." + (f'"{name}"' if "." in name and '"' not in name else name)
    if not isinstance(fqn, str) or not fqn.endswith(suffix):
        return ""
    service = fqn[: -len(suffix)]
    return service[1:-1] if len(service) >= 2 and service[0] == service[-1] == '"' else service


def _pattern_key(value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(value, Mapping):
        return (), ()
    return tuple(value.get("includes") or ()), tuple(value.get("excludes") or ())


def diff_fields(settings: ResolvedIngestion, cur: CurrentPipeline) -> list[str]:
    """The managed fields in which ``cur`` differs from ``settings`` (server defaults applied)."""
    fields: list[str] = []
    cfg = cur.source_config
    mark = cfg.get("markDeletedMlModels")
    if (mark if mark is not None else True) != settings.mark_deleted_models or _pattern_key(
        cfg.get("mlModelFilterPattern")
    ) != (settings.includes, settings.excludes):
        fields.append("sourceConfig")
    if cur.schedule != settings.schedule:
        fields.append("schedule")
    if cur.logger_level != settings.logger_level:
        fields.append("loggerLevel")
    return fields


@dataclass(frozen=True)
class WantedPipeline:
    """One owned (or about to be created) service and its resolved ingestion settings."""

    service: str
    settings: ResolvedIngestion
    service_id: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class PipelineChange:
    """One line of the pipeline plan. ``body`` is what would be PUT (None for the rest)."""

    service: str
    action: PipelineAction
    reason: str
    pipeline: str
    source: str | None = None
    service_id: str | None = None
    pipeline_id: str | None = None
    fields: tuple[str, ...] = ()
    body: Mapping[str, Any] | None = None
    trigger: bool = False
    code: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "service": self.service,
            "pipeline": self.pipeline,
            "action": self.action,
            "reason": self.reason,
        }
        if self.source:
            out["source"] = self.source
        if self.fields:
            out["fields"] = list(self.fields)
        if self.trigger:
            out["trigger"] = True
        if self.body is not None:
            out["body"] = dict(self.body)
        return out


@dataclass(frozen=True)
class PipelinePlan:
    """Plain data: pipeline writes (create, update), deploys, deletes, and what is left alone."""

    create: tuple[PipelineChange, ...] = ()
    update: tuple[PipelineChange, ...] = ()
    deploy: tuple[PipelineChange, ...] = ()
    delete: tuple[PipelineChange, ...] = ()
    unchanged: tuple[PipelineChange, ...] = ()
    conflicts: tuple[PipelineChange, ...] = ()
    held: tuple[PipelineChange, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(self.changes())

    def changes(self) -> tuple[PipelineChange, ...]:
        return self.create + self.update + self.deploy + self.delete + self.unchanged + self.conflicts + self.held

    def to_dict(self) -> dict[str, Any]:
        return {
            "create": [c.to_dict() for c in self.create],
            "update": [c.to_dict() for c in self.update],
            "deploy": [c.to_dict() for c in self.deploy],
            "delete": [c.to_dict() for c in self.delete],
            "unchanged": len(self.unchanged),
            "conflicts": [c.to_dict() for c in self.conflicts],
            "held": [c.to_dict() for c in self.held],
        }


def compute_pipeline_plan(  # noqa: PLR0912 - a decision table, one branch per pipeline case
    wanted: Iterable[WantedPipeline],
    current: Iterable[CurrentPipeline],
    *,
    name: str,
    owner: str,
    policy: Policy = "upsert-only",
    service_deletes: Mapping[str, str] | None = None,
) -> PipelinePlan:
    """Classify the agent's pipeline of every wanted service and of every service being deleted.

    ``wanted`` are the services this cycle found and owns (or creates), each with its resolved
    settings; ``current`` every ML model service pipeline on the server; ``service_deletes`` maps
    the services the service plan deletes to their ids (their pipeline goes first). Pure: same
    input, same plan.
    """
    ours: dict[str, CurrentPipeline] = {}
    for p in current:
        if p.name == name and p.service:
            ours[p.service] = p
    create: list[PipelineChange] = []
    update: list[PipelineChange] = []
    deploy: list[PipelineChange] = []
    delete: list[PipelineChange] = []
    unchanged: list[PipelineChange] = []
    conflicts: list[PipelineChange] = []
    held: list[PipelineChange] = []
    deletes = dict(service_deletes or {})

    for want in sorted(wanted, key=lambda w: w.service):
        svc, settings = want.service, want.settings
        cur = ours.get(svc)
        if svc in deletes:
            continue  # handled below: the service goes, and its pipeline first
        if cur is not None and not cur.is_model_metadata:
            conflicts.append(
                PipelineChange(
                    svc,
                    "conflict",
                    f"a {cur.pipeline_type or 'non-metadata'} pipeline named {name!r} already exists on this "
                    "service and is not an ML model metadata pipeline; left alone (rename or delete it)",
                    name,
                    want.source,
                    want.service_id,
                    cur.id,
                    code="name_clash",
                )
            )
            continue
        if not settings.enabled:
            if cur is None or cur.deleted:
                continue
            if policy == "sync":
                delete.append(
                    PipelineChange(
                        svc,
                        "delete",
                        "ingestion is disabled for this service",
                        name,
                        want.source,
                        want.service_id,
                        cur.id,
                        code="disabled",
                    )
                )
            else:
                unchanged.append(
                    PipelineChange(
                        svc,
                        "unchanged",
                        f"ingestion is disabled for this service; the pipeline is kept under policy {policy}",
                        name,
                        want.source,
                        want.service_id,
                        cur.id,
                        code="disabled_kept",
                    )
                )
            continue
        body = desired_body(svc, want.service_id, settings, name=name, owner=owner)
        if cur is None:
            create.append(
                PipelineChange(
                    svc,
                    "create",
                    "no metadata pipeline of this agent on the service",
                    name,
                    want.source,
                    want.service_id,
                    body=body,
                    trigger=settings.run_after_create,
                )
            )
            continue
        fields = diff_fields(settings, cur)
        if cur.deleted:
            fields = ["deleted", *fields]
        if fields and policy == "create-only":
            held.append(
                PipelineChange(
                    svc,
                    "hold",
                    f"differs in {', '.join(fields)}, but policy is create-only",
                    name,
                    want.source,
                    want.service_id,
                    cur.id,
                    tuple(fields),
                    code="create_only",
                )
            )
        elif fields:
            update.append(
                PipelineChange(
                    svc,
                    "update",
                    f"differs in {', '.join(fields)}",
                    name,
                    want.source,
                    want.service_id,
                    cur.id,
                    tuple(fields),
                    body=body,
                )
            )
        elif not cur.deployed:
            deploy.append(
                PipelineChange(svc, "deploy", "up to date but not deployed", name, want.source, want.service_id, cur.id)
            )
        else:
            unchanged.append(
                PipelineChange(svc, "unchanged", "up to date and deployed", name, want.source, want.service_id, cur.id)
            )

    for svc in sorted(deletes):
        cur = ours.get(svc)
        if cur is None or cur.deleted or not cur.is_model_metadata:
            continue
        delete.append(
            PipelineChange(
                svc,
                "delete",
                "its service is being deleted (the server refuses to delete a service that has pipelines)",
                name,
                service_id=deletes[svc],
                pipeline_id=cur.id,
                code="service_deleted",
            )
        )
    return PipelinePlan(
        create=tuple(create),
        update=tuple(update),
        deploy=tuple(deploy),
        delete=tuple(delete),
        unchanged=tuple(unchanged),
        conflicts=tuple(conflicts),
        held=tuple(held),
    )
