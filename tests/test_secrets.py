"""Secrets never leak: not in output, logs, metrics, reports, errors, nor OpenMetadata payloads.

Every secret the agent can be given gets a distinctive value: the OpenMetadata token, MLflow
passwords and tokens (per discoverer, per URI, in a URI's userinfo, in a ``uris_file``, in a
registry URI), the AWS secret key of the environment and a role's external id. Then every
command and mode runs against real components on loopback (the OpenMetadata stand-in, servers
answering like MLflow, ``moto``): ``discover --once`` (text and JSON), ``--dry-run`` (text and
JSON), ``validate-config`` (YAML and JSON), the long-running agent as a real process with DEBUG
logs (text and JSON) and its ``/metrics``, and the error paths (OpenMetadata failing or
refusing the token, MLflow URIs with credentials failing, config errors quoting values).
No secret may appear in any of it, nor in any request OpenMetadata received, except the AWS
keys of the one account whose config asks for ``send_access_keys``: those are in that
service's payload, and still nowhere else.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from testing.mlflow_fixtures import FakeServer, free_port, mlflow_like, redirect, status
from testing.moto_fixtures import ACCOUNT_A, DEFAULT_ACCOUNT, AwsWorld, MotoServer, seed_models
from testing.openmetadata import FaultRule, OpenMetadataStandIn, Principal
from tests.helpers import CLI, http_get, run_cli

pytestmark = pytest.mark.timeout(120)


OM_SECRET = "om-SECRET-token-5b1e9c2a"
SECRETS = {
    "OPENMETADATA_SECRET_TOKEN": OM_SECRET,
    "MLFLOW_DEFAULT_PASSWORD": "mlflow-SECRET-default-pw-7141",
    "MLFLOW_URI_PASSWORD": "mlflow-SECRET-uri-pw-3352",
    "MLFLOW_URI_TOKEN": "mlflow-SECRET-uri-token-4463",
    "MLFLOW_DEFAULT_TOKEN": "mlflow-SECRET-default-token-5574",
    "MLFLOW_USERINFO_PASSWORD": "mlflow-SECRET-userinfo-6685",
    "MLFLOW_FAILING_PASSWORD": "mlflow-SECRET-failing-7796",
    "MLFLOW_REGISTRY_PASSWORD": "mlflow-SECRET-registry-8807",
    "AWS_EXTERNAL_ID": "ext-SECRET-id-9918",
}
FILE_PASSWORD = "mlflow-SECRET-uris-file-1029"
AWS_SECRET_KEY = "aws-SECRET-access-key-2130"
AWS_KEY_ID = "AKIASECRETKEYID03241"
# What goes on the wire for basic auth: the encoded pair must not show up anywhere either.
BASIC = [
    base64.b64encode(f"{user}:{password}".encode()).decode()
    for user, password in (
        ("reader", SECRETS["MLFLOW_DEFAULT_PASSWORD"]),
        ("u2", SECRETS["MLFLOW_URI_PASSWORD"]),
        ("bob", SECRETS["MLFLOW_USERINFO_PASSWORD"]),
        ("filer", FILE_PASSWORD),
    )
]
EVERY_SECRET = [*SECRETS.values(), FILE_PASSWORD, AWS_SECRET_KEY, AWS_KEY_ID, *BASIC]
SENT_ON_PURPOSE = {AWS_SECRET_KEY, AWS_KEY_ID}  # send_access_keys: true on the ambient account


def assert_no_secret(text: str, where: str, allowed: frozenset[str] = frozenset()) -> None:
    for secret in EVERY_SECRET:
        if secret not in allowed:
            assert secret not in text, f"{secret!r} leaked into {where}"
    # Encoded forms travel too: the basic-auth header value of a password, or a URL-encoded one.
    assert "SECRET" not in text.replace("SECRET_", ""), f"a secret fragment leaked into {where}"


def assert_openmetadata_saw_no_secret(standin: OpenMetadataStandIn, *, keys_written: bool = False) -> None:
    """No secret in any request: bodies (raw bytes), paths, queries, headers (tokens masked).

    ``keys_written``: the cycle wrote the ambient account's service, so its keys must be there.
    """
    aws_service = f"sagemaker-{DEFAULT_ACCOUNT}-us-east-1"
    for request in standin.requests:
        bodies = request.body if isinstance(request.body, list) else [request.body]
        carries_keys = any(isinstance(b, dict) and b.get("name") == aws_service for b in bodies)
        text = request.raw.decode("utf-8", "replace")
        for secret in EVERY_SECRET:
            if secret in SENT_ON_PURPOSE and carries_keys:
                continue
            assert secret not in text, f"{secret!r} in the body of {request.method} {request.path}"
            assert secret not in request.path + json.dumps(request.query) + json.dumps(request.headers)
        assert request.headers.get("authorization") in (None, "Bearer ***")
    for secret in EVERY_SECRET:
        leaking = standin.bodies_containing(secret)
        if secret in SENT_ON_PURPOSE and keys_written:
            # Only the service of the account that asked for it, and only as its own awsConfig.
            assert leaking, f"send_access_keys: true, but {secret!r} was never sent"
            for request in leaking:
                bodies = request.body if isinstance(request.body, list) else [request.body]
                for body in bodies:
                    if secret in json.dumps(body):
                        assert body["name"] == aws_service
        else:
            assert leaking == []


@dataclass
class World:
    standin: OpenMetadataStandIn
    config: dict[str, Any]
    path: Path
    servers: dict[str, FakeServer]
    failing_key: str

    def write(self, config: dict[str, Any] | None = None) -> Path:
        self.path.write_text(yaml.safe_dump(config or self.config, sort_keys=False), encoding="utf-8")
        return self.path


@pytest.fixture
def world(
    om_standin: OpenMetadataStandIn,
    fake_mlflow: Callable[..., FakeServer],
    moto_server: MotoServer,
    aws_world: AwsWorld,
    refused_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY)
    for name in ("OPENMETADATA_HOST", "OPENMETADATA_JWT_TOKEN", "MLSVC_DISCOVER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLSVC_DISCOVER_LOG_LEVEL", "DEBUG")
    om_standin.add_token(OM_SECRET, Principal("ingestion-bot", is_bot=True))
    # The ambient credentials act as moto's default account: give it a model so it is in use.
    seed_models(moto_server, None, "us-east-1", ["ambient-model"])

    servers = {name: fake_mlflow(mlflow_like()) for name in ("default", "per-uri", "token", "userinfo", "registry")}
    servers["denied"] = fake_mlflow(status(401, b"bad credentials", "text/plain"))
    servers["filed"] = fake_mlflow(mlflow_like())
    hostport = {name: s.url.removeprefix("http://") for name, s in servers.items()}
    refused = refused_url.removeprefix("http://")
    uris_file = tmp_path / "uris.txt"
    uris_file.write_text(f"http://filer:{FILE_PASSWORD}@{hostport['filed']}\n", encoding="utf-8")
    tracking = {
        "userinfo": f"http://bob:${{MLFLOW_USERINFO_PASSWORD}}@{hostport['userinfo']}",
        "failing": f"http://carol:${{MLFLOW_FAILING_PASSWORD}}@{refused}",
    }
    config: dict[str, Any] = {
        "owner_id": "secrets",
        "openmetadata": {
            "host": om_standin.base_url,
            "token": "${OPENMETADATA_SECRET_TOKEN}",
            "retries": 1,
            "backoff_initial": "10ms",
            "timeout": "3s",
        },
        "schedule": {"interval": "1s", "grace_period": "5s"},
        "server": {"enabled": True, "address": "127.0.0.1:0"},
        "logging": {"level": "DEBUG", "format": "text"},
        "discoverers": [
            {
                "type": "mlflow",
                "name": "fleet",
                "timeout": "2s",
                "auth": {"username": "reader", "password": "${MLFLOW_DEFAULT_PASSWORD}"},
                "tracking_uris": [
                    servers["default"].url,
                    {"uri": servers["per-uri"].url, "auth": {"username": "u2", "password": "${MLFLOW_URI_PASSWORD}"}},
                    {"uri": servers["token"].url, "auth": {"token": "${MLFLOW_URI_TOKEN}"}},
                    tracking["userinfo"],
                    {
                        "uri": servers["registry"].url,
                        "registry_uri": "postgresql://mlflow:${MLFLOW_REGISTRY_PASSWORD}@db.internal/mlflow",
                    },
                    tracking["failing"],
                    {"uri": servers["denied"].url, "auth": {"token": "${MLFLOW_URI_TOKEN}"}},
                ],
            },
            {
                "type": "mlflow",
                "name": "filed",
                "timeout": "2s",
                "auth": {"token": "${MLFLOW_DEFAULT_TOKEN}"},
                "uris_file": str(uris_file),
            },
            {
                "type": "sagemaker",
                "name": "aws",
                "endpoint_url": aws_world.endpoint_url,
                "regions": ["us-east-1"],
                "max_attempts": 1,
                "accounts": [
                    {"role_arn": aws_world.role_arns[ACCOUNT_A], "external_id": "${AWS_EXTERNAL_ID}"},
                    {"send_access_keys": True},  # the ambient credentials, sent on purpose
                ],
            },
        ],
    }
    return World(om_standin, config, tmp_path / "config.yaml", servers, refused_url.rstrip("/"))


# --- one-shot commands --------------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["text", "json"])
def test_discover_once_leaks_no_secret_in_output_logs_report_or_payloads(
    world: World, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    code, out, err = run_cli(capsys, "discover", "--once", "--config", str(world.write()), "--output", output)

    assert code == 1, out + err  # the refused and the 401 URIs fail; everything else is applied
    assert "DEBUG" in err or '"level": "debug"' in err  # the logs were really at DEBUG
    assert_no_secret(out, "stdout")
    assert_no_secret(err, "stderr (logs)")
    assert_openmetadata_saw_no_secret(world.standin, keys_written=True)
    services = world.standin.services
    # Credentials in a tracking URI or a registry URI never reach OpenMetadata.
    userinfo = services[f"mlflow-127.0.0.1-{world.servers['userinfo'].port}"]["connection"]["config"]
    assert userinfo["trackingUri"] == userinfo["registryUri"] == world.servers["userinfo"].url
    registry = services[f"mlflow-127.0.0.1-{world.servers['registry'].port}"]["connection"]["config"]
    assert registry["registryUri"] == "postgresql://db.internal/mlflow"
    # The account that asked for its keys got them; the assumed role's service carries none.
    ambient = services[f"sagemaker-{DEFAULT_ACCOUNT}-us-east-1"]["connection"]["config"]["awsConfig"]
    assert ambient["awsSecretAccessKey"] == AWS_SECRET_KEY
    assert ambient["awsAccessKeyId"] == AWS_KEY_ID
    role = services[f"sagemaker-{ACCOUNT_A}-us-east-1"]["connection"]["config"]["awsConfig"]
    assert "awsSecretAccessKey" not in role
    assert "externalId" not in json.dumps(role)
    if output == "json":
        reasons = {f["item"]: f["reason"] for f in json.loads(out)["failures"]}
        # A failing URI with credentials is named by its clean URI, with a reason and no password.
        assert reasons[world.failing_key] == "connection refused"
        assert "HTTP 401: unauthorized" in reasons[world.servers["denied"].url]


@pytest.mark.parametrize("output", ["text", "json"])
def test_dry_run_leaks_no_secret_and_masks_the_keys_it_would_send(
    world: World, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    code, out, err = run_cli(
        capsys, "discover", "--once", "--dry-run", "--config", str(world.write()), "--output", output
    )

    assert code == 1, out + err
    assert_no_secret(out, "dry-run stdout")
    assert_no_secret(err, "dry-run stderr")
    assert world.standin.writes() == []
    assert_openmetadata_saw_no_secret(world.standin)
    if output == "json":
        plan = json.loads(out)["plan"]
        bodies = {c["name"]: c["body"] for c in plan["create"]}
        aws = bodies[f"sagemaker-{DEFAULT_ACCOUNT}-us-east-1"]["connection"]["config"]["awsConfig"]
        assert aws["awsSecretAccessKey"] == "*********"


@pytest.mark.parametrize("output", ["yaml", "json"])
def test_validate_config_prints_the_config_with_every_secret_redacted(
    world: World, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    code, out, err = run_cli(capsys, "validate-config", "--config", str(world.write()), "--output", output)

    assert code == 0, err
    assert_no_secret(out, "validate-config stdout")
    assert_no_secret(err, "validate-config stderr")
    data = json.loads(out) if output == "json" else yaml.safe_load(out)
    assert data["openmetadata"]["token"] == "**********"
    uris = data["discoverers"][0]["tracking_uris"]
    assert f"http://bob:***@{world.servers['userinfo'].url.removeprefix('http://')}" in uris
    assert world.standin.requests == []


# --- error paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["openmetadata-failing", "token-revoked", "openmetadata-redirects-elsewhere"])
def test_error_paths_leak_no_secret(
    world: World,
    capsys: pytest.CaptureFixture[str],
    fake_mlflow: Callable[..., FakeServer],
    fault: str,
) -> None:
    config = world.config
    witness: FakeServer | None = None
    if fault == "openmetadata-failing":
        # A server that quotes the token back in its error: the agent still shows it nowhere.
        world.standin.inject(FaultRule(status=500, message=f"Internal error for token {OM_SECRET}"))
    elif fault == "token-revoked":
        world.standin.revoke(OM_SECRET)
    else:
        # The configured host answers 307 to another server: the token must not follow.
        witness = fake_mlflow(status(200, b'{"data": [], "paging": {}}'))
        moved = fake_mlflow(redirect(lambda path: witness.url + path, 307))
        config = {**config, "openmetadata": {**config["openmetadata"], "host": moved.url + "/api"}}

    code, out, err = run_cli(capsys, "discover", "--once", "--config", str(world.write(config)), "--output", "json")

    assert code == 1
    assert_no_secret(out, f"{fault} stdout")
    assert_no_secret(err, f"{fault} stderr")
    assert_openmetadata_saw_no_secret(world.standin)
    fatal = json.loads(out)["fatal"]
    if fault == "openmetadata-failing":
        assert "HTTP 500" in fatal
    elif fault == "token-revoked":
        assert "the token was rejected: check openmetadata.token / OPENMETADATA_JWT_TOKEN" in fatal
    else:
        assert witness is not None
        assert "unexpected redirect (HTTP 307)" in fatal
        assert "redirects are not followed so the token never leaves the configured host" in fatal
        assert witness.requests == []  # not followed at all, so no Authorization header either


@pytest.mark.parametrize(
    ("change", "key"),
    [
        # A password in a URI the loader refuses is quoted redacted.
        (lambda c, s: c["discoverers"][0]["tracking_uris"].append(f"ftp://eve:{s}@files.internal/x"), "tracking_uris"),
        (lambda c, s: c["discoverers"][0]["tracking_uris"].append(f"http://eve:{s}/x@h.internal"), "tracking_uris"),
        # Secret-typed values are never echoed, whatever is wrong with them.
        (lambda c, s: c["discoverers"][0].update(auth={"token": s, "username": "x"}), "discoverers[0].auth"),
        (lambda c, s: c["discoverers"][2]["accounts"][0].update(external_id=f"has spaces {s}"), "external_id"),
        (lambda c, s: c["openmetadata"].update(token=[s]), "openmetadata.token"),
        (lambda c, s: c["openmetadata"].update(tokn=s), "openmetadata.tokn"),
        (lambda c, s: c["discoverers"][0].update(auth={"username": "x", "password": {"nested": s}}), "auth"),
    ],
    ids=[
        "uri-bad-scheme",
        "uri-password-with-slash",
        "token-and-password",
        "bad-external-id",
        "token-a-list",
        "unknown-key",
        "password-a-mapping",
    ],
)
def test_config_errors_never_echo_a_secret(
    world: World, capsys: pytest.CaptureFixture[str], change: Callable[[dict[str, Any], str], Any], key: str
) -> None:
    secret = SECRETS["MLFLOW_URI_PASSWORD"]
    config = json.loads(json.dumps(world.config))
    change(config, secret)
    path = world.write(config)
    for args in (["discover", "--once"], ["validate-config"]):
        code, out, err = run_cli(capsys, *args, "--config", str(path))
        assert code == 2, out + err
        assert key in err
        assert_no_secret(out + err, f"config error of {args[0]}")
    assert world.standin.requests == []


# --- the long-running agent as a real process ----------------------------------------------------------


def _cycles(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("mlsvc_discover_cycles_total{")
    )


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_long_running_agent_with_debug_logs_leaks_no_secret_in_logs_or_metrics(
    world: World, tmp_path: Path, fmt: str
) -> None:
    port = free_port()
    config = {
        **world.config,
        "logging": {"level": "DEBUG", "format": fmt},
        "server": {"enabled": True, "address": f"127.0.0.1:{port}"},
    }
    path = world.write(config)
    # OpenMetadata fails the first cycle, so its error path is logged too.
    world.standin.inject(FaultRule(method="GET", path="/mlmodelServices", status=503, times=2))
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [str(CLI), "discover", "--config", str(path)], stdout=out, stderr=err, env=dict(os.environ)
        )
    try:
        deadline = time.monotonic() + 60
        metrics = ""
        while time.monotonic() < deadline:
            assert proc.poll() is None, stderr.read_text()
            try:
                code, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
            except (urllib.error.URLError, OSError):
                code = 0
            if code == 200 and _cycles(metrics) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"fewer than 2 cycles in 60 s:\n{stderr.read_text()[-3000:]}")
        ready = http_get(f"http://127.0.0.1:{port}/readyz")
        health = http_get(f"http://127.0.0.1:{port}/healthz")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    logs = stderr.read_text()
    assert "DEBUG" in logs or '"level": "debug"' in logs
    assert "cannot read ML model services from OpenMetadata" in logs  # the failing first cycle
    if fmt == "json":
        bad = [line for line in logs.splitlines() if line.strip() and not line.startswith("{")]
        assert bad == [], bad
        assert all(json.loads(line)["event"] for line in logs.splitlines() if line.strip())
    assert_no_secret(logs, f"{fmt} logs")
    assert_no_secret(stdout.read_text(), "stdout")
    assert_no_secret(metrics, "/metrics")
    assert 'mlsvc_discover_errors_total{discoverer="fleet",kind="unauthorized"}' in metrics
    assert_no_secret(ready[1] + health[1], "/readyz and /healthz")
    assert_openmetadata_saw_no_secret(world.standin, keys_written=True)
