"""End to end: `mlsvc-discover discover --once` against real MLflow servers, moto and the stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlsvc_discover.cli import main
from testing.mlflow_fixtures import MlflowServer
from testing.moto_fixtures import AwsWorld
from testing.om_fixtures import schema_validator
from testing.openmetadata import OpenMetadataStandIn
from tests.helpers import run_cli, write_config

MLFLOW_PASSWORD_ENV = "E2E_MLFLOW_PASSWORD"
OWNER_TAG = "mlsvc-discover.e2e"


def _host_port(url: str) -> tuple[str, str]:
    rest = url.split("://", 1)[1].rstrip("/")
    host, _, port = rest.rpartition(":")
    return host, port


@pytest.fixture
def world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    om_any: OpenMetadataStandIn,
    om_token: str,
    mlflow_server: MlflowServer,
    mlflow_auth_server: MlflowServer,
    aws_world: AwsWorld,
) -> dict[str, Any]:
    """A config reaching every real component, and the services it must produce."""
    monkeypatch.setenv("OPENMETADATA_HOST", om_any.base_url)
    monkeypatch.setenv("OPENMETADATA_JWT_TOKEN", om_token)
    monkeypatch.setenv(MLFLOW_PASSWORD_ENV, str(mlflow_auth_server.password))
    config: dict[str, Any] = {
        "owner_id": "e2e",
        "openmetadata": {"retries": 1, "backoff_initial": 0.01, "batch_size": 2},
        "discoverers": [
            {
                "type": "mlflow",
                "name": "mlflow",
                "timeout": 8,  # the basic-auth server hashes passwords slowly on a loaded machine
                "tracking_uris": [
                    mlflow_server.url,
                    {
                        "uri": mlflow_auth_server.url,
                        "auth": {"username": mlflow_auth_server.username, "password": f"${{{MLFLOW_PASSWORD_ENV}}}"},
                    },
                ],
            },
            {
                "type": "sagemaker",
                "name": "aws",
                "endpoint_url": aws_world.endpoint_url,
                "regions": list(aws_world.regions),
                "accounts": [{"role_arn": arn} for arn in aws_world.role_arns.values()],
            },
            {"type": "static", "name": "declared", "services": [{"name": "sk-scoring", "service_type": "Sklearn"}]},
        ],
    }
    expected = {
        "mlflow-{}-{}".format(*_host_port(mlflow_server.url)): "Mlflow",
        "mlflow-{}-{}".format(*_host_port(mlflow_auth_server.url)): "Mlflow",
        **{f"sagemaker-{account}-{region}": "SageMaker" for account, region in aws_world.in_use},
        "sk-scoring": "Sklearn",
    }
    return {"config": config, "expected": expected, "path": tmp_path / "config.yaml", "standin": om_any}


def test_once_registers_exactly_the_expected_services_with_the_right_types(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(world["path"], world["config"])
    standin: OpenMetadataStandIn = world["standin"]
    code, out, err = run_cli(capsys, "discover", "--once", "--config", str(path))
    assert code == 0, out + err
    services = standin.services
    assert {name: s["serviceType"] for name, s in services.items()} == world["expected"]
    for name, entity in services.items():
        assert entity["connection"]["config"]["type"] == entity["serviceType"], name
        assert OWNER_TAG in {t["tagFQN"] for t in entity["tags"]}
        assert entity["version"] == 0.1
    for request in standin.writes():
        bodies = request.body if isinstance(request.body, list) else [request.body]
        for body in bodies:
            schema_validator("CreateMlModelServiceRequest").validate(body)
    assert not standin.find(status=400)


def test_connections_carry_the_right_facts_and_no_credentials(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], mlflow_auth_server: MlflowServer, aws_world: AwsWorld
) -> None:
    path = write_config(world["path"], world["config"])
    standin: OpenMetadataStandIn = world["standin"]
    assert run_cli(capsys, "discover", "--once", "--config", str(path))[0] == 0
    host, port = _host_port(mlflow_auth_server.url)
    mlflow = standin.services[f"mlflow-{host}-{port}"]["connection"]["config"]
    assert mlflow["trackingUri"] == mlflow["registryUri"] == mlflow_auth_server.url.rstrip("/")
    account, region = sorted(aws_world.in_use)[0]
    aws = standin.services[f"sagemaker-{account}-{region}"]["connection"]["config"]["awsConfig"]
    assert aws["awsRegion"] == region
    assert aws["assumeRoleArn"] == aws_world.role_arns[account]
    assert "awsAccessKeyId" not in aws
    assert "awsSecretAccessKey" not in aws
    assert not standin.bodies_containing(str(mlflow_auth_server.password))


def test_second_run_writes_nothing(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(world["path"], world["config"])
    standin: OpenMetadataStandIn = world["standin"]
    assert run_cli(capsys, "discover", "--once", "--config", str(path))[0] == 0
    standin.reset_log()
    code, out, _ = run_cli(capsys, "discover", "--once", "--config", str(path), "--output", "json")
    assert code == 0
    assert standin.writes() == []
    report = json.loads(out)
    assert report["outcomes"] == {"unchanged": len(world["expected"])}
    assert {v["version"] for v in standin.services.values()} == {0.1}


def test_dry_run_writes_nothing_and_prints_the_plan(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(world["path"], world["config"])
    standin: OpenMetadataStandIn = world["standin"]
    code, out, _ = run_cli(capsys, "discover", "--once", "--dry-run", "--config", str(path), "--output", "json")
    assert code == 0
    assert standin.writes() == []
    assert standin.services == {}
    plan = json.loads(out)["plan"]
    assert sorted(c["name"] for c in plan["create"]) == sorted(world["expected"])
    assert all(c["body"]["serviceType"] == world["expected"][c["name"]] for c in plan["create"])


def test_each_failure_has_its_reason_and_exit_code_1_while_everything_else_is_registered(
    world: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    mlflow_auth_server: MlflowServer,
    refused_url: str,
    blackhole_url: str,
) -> None:
    config = world["config"]
    standin: OpenMetadataStandIn = world["standin"]
    mlflow = config["discoverers"][0]
    mlflow["tracking_uris"] += [refused_url, blackhole_url, standin.url]
    # The same auth server without credentials, under another path so it is a distinct URI.
    mlflow["tracking_uris"].append(mlflow_auth_server.url.rstrip("/") + "/no-credentials")
    config["discoverers"][1]["accounts"].append({"role_arn": "arn:aws:iam::333333333333:role/missing"})
    path = write_config(world["path"], config)
    code, out, _ = run_cli(capsys, "discover", "--once", "--config", str(path), "--output", "json")
    assert code == 1
    report = json.loads(out)
    reasons = {f["item"]: f["reason"] for f in report["failures"]}
    assert "connection refused" in reasons[refused_url.rstrip("/")]
    assert "timed out" in reasons[blackhole_url.rstrip("/")]
    assert "not an MLflow tracking server" in reasons[standin.url.rstrip("/")]
    assert any("401" in r or "unauthorized" in r for r in reasons.values())
    # Everything else is registered.
    assert set(world["expected"]) <= set(standin.services), json.dumps(report["failures"], indent=1)
    assert report["discoverers"]["mlflow"]["ok"] is False
    assert report["discoverers"]["declared"]["ok"] is True


def test_openmetadata_down_is_exit_1_with_the_reason(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], refused_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENMETADATA_HOST", refused_url.rstrip("/") + "/api")
    path = write_config(world["path"], world["config"])
    code, out, _ = run_cli(capsys, "discover", "--once", "--config", str(path))
    assert code == 1
    assert "cannot read ML model services from OpenMetadata" in out
    assert "connection failed" in out


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda c: c.update(policy="delete-everything"), "policy"),
        (lambda c: c["discoverers"][0].update(timeout="soon"), "discoverers[0].timeout"),
        (lambda c: c["discoverers"][1]["accounts"][0].update(role_arn="arn:aws:iam::1:role"), "role_arn"),
        (lambda c: c["discoverers"][0].update(tracking_uris=["mlflow.internal:5000"]), "tracking_uris"),
        (lambda c: c.update(colour="blue"), "colour"),
        (lambda c: c["discoverers"][2].update(type="nonsense"), "discoverers[2].type"),
    ],
)
def test_bad_config_exits_2_naming_the_key_and_contacts_nothing(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], mutate: Any, key: str
) -> None:
    config = world["config"]
    mutate(config)
    path = write_config(world["path"], config)
    standin: OpenMetadataStandIn = world["standin"]
    standin.reset_log()
    code, _out, err = run_cli(capsys, "discover", "--once", "--config", str(path))
    assert code == 2
    assert key in err
    assert standin.requests == []


def test_cli_as_a_process_reads_host_and_token_from_the_environment(world: dict[str, Any], om_token: str) -> None:
    path = write_config(world["path"], world["config"])
    exe = Path(sys.executable).parent / "mlsvc-discover"
    proc = subprocess.run(
        [str(exe), "discover", "--once", "--output", "json"],
        env={**os.environ, "MLSVC_DISCOVER_CONFIG": str(path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["outcomes"]["created"] == len(world["expected"])
    assert om_token not in proc.stdout + proc.stderr


def test_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["discover", "--output", "xml"])
    assert info.value.code == 2


def test_missing_config_exits_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLSVC_DISCOVER_CONFIG", raising=False)
    code, _, err = run_cli(capsys, "discover", "--once")
    assert code == 2
    assert "--config" in err
