"""Malformed configs: every one exits 2, names the key, says how to fix it, and contacts nothing.

A valid base config points at a live OpenMetadata stand-in, a live MLflow-like server and a
live server standing in for AWS, so a config that slipped through validation would be seen
talking to one of them. Each case breaks the base in one way and runs both
``discover --once`` and ``validate-config`` through the real CLI entry point; both must exit 2
with a message on stderr that names the offending key and says how to fix it, and none of the
three servers may have seen a single request. A first test proves the base config does reach
all three, so "no request" means something.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from testing.mlflow_fixtures import FakeServer, mlflow_like, status
from testing.om_fixtures import OM_TOKEN
from testing.openmetadata import OpenMetadataStandIn
from tests.helpers import run_cli

pytestmark = pytest.mark.timeout(60)

TOKEN_ENV = "BAD_CONFIGS_OM_TOKEN"
PASSWORD_ENV = "BAD_CONFIGS_MLFLOW_PASSWORD"
OWNER_UUID = "6f1c2a9e-8d4b-4c57-9a0e-3b2d1f0e9c8a"


@dataclass
class World:
    standin: OpenMetadataStandIn
    mlflow: FakeServer
    aws: FakeServer
    config: dict[str, Any]
    path: Path

    def requests(self) -> dict[str, int]:
        return {
            "openmetadata": len(self.standin.requests),
            "mlflow": len(self.mlflow.requests),
            "aws": len(self.aws.requests),
        }


@pytest.fixture
def world(
    om_standin: OpenMetadataStandIn,
    fake_mlflow: Callable[..., FakeServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    monkeypatch.setenv(TOKEN_ENV, OM_TOKEN)
    monkeypatch.setenv(PASSWORD_ENV, "bad-configs-password")
    om_standin.add_owner("team", OWNER_UUID)  # a real server 404s an owner that does not exist
    for name in ("OPENMETADATA_HOST", "OPENMETADATA_JWT_TOKEN", "MLSVC_DISCOVER_CONFIG", "MLSVC_DISCOVER_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    # Throw-away AWS credentials and empty AWS files: the base config's STS call must be sent.
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        empty = tmp_path / name.lower()
        empty.write_text("")
        monkeypatch.setenv(name, str(empty))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIABADCONFIGS000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bad-configs-aws-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    mlflow = fake_mlflow(mlflow_like())
    aws = fake_mlflow(status(500, b'{"__type": "InternalFailure"}'))  # records whoever calls
    config: dict[str, Any] = {
        "owner_id": "bad-configs",
        "policy": "upsert-only",
        "openmetadata": {"host": om_standin.base_url, "token": f"${{{TOKEN_ENV}}}", "retries": 0, "timeout": "2s"},
        "schedule": {"interval": "15m"},
        "server": {"enabled": False, "address": "127.0.0.1:0"},
        "logging": {"level": "INFO", "format": "text"},
        "state": {"path": str(tmp_path / "state.json")},
        "discoverers": [
            {
                "type": "mlflow",
                "name": "fleet",
                "timeout": "2s",
                "defaults": {"owners": [{"id": OWNER_UUID, "type": "team"}]},
                "tracking_uris": [
                    mlflow.url,
                    {
                        "uri": mlflow.url + "/team-b",
                        "name": "mlflow-team-b",
                        "auth": {"username": "reader", "password": f"${{{PASSWORD_ENV}}}"},
                    },
                ],
            },
            {
                "type": "sagemaker",
                "name": "aws",
                "endpoint_url": aws.url,
                "regions": ["eu-west-1"],
                "max_attempts": 1,
                "accounts": [{"role_arn": "arn:aws:iam::111111111111:role/mlsvc-discover", "external_id": "ext-id-1"}],
            },
            {"type": "static", "name": "declared", "services": [{"name": "sk-scoring", "service_type": "Sklearn"}]},
        ],
    }
    return World(om_standin, mlflow, aws, config, tmp_path / "config.yaml")


def test_the_valid_base_config_reaches_all_three_servers(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.path.write_text(yaml.safe_dump(world.config), encoding="utf-8")
    code, out, err = run_cli(capsys, "validate-config", "--config", str(world.path))
    assert code == 0, err
    assert world.requests() == {"openmetadata": 0, "mlflow": 0, "aws": 0}
    code, out, err = run_cli(capsys, "discover", "--once", "--config", str(world.path))
    assert code == 1, out + err  # the fake AWS answers 500: a failure of that account only
    assert all(n > 0 for n in world.requests().values()), world.requests()
    assert {"sk-scoring", "mlflow-team-b", f"mlflow-127.0.0.1-{world.mlflow.port}"} <= set(world.standin.services)


# --- the cases -----------------------------------------------------------------------------------------

Mutate = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Case:
    """One way to break the base config: ``change`` edits the dict, or ``text`` replaces the file."""

    key: str
    hint: str
    change: Mutate | None = None
    text: str | None = None
    unset: str | None = None


def put(path: str, value: Any) -> Mutate:
    """Set a dotted path (``discoverers.0.timeout``) in the config."""

    def change(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = config
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return change


def drop(path: str) -> Mutate:
    def change(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = config
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return change


def both(*changes: Mutate) -> Mutate:
    def change(config: dict[str, Any]) -> None:
        for c in changes:
            c(config)

    return change


UNKNOWN = "unknown key; remove it or check its spelling"
GE0 = "greater than or equal to 0"
ROLE = "arn:aws:iam::111111111111:role/mlsvc-discover"

CASES: dict[str, Case] = {
    # YAML itself
    "yaml-unclosed-bracket": Case("line 3", "not valid YAML", text="owner_id: x\ndiscoverers: [\n  - type: mlflow\n"),
    "yaml-tab-indentation": Case("line 2", "not valid YAML", text="openmetadata:\n\thost: http://x\n"),
    "yaml-not-a-mapping": Case("<root>", "must be a YAML mapping", text="- owner_id: x\n- policy: sync\n"),
    "config-file-missing": Case("--config", "cannot read", text=None, change=lambda c: "missing"),
    # unknown keys, at every level
    "unknown-top-level-key": Case("colour", UNKNOWN, put("colour", "blue")),
    "unknown-openmetadata-key": Case("openmetadata.tokn", UNKNOWN, put("openmetadata.tokn", "x")),
    "unknown-schedule-key": Case("schedule.every", UNKNOWN, put("schedule.every", "5m")),
    "unknown-server-key": Case("server.port", UNKNOWN, put("server.port", 8080)),
    "unknown-logging-key": Case("logging.colour", UNKNOWN, put("logging.colour", True)),
    "unknown-state-key": Case("state.file", UNKNOWN, put("state.file", "/tmp/x")),
    "unknown-discoverer-key": Case("discoverers[0].urls", UNKNOWN, put("discoverers.0.urls", ["http://x:1"])),
    "unknown-tracking-uri-key": Case(
        "discoverers[0].tracking_uris[1].passwd", UNKNOWN, put("discoverers.0.tracking_uris.1.passwd", "x")
    ),
    "unknown-auth-key": Case(
        "discoverers[0].tracking_uris[1].auth.user", UNKNOWN, put("discoverers.0.tracking_uris.1.auth.user", "x")
    ),
    "unknown-defaults-key": Case("discoverers[0].defaults.colour", UNKNOWN, put("discoverers.0.defaults.colour", "x")),
    "unknown-owner-key": Case(
        "discoverers[0].defaults.owners[0].name", UNKNOWN, put("discoverers.0.defaults.owners.0.name", "data")
    ),
    "unknown-account-key": Case("discoverers[1].accounts[0].role", UNKNOWN, put("discoverers.1.accounts.0.role", "x")),
    "unknown-static-service-key": Case(
        "discoverers[2].services[0].type", UNKNOWN, put("discoverers.2.services.0.type", "Sklearn")
    ),
    # environment variables
    "missing-env-var": Case("openmetadata.token", f"export it or remove ${{{TOKEN_ENV}}}", unset=TOKEN_ENV),
    "missing-env-var-deep": Case(
        "discoverers[0].tracking_uris[1].auth.password",
        f"environment variable {PASSWORD_ENV} is not set",
        unset=PASSWORD_ENV,
    ),
    # schedules
    "interval-zero": Case("schedule.interval", "greater than 0", put("schedule.interval", 0)),
    "interval-and-cron": Case("schedule", "set either interval or cron, not both", put("schedule.cron", "*/5 * * * *")),
    "cron-minute-61": Case(
        "schedule",
        "not a valid crontab expression",
        both(drop("schedule.interval"), put("schedule.cron", "61 * * * *")),
    ),
    "cron-six-fields": Case(
        "schedule", "a crontab expression has 5", both(drop("schedule.interval"), put("schedule.cron", "0 0 * * * *"))
    ),
    "cron-backwards-weekdays": Case(
        "schedule", "runs backwards", both(drop("schedule.interval"), put("schedule.cron", "0 9 * * 5-1"))
    ),
    # AWS
    "role-arn-without-account": Case(
        "discoverers[1].accounts[0].role_arn",
        "expected arn:aws:iam::<12-digit account id>:role/<name>",
        put("discoverers.1.accounts.0.role_arn", "arn:aws:iam::1:role/x"),
    ),
    "role-arn-of-a-user": Case(
        "discoverers[1].accounts[0].role_arn",
        "is not an IAM role ARN",
        put("discoverers.1.accounts.0.role_arn", "arn:aws:iam::111111111111:user/bob"),
    ),
    "region-misspelt": Case(
        "discoverers[1].regions", "write e.g. us-east-1", put("discoverers.1.regions", ["eu-west-1", "us-east"])
    ),
    "regions-a-string": Case(
        "discoverers[1].regions", "write [eu-west-1] or `all`", put("discoverers.1.regions", "eu-west-1")
    ),
    "accounts-empty": Case("discoverers[1].accounts", "at least 1 item", put("discoverers.1.accounts", [])),
    "external-id-without-role": Case(
        "discoverers[1].accounts[0]", "add role_arn or remove external_id", drop("discoverers.1.accounts.0.role_arn")
    ),
    "sagemaker-endpoint-without-scheme": Case(
        "discoverers[1].endpoint_url", "is not an http(s) URL", put("discoverers.1.endpoint_url", "moto:5000")
    ),
    "send-access-keys-maybe": Case(
        "discoverers[1].accounts[0].send_access_keys",
        "valid boolean",
        put("discoverers.1.accounts.0.send_access_keys", "maybe"),
    ),
    # MLflow
    "tracking-uri-without-scheme": Case(
        "discoverers[0].tracking_uris",
        "must start with http:// or https://",
        put("discoverers.0.tracking_uris.0", "mlflow.internal:5000"),
    ),
    "tracking-uri-twice": Case(
        "discoverers[0]",
        "twice",
        lambda c: c["discoverers"][0]["tracking_uris"].append(c["discoverers"][0]["tracking_uris"][0] + "/"),
    ),
    "tracking-uri-credentials-twice": Case(
        "discoverers[0].tracking_uris[1]",
        "has credentials in the URI and in auth; keep one of them",
        lambda c: c["discoverers"][0]["tracking_uris"][1].update(uri="http://u:p@127.0.0.1:1/b"),
    ),
    "mlflow-auth-token-and-password": Case(
        "discoverers[0].tracking_uris[1].auth",
        "set either token, or username and password, not both",
        put("discoverers.0.tracking_uris.1.auth.token", "t"),
    ),
    "mlflow-nothing-to-probe": Case(
        "discoverers[0]", "nothing to probe: set tracking_uris or uris_file", put("discoverers.0.tracking_uris", [])
    ),
    "mlflow-max-response-bytes-tiny": Case(
        "discoverers[0].max_response_bytes",
        "greater than or equal to 1024",
        put("discoverers.0.max_response_bytes", 10),
    ),
    "name-template-bad-conversion": Case(
        "discoverers[0].name_template",
        "the only conversions are !r, !s and !a",
        put("discoverers.0.name_template", "mlflow-{host!x}"),
    ),
    "name-template-positional": Case(
        "discoverers[0].name_template",
        "use named placeholders such as {host}",
        put("discoverers.0.name_template", "mlflow-{}"),
    ),
    # discoverers
    "duplicate-discoverer-names": Case(
        "discoverers[2].name", "give each discoverer a unique name", put("discoverers.2.name", "fleet")
    ),
    "discoverer-without-type": Case("discoverers[2].type", "`type` is required", drop("discoverers.2.type")),
    "unknown-discoverer-type": Case(
        "discoverers[2].type",
        "choose one of: kubernetes, mlflow, sagemaker, static",
        put("discoverers.2.type", "azureml"),
    ),
    "discoverers-not-a-list": Case(
        "discoverers", "must be a list of discoverers", put("discoverers", {"type": "static"})
    ),
    "discoverer-name-with-spaces": Case(
        "discoverers[2].name", "should match pattern", put("discoverers.2.name", "my discoverer")
    ),
    "static-name-with-double-colon": Case(
        "discoverers[2].services[0].name", "must not contain '::'", put("discoverers.2.services.0.name", "a::b")
    ),
    "static-connection-type-mismatch": Case(
        "discoverers[2].services[0]",
        "does not match service_type",
        put("discoverers.2.services.0.connection", {"type": "Mlflow"}),
    ),
    "owner-not-a-uuid": Case(
        "discoverers[0].defaults.owners[0].id", "valid UUID", put("discoverers.0.defaults.owners.0.id", "data-team")
    ),
    # the agent
    "owner-id-with-spaces": Case("owner_id", "should match pattern", put("owner_id", "platform prod!")),
    "policy-unknown": Case("policy", "'upsert-only', 'create-only' or 'sync'", put("policy", "delete-everything")),
    "max-delete-fraction-above-1": Case(
        "max_delete_fraction", "less than or equal to 1", put("max_delete_fraction", 1.5)
    ),
    "stale-after-zero": Case("stale_after", "greater than or equal to 1", put("stale_after", 0)),
    "negative-retries": Case("openmetadata.retries", GE0, put("openmetadata.retries", -1)),
    "negative-duration": Case(
        "openmetadata.backoff_initial",
        "write e.g. 500ms, 30s, 15m, 1h or 1d",
        put("openmetadata.backoff_initial", "-1s"),
    ),
    "duration-in-words": Case(
        "openmetadata.timeout", "write e.g. 500ms, 30s, 15m, 1h or 1d", put("openmetadata.timeout", "soon")
    ),
    "duration-wrong-unit": Case(
        "discoverers[0].timeout", "write e.g. 500ms, 30s, 15m, 1h or 1d", put("discoverers.0.timeout", "5 minutes")
    ),
    "batch-size-not-a-number": Case("openmetadata.batch_size", "valid integer", put("openmetadata.batch_size", "lots")),
    "openmetadata-host-without-scheme": Case(
        "openmetadata.host",
        "write e.g. http://openmetadata:8585/api",
        put("openmetadata.host", "openmetadata:8585/api"),
    ),
    "openmetadata-section-a-list": Case("openmetadata", "must be a mapping", put("openmetadata", ["host"])),
    "server-address-without-port": Case(
        "server.address", "write e.g. 0.0.0.0:8080", put("server.address", "localhost")
    ),
    "log-level-unknown": Case("logging.level", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'", put("logging.level", "LOUD")),
}


@pytest.mark.parametrize("command", ["discover", "validate-config"])
@pytest.mark.parametrize("case_id", sorted(CASES))
def test_a_bad_config_exits_2_naming_the_key_and_the_fix_and_contacts_nothing(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, case_id: str, command: str
) -> None:
    case = CASES[case_id]
    config = copy.deepcopy(world.config)
    path = world.path
    if case.text is not None:
        path.write_text(case.text, encoding="utf-8")
    elif case.change is not None and case_id == "config-file-missing":
        path = path.with_name("no-such-config.yaml")
    else:
        if case.change is not None:
            case.change(config)
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    if case.unset is not None:
        monkeypatch.delenv(case.unset)
    args = ["discover", "--once"] if command == "discover" else ["validate-config"]

    code, out, err = run_cli(capsys, *args, "--config", str(path))

    assert code == 2, out + err
    assert out == ""
    assert err.startswith("mlsvc-discover: config error: "), err
    assert case.key in err, err
    assert case.hint in err, err
    assert world.requests() == {"openmetadata": 0, "mlflow": 0, "aws": 0}
