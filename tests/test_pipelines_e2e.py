"""Ingestion pipelines end to end: `mlsvc-discover discover --once` against the stand-in's pipeline routes.

The stand-in validates every pipeline body against the 2.0.7 ``CreateIngestionPipelineRequest``
schema and behaves as upstream's ``IngestionPipelineResource`` does (``testing/openmetadata/pipelines.py``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlsvc_discover.agent import Agent
from mlsvc_discover.cli import main
from mlsvc_discover.config import load_config
from mlsvc_discover.report import Report
from testing.openmetadata import PIPELINES_PATH, SERVICES_PATH, FaultRule, OpenMetadataStandIn, pipeline_validator

PIPELINE = "mlsvc-discover-pipe-metadata"
OWNED = ["alpha", "beta.two", "gamma"]


def write(
    tmp_path: Path,
    standin: OpenMetadataStandIn,
    token: str,
    *,
    names: list[str] = OWNED,
    ingestion: dict[str, Any] | None = None,
    policy: str = "upsert-only",
    item_overrides: dict[str, dict[str, Any]] | None = None,
) -> Path:
    services = []
    for n in names:
        svc: dict[str, Any] = {"name": n, "service_type": "Sklearn"}
        if item_overrides and n in item_overrides:
            svc["metadata"] = {"ingestion": item_overrides[n]}
        services.append(svc)
    config = {
        "owner_id": "pipe",
        "policy": policy,
        "stale_after": 1,
        "max_delete_fraction": 1.0,
        "openmetadata": {"host": standin.base_url, "token": token, "retries": 1, "backoff_initial": 0.01},
        "ingestion": {"enabled": True} if ingestion is None else ingestion,
        "discoverers": [{"type": "static", "name": "decl", "services": services}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], path: Path, *flags: str, code: int = 0) -> dict[str, Any]:
    got = main(["discover", "--once", "--config", str(path), "--output", "json", *flags])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert got == code, report
    return report


def agent_pipelines(standin: OpenMetadataStandIn) -> dict[str, dict[str, Any]]:
    """Service name -> the agent's (non-deleted) pipeline on it."""
    return {
        p["service"]["name"]: p
        for p in standin.pipelines.pipelines.values()
        if p["name"] == PIPELINE and not p.get("deleted")
    }


def service_writes(standin: OpenMetadataStandIn) -> list[Any]:
    return [r for r in standin.writes() if r.path.startswith(SERVICES_PATH)]


