"""Ingestion pipelines, the pure parts: config layering and checks, the plan, the request body."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mlsvc_discover._errors import ConfigError
from mlsvc_discover.config import parse_config
from mlsvc_discover.ingestion import IngestionSettings, ResolvedIngestion
from mlsvc_discover.metrics import Metrics
from mlsvc_discover.pipelines import (
    CurrentPipeline,
    PipelinePlan,
    WantedPipeline,
    compute_pipeline_plan,
    desired_body,
    pipeline_name,
)
from mlsvc_discover.report import Report
from testing.openmetadata import pipeline_validator

NAME = pipeline_name("mlsvc-discover", "t")
ON = ResolvedIngestion(enabled=True)
OFF = ResolvedIngestion(enabled=False)


def current(service: str, *, name: str = NAME, **over: Any) -> CurrentPipeline:
    base: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": name,
        "service": service,
        "service_id": str(uuid.uuid4()),
        "pipeline_type": "metadata",
        "source_config": {"type": "MlModelMetadata", "markDeletedMlModels": True},
        "schedule": ON.schedule,
        "logger_level": "INFO",
        "deployed": True,
        "deleted": False,
    }
    base.update(over)
    return CurrentPipeline(**base)


def plan(wanted: list[WantedPipeline], existing: list[CurrentPipeline], **kw: Any) -> PipelinePlan:
    return compute_pipeline_plan(wanted, existing, name=NAME, owner="mlsvc-discover.t", **kw)


def actions(p: PipelinePlan) -> dict[str, str]:
    return {c.service: c.action for c in p.changes()}


# --- config ------------------------------------------------------------------------------------


def _config(global_: dict[str, Any], defaults: dict[str, Any] | None, item: dict[str, Any] | None) -> Any:
    service: dict[str, Any] = {"name": "a", "service_type": "Sklearn"}
    if item is not None:
        service["metadata"] = {"ingestion": item}
    disc: dict[str, Any] = {"type": "static", "name": "d", "services": [service]}
    if defaults is not None:
        disc["defaults"] = {"ingestion": defaults}
    return parse_config({"ingestion": global_, "discoverers": [disc]})


def test_ingestion_layers_merge_key_by_key_global_then_discoverer_then_item() -> None:
    config = _config(
        {"enabled": True, "schedule": "0 3 * * *", "logger_level": "debug"},
        {"model_filter": {"includes": ["^prod-"]}, "schedule": "@daily"},
        {"schedule": "*/30 * * * *"},
    )
    disc = config.discoverers[0]
    layered = disc.defaults.merged(disc.services[0].metadata).ingestion
    resolved = config.ingestion.merged(layered).resolve()
    assert resolved == ResolvedIngestion(
        enabled=True, schedule="*/30 * * * *", includes=("^prod-",), logger_level="DEBUG"
    )


def test_ingestion_is_opt_in_and_defaults_are_documented_values() -> None:
    assert IngestionSettings().resolve() == ResolvedIngestion(
        enabled=False, schedule="0 0 * * *", mark_deleted_models=True, logger_level="INFO", run_after_create=False
    )


@pytest.mark.parametrize(
    ("item", "key", "text"),
    [
        ({"schedule": "every day"}, "discoverers[0].services[0].metadata.ingestion.schedule", "crontab"),
        ({"model_filter": {"includes": ["(unclosed"]}}, "model_filter.includes", "regular expression"),
        ({"logger_level": "LOUD"}, "ingestion.logger_level", "DEBUG"),
        ({"enable": True}, "ingestion.enable", "unknown key"),
    ],
)
def test_bad_ingestion_config_names_the_key_and_the_fix(item: dict[str, Any], key: str, text: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config({}, None, item)
    assert key in str(err.value)
    assert text in str(err.value)


# --- the plan ----------------------------------------------------------------------------------


def test_missing_pipeline_is_created_with_a_trigger_only_when_asked() -> None:
    wanted = [
        WantedPipeline("a", ON, "id-a"),
        WantedPipeline("b", ResolvedIngestion(enabled=True, run_after_create=True)),
    ]
    p = plan(wanted, [])
    assert [(c.service, c.trigger) for c in p.create] == [("a", False), ("b", True)]
    assert p.create[0].body is not None
    assert p.create[0].body["service"] == {"id": "id-a", "type": "mlmodelService"}
    assert "service" not in (p.create[1].body or {}), "a service created this cycle has no id yet"


def test_matching_deployed_pipeline_costs_nothing_and_an_undeployed_one_only_a_deploy() -> None:
    p = plan([WantedPipeline("a", ON), WantedPipeline("b", ON)], [current("a"), current("b", deployed=False)])
    assert actions(p) == {"a": "unchanged", "b": "deploy"}
    assert p.create == p.update == ()


def test_schedule_filter_and_logger_changes_update_with_the_fields_named() -> None:
    settings = ResolvedIngestion(enabled=True, schedule="0 6 * * *", excludes=("tmp",), logger_level="DEBUG")
    p = plan([WantedPipeline("a", settings)], [current("a")])
    assert [c.fields for c in p.update] == [("sourceConfig", "schedule", "loggerLevel")]
    assert "differs in sourceConfig, schedule, loggerLevel" in p.update[0].reason


def test_server_defaults_do_not_count_as_differences() -> None:
    cur = current("a", source_config={"type": "MlModelMetadata", "overrideMetadata": False, "mlModelFilterPattern": {}})
    assert actions(plan([WantedPipeline("a", ON)], [cur])) == {"a": "unchanged"}


def test_a_persons_pipeline_under_another_name_is_ignored() -> None:
    person = current("a", name="a_metadata_Xy12AbCd", schedule="0 1 * * *")
    p = plan([WantedPipeline("a", ON)], [person])
    assert actions(p) == {"a": "create"}


def test_a_non_metadata_pipeline_with_the_agents_name_is_a_conflict_never_written() -> None:
    clash = current("a", pipeline_type="usage", source_config={"type": "DatabaseUsage"})
    p = plan([WantedPipeline("a", ON)], [clash], policy="sync")
    assert actions(p) == {"a": "conflict"}
    assert p.conflicts[0].code == "name_clash"
    assert p.conflicts[0].body is None


@pytest.mark.parametrize(("policy", "action"), [("sync", "delete"), ("upsert-only", "unchanged")])
def test_disabling_ingestion_deletes_under_sync_and_keeps_otherwise(policy: str, action: str) -> None:
    p = plan([WantedPipeline("a", OFF)], [current("a")], policy=policy)
    assert actions(p) == {"a": action}


def test_a_service_being_deleted_has_its_pipeline_deleted_and_nothing_else_planned() -> None:
    cur = current("gone")
    p = plan([], [cur, current("gone", name="persons")], policy="sync", service_deletes={"gone": "sid"})
    assert [(c.service, c.action, c.pipeline_id, c.code) for c in p.changes()] == [
        ("gone", "delete", cur.id, "service_deleted")
    ]


def test_create_only_creates_but_never_updates() -> None:
    p = plan(
        [WantedPipeline("a", ResolvedIngestion(enabled=True, schedule="@hourly")), WantedPipeline("b", ON)],
        [current("a")],
        policy="create-only",
    )
    assert actions(p) == {"a": "hold", "b": "create"}


def test_a_soft_deleted_pipeline_of_the_agent_is_put_back() -> None:
    p = plan([WantedPipeline("a", ON)], [current("a", deleted=True)])
    assert [c.fields for c in p.update] == [("deleted",)]


def test_plan_is_pure() -> None:
    wanted = [WantedPipeline(s, ON) for s in "cab"]
    existing = [current("a"), current("b", deployed=False)]
    assert plan(wanted, existing) == plan(list(reversed(wanted)), existing)


# --- the body and the entity -------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [ON, ResolvedIngestion(enabled=True, includes=("^a",), excludes=("b$",), mark_deleted_models=False)],
)
def test_desired_body_is_a_valid_2_0_7_create_request(settings: ResolvedIngestion) -> None:
    body = desired_body("svc.one", str(uuid.uuid4()), settings, name=NAME, owner="mlsvc-discover.t")
    errors = list(pipeline_validator("CreateIngestionPipelineRequest").iter_errors(body))
    assert errors == []
    assert body["pipelineType"] == "metadata"
    assert body["sourceConfig"]["config"]["type"] == "MlModelMetadata"
    assert body["airflowConfig"] == {"scheduleInterval": settings.schedule}


def test_current_pipeline_reads_an_entity_with_server_defaults() -> None:
    entity = {
        "id": "1",
        "name": NAME,
        "pipelineType": "metadata",
        "service": {"id": "s", "type": "mlmodelService", "name": "a"},
        "sourceConfig": {"config": {"type": "MlModelMetadata"}},
        "airflowConfig": {"scheduleInterval": "0 0 * * *", "concurrency": 1},
    }
    cur = CurrentPipeline.from_entity(entity)
    assert (cur.service, cur.schedule, cur.logger_level, cur.deployed, cur.is_model_metadata) == (
        "a",
        "0 0 * * *",
        "INFO",
        False,
        True,
    )


def test_pipeline_outcomes_reach_their_own_metric() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    report = Report(pipeline_outcomes=Counter({"created": 2, "deployed": 2, "failed": 1, "weird": 1}))
    metrics.observe(report)
    value = registry.get_sample_value
    assert value("mlsvc_discover_pipeline_operations_total", {"outcome": "created"}) == 2
    assert value("mlsvc_discover_pipeline_operations_total", {"outcome": "failed"}) == 1
    assert value("mlsvc_discover_pipeline_operations_total", {"outcome": "other"}) == 1
    assert value("mlsvc_discover_pipeline_operations_total", {"outcome": "deleted"}) == 0


def test_current_pipeline_without_a_service_reference_takes_the_service_from_its_fqn() -> None:
    base = {"id": "1", "name": NAME, "pipelineType": "metadata", "sourceConfig": {}, "airflowConfig": {}}
    assert CurrentPipeline.from_entity({**base, "fullyQualifiedName": f'"svc.one".{NAME}'}).service == "svc.one"
    assert CurrentPipeline.from_entity({**base, "fullyQualifiedName": f"plain.{NAME}"}).service == "plain"
    other = {**base, "service": {"id": "s", "type": "databaseService", "name": "plain"}}
    assert CurrentPipeline.from_entity(other).service == "", "another kind of service is never the agent's"