def test_first_run_leaves_one_valid_deployed_metadata_pipeline_per_owned_service_and_none_elsewhere(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    om_standin.put_entity({"name": "persons", "serviceType": "Sklearn", "connection": {"config": {"type": "Sklearn"}}})
    report = run(capsys, write(tmp_path, om_standin, om_token))
    assert report["outcomes"] == {"created": 3}
    assert report["pipelines"]["outcomes"] == {"created": 3, "deployed": 3}
    pipelines = agent_pipelines(om_standin)
    assert sorted(pipelines) == sorted(OWNED)
    assert om_standin.pipelines.of_service("persons") == []
    entity_validator = pipeline_validator("IngestionPipeline")
    for service, p in pipelines.items():
        assert entity_validator.is_valid(p)
        assert p["deployed"] is True
        assert p["pipelineType"] == "metadata"
        assert p["sourceConfig"]["config"]["type"] == "MlModelMetadata"
        assert p["service"]["id"] == om_standin.services[service]["id"]
    for request in om_standin.pipelines.writes():
        if request.method == "PUT":
            assert pipeline_validator("CreateIngestionPipelineRequest").is_valid(request.body)
    assert len(om_standin.pipelines.deploys) == 3
    assert om_standin.pipelines.triggers == [], "no run after create unless asked"


def test_second_run_writes_nothing(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, om_standin, om_token)
    run(capsys, path)
    before = om_standin.pipelines.pipelines
    om_standin.reset_log()
    report = run(capsys, path)
    assert report["pipelines"]["outcomes"] == {"unchanged": 3}
    assert om_standin.writes() == []
    assert om_standin.pipelines.writes() == []
    assert om_standin.pipelines.pipelines == before


def test_schedule_change_updates_only_the_pipelines_and_redeploys_them(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, write(tmp_path, om_standin, om_token))
    om_standin.reset_log()
    path = write(tmp_path, om_standin, om_token, ingestion={"enabled": True, "schedule": "30 2 * * 1"})
    report = run(capsys, path)
    assert service_writes(om_standin) == []
    assert report["pipelines"]["outcomes"] == {"updated": 3, "deployed": 3}
    assert {c["fields"][0] for c in report["pipelines"]["plan"]["update"]} == {"schedule"}
    for p in agent_pipelines(om_standin).values():
        assert p["airflowConfig"]["scheduleInterval"] == "30 2 * * 1"
        assert p["deployed"] is True
    puts = [r for r in om_standin.pipelines.writes() if r.method == "PUT"]
    assert len(puts) == 3


def test_an_item_override_changes_only_that_services_pipeline(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, write(tmp_path, om_standin, om_token))
    om_standin.reset_log()
    path = write(
        tmp_path, om_standin, om_token, item_overrides={"gamma": {"model_filter": {"excludes": ["^scratch-"]}}}
    )
    report = run(capsys, path)
    assert [c["service"] for c in report["pipelines"]["plan"]["update"]] == ["gamma"]
    config = agent_pipelines(om_standin)["gamma"]["sourceConfig"]["config"]
    assert config["mlModelFilterPattern"] == {"excludes": ["^scratch-"]}


def test_a_persons_pipeline_on_an_owned_service_is_left_alone(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, om_standin, om_token, policy="sync")
    run(capsys, path)
    alpha_id = om_standin.services["alpha"]["id"]
    person = om_standin.pipelines.seed(
        {
            "name": "alpha_metadata_Xy12AbCd",
            "pipelineType": "metadata",
            "service": {"id": alpha_id, "type": "mlmodelService"},
            "sourceConfig": {"config": {"type": "MlModelMetadata", "markDeletedMlModels": False}},
            "airflowConfig": {"scheduleInterval": "0 1 * * *"},
        }
    )
    path = write(tmp_path, om_standin, om_token, policy="sync", ingestion={"enabled": True, "schedule": "@hourly"})
    run(capsys, path)
    # ...and disabling ingestion under sync deletes only the agent's own pipeline.
    run(capsys, write(tmp_path, om_standin, om_token, policy="sync", ingestion={"enabled": False}))
    assert agent_pipelines(om_standin) == {}
    assert om_standin.pipelines.pipelines[person["fullyQualifiedName"]] == person


def test_a_name_clash_is_reported_as_a_conflict_and_not_written(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, om_standin, om_token, names=["alpha"], ingestion={"enabled": False})
    run(capsys, path)
    clash = om_standin.pipelines.seed(
        {
            "name": PIPELINE,
            "pipelineType": "usage",
            "service": {"id": om_standin.services["alpha"]["id"], "type": "mlmodelService"},
            "sourceConfig": {"config": {"type": "DatabaseUsage"}},
            "airflowConfig": {"scheduleInterval": "0 1 * * *"},
        }
    )
    om_standin.reset_log()
    report = run(capsys, write(tmp_path, om_standin, om_token, names=["alpha"]))
    assert report["pipelines"]["outcomes"] == {"conflict": 1}
    assert "not an ML model metadata pipeline" in report["pipelines"]["plan"]["conflicts"][0]["reason"]
    assert om_standin.pipelines.writes() == []
    assert om_standin.pipelines.pipelines[clash["fullyQualifiedName"]] == clash


def test_upsert_only_keeps_the_pipeline_when_ingestion_is_disabled(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, write(tmp_path, om_standin, om_token))
    om_standin.reset_log()
    report = run(capsys, write(tmp_path, om_standin, om_token, ingestion={"enabled": False}))
    assert om_standin.pipelines.writes() == []
    assert sorted(agent_pipelines(om_standin)) == sorted(OWNED)
    # With ingestion off everywhere and nothing to delete, pipelines are not even read.
    assert "pipelines" not in report
    assert om_standin.count("GET", f"^{PIPELINES_PATH}") == 0


def test_under_sync_a_vanished_service_goes_with_its_pipeline_pipeline_first(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, write(tmp_path, om_standin, om_token, policy="sync"))
    gamma_id = om_standin.services["gamma"]["id"]
    om_standin.reset_log()
    report = run(capsys, write(tmp_path, om_standin, om_token, policy="sync", names=["alpha", "beta.two"]))
    assert report["outcomes"] == {"deleted": 1, "unchanged": 2}
    assert report["pipelines"]["outcomes"] == {"deleted": 1, "unchanged": 2}
    assert om_standin.services["gamma"]["deleted"] is True
    assert "gamma" not in agent_pipelines(om_standin)
    deletes = [(r.method, r.path) for r in om_standin.find(method="DELETE")]
    assert deletes[0][1].startswith(PIPELINES_PATH), deletes
    assert deletes[1] == ("DELETE", f"{SERVICES_PATH}/{gamma_id}")


def test_dry_run_lists_pipeline_changes_with_reasons_and_writes_nothing(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, write(tmp_path, om_standin, om_token, policy="sync", names=["alpha", "beta.two"]))
    om_standin.pipelines.client = "none"
    om_standin.pipelines.seed(
        {
            "name": PIPELINE,
            "pipelineType": "metadata",
            "service": {"id": om_standin.services["beta.two"]["id"], "type": "mlmodelService"},
            "sourceConfig": {"config": {"type": "MlModelMetadata"}},
            "airflowConfig": {"scheduleInterval": "0 0 * * *"},
        }
    )  # a PUT resets `deployed`: the agent's pipeline on beta.two now only needs a deploy
    om_standin.reset_log()
    path = write(
        tmp_path,
        om_standin,
        om_token,
        policy="sync",
        names=["beta.two", "gamma"],
        item_overrides={"gamma": {"run_after_create": True}},
    )
    report = run(capsys, path, "--dry-run")
    plan = report["pipelines"]["plan"]
    assert [(c["service"], c["reason"]) for c in plan["create"]] == [
        ("gamma", "no metadata pipeline of this agent on the service")
    ]
    assert plan["create"][0]["trigger"] is True
    assert [(c["service"], c["reason"]) for c in plan["deploy"]] == [("beta.two", "up to date but not deployed")]
    assert [c["service"] for c in plan["delete"]] == ["alpha"]
    assert "service is being deleted" in plan["delete"][0]["reason"]
    assert om_standin.writes() == []
    assert om_standin.pipelines.writes() == []
    main(["discover", "--once", "--config", str(path), "--dry-run"])
    text = capsys.readouterr().out
    assert "pipelines: 1 create, 0 update, 1 deploy, 1 delete" in text
    assert "deploy   beta.two/mlsvc-discover-pipe-metadata: up to date but not deployed" in text


def test_run_after_create_triggers_once(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, om_standin, om_token, ingestion={"enabled": True, "run_after_create": True})
    assert run(capsys, path)["pipelines"]["outcomes"]["triggered"] == 3
    run(capsys, path)
    assert len(om_standin.pipelines.triggers) == 3


def test_no_pipeline_client_is_a_per_service_pipeline_failure_not_a_service_failure(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    om_standin.pipelines.client = "none"
    path = write(tmp_path, om_standin, om_token)
    report = run(capsys, path, code=1)
    assert report["outcomes"] == {"created": 3}
    assert "fatal" not in report
    assert report["pipelines"]["outcomes"] == {"created": 3, "failed": 3}
    failures = report["failures"]
    assert sorted(f["item"] for f in failures) == sorted(OWNED)
    assert {(f["stage"], f["kind"]) for f in failures} == {("pipeline", "no_pipeline_client")}
    assert "Pipeline Client Disabled" in failures[0]["reason"]
    assert all(p["deployed"] is False for p in agent_pipelines(om_standin).values())
    # Later runs keep saying so, with a deploy each and no rewrite.
    om_standin.reset_log()
    again = run(capsys, path, code=1)
    assert again["pipelines"]["outcomes"] == {"failed": 3}
    assert {r.method for r in om_standin.pipelines.writes()} == {"POST"}


def test_a_failing_deploy_is_reported_with_the_servers_reason(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    om_standin.pipelines.deploy_error = "DAG import error: boom"
    report = run(capsys, write(tmp_path, om_standin, om_token, names=["alpha"]), code=1)
    assert report["outcomes"] == {"created": 1}
    [failure] = report["failures"]
    assert (failure["stage"], failure["item"], failure["kind"]) == ("pipeline", "alpha", "deploy_failed")
    assert "DAG import error: boom" in failure["reason"]
    om_standin.pipelines.deploy_error = None
    assert run(capsys, write(tmp_path, om_standin, om_token, names=["alpha"]))["pipelines"]["outcomes"] == {
        "deployed": 1
    }


def test_an_unreachable_pipeline_client_refuses_the_change_and_the_cycle_goes_on(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, write(tmp_path, om_standin, om_token, names=["alpha"]))
    om_standin.pipelines.client = "unreachable"
    path = write(
        tmp_path, om_standin, om_token, names=["alpha", "gamma"], ingestion={"enabled": True, "schedule": "@weekly"}
    )
    report = run(capsys, path, code=1)
    assert report["outcomes"] == {"created": 1, "unchanged": 1}
    reasons = {f["item"]: f["reason"] for f in report["failures"]}
    assert "Deployment failed. Changes not saved." in reasons["alpha"]
    assert "Failed to deploy pipeline" in reasons["gamma"]
    assert agent_pipelines(om_standin)["alpha"]["airflowConfig"]["scheduleInterval"] == "0 0 * * *"


def test_a_stop_leaves_pipeline_changes_unsent_and_the_report_names_them(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, write(tmp_path, om_standin, om_token, names=["alpha"]))
    path = write(tmp_path, om_standin, om_token, names=["alpha"], ingestion={"enabled": True, "schedule": "@hourly"})
    om_standin.reset_log()

    async def stopped_cycle() -> Report:
        stop = asyncio.Event()
        stop.set()
        async with Agent(load_config(path)) as agent:
            return await agent.run_once(stop=stop)

    report = asyncio.run(stopped_cycle())
    assert report.interrupted is True
    assert report.not_applied == ["alpha (pipeline update)"]
    assert om_standin.pipelines.writes() == []


def test_the_bot_jwt_in_pipeline_answers_never_reaches_the_report_or_the_logs(
    tmp_path: Path,
    om_standin: OpenMetadataStandIn,
    om_token: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    path = write(tmp_path, om_standin, om_token)
    run(capsys, path)
    om_standin.pipelines.deploy_error = "refused"
    main(
        [
            "discover",
            "--once",
            "--config",
            str(write(tmp_path, om_standin, om_token, ingestion={"enabled": True, "schedule": "@daily"})),
            "--output",
            "json",
        ]
    )
    main(["discover", "--once", "--config", str(path), "--dry-run"])
    out = capsys.readouterr()
    answer = httpx.get(
        f"{om_standin.base_url}/v1/services/ingestionPipelines", headers={"Authorization": f"Bearer {om_token}"}
    )
    assert om_standin.pipelines.bot_jwt in answer.text, "the answers the agent read did carry the JWT"
    for text in (out.out, out.err, caplog.text):
        assert om_standin.pipelines.bot_jwt not in text


def test_a_foreign_service_with_a_configured_name_gets_no_pipeline(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    om_standin.put_entity({"name": "alpha", "serviceType": "Sklearn", "connection": {"config": {"type": "Sklearn"}}})
    report = run(capsys, write(tmp_path, om_standin, om_token))
    assert report["outcomes"] == {"conflict": 1, "created": 2}
    assert sorted(agent_pipelines(om_standin)) == ["beta.two", "gamma"]
    assert om_standin.pipelines.of_service("alpha") == []


def test_a_403_on_pipelines_fails_each_pipeline_with_a_hint_and_a_401_stops_the_step_once(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    denied = "Principal: CatalogPrincipal{name='ingestion-bot'} operations [Create] not allowed"
    om_standin.inject(FaultRule(method="PUT", path=f"^{PIPELINES_PATH}$", status=403, message=denied))
    path = write(tmp_path, om_standin, om_token)
    report = run(capsys, path, code=1)
    assert report["outcomes"] == {"created": 3}
    assert {(f["stage"], f["kind"]) for f in report["failures"]} == {("pipeline", "http_403")}
    assert all(f["reason"].endswith("Deploy and Trigger on ingestion pipelines") for f in report["failures"])
    assert all("ML model services" not in f["reason"] for f in report["failures"])
    om_standin.clear_faults()
    om_standin.inject(FaultRule(method="PUT", path=f"^{PIPELINES_PATH}$", status=401))
    om_standin.reset_log()
    report = run(capsys, path, code=1)
    [failure] = report["failures"]
    assert "pipeline step stopped" in failure["reason"]
    # Writes already in flight finish; nothing is sent after the refusal (no deploy, no trigger).
    assert om_standin.count("POST", f"^{PIPELINES_PATH}/") == 0
    assert "fatal" not in report
