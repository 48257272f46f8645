"""Every AWS call attempt has a total deadline, driven by real botocore against loopback servers.

botocore bounds each socket read (``read_timeout``), not a whole answer: these servers keep
every single read short and so would hold a call forever without ``call_timeout``.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mlsvc_discover.discoverers.base import DiscoveryResult
from mlsvc_discover.discoverers.sagemaker import SageMakerConfig, SageMakerDiscoverer
from testing.hostile import HostileServer, Mode
from testing.mlflow_fixtures import TlsMaterial

pytestmark = pytest.mark.timeout(120)

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/mlsvc-discover"


@pytest.fixture
def aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake static credentials and empty AWS config files: nothing but the test server is asked."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    (tmp_path / "config").write_text("")
    (tmp_path / "credentials").write_text("")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def trickling_server(mode: Mode) -> HostileServer:
    """One byte per half second: the body only, or the status line and headers too."""
    return HostileServer(mode, interval=0.5, content_type="text/xml").start()


@pytest.fixture(params=["trickle_body", "trickle"], ids=["body", "headers"])
def trickling(request: pytest.FixtureRequest) -> Iterator[HostileServer]:
    server = trickling_server(request.param)
    yield server
    server.close()


def config(endpoint: str, **overrides: Any) -> SageMakerConfig:
    raw: dict[str, Any] = {
        "type": "sagemaker",
        "name": "sm",
        "regions": ["us-east-1"],
        "endpoint_url": endpoint,
        "accounts": [{"role_arn": ROLE}],
        # Each read is short (one byte every 0.5 s): read_timeout alone would never fire.
        "read_timeout": 5,
        **overrides,
    }
    return SageMakerConfig.model_validate(raw)


def discover(cfg: SageMakerConfig) -> DiscoveryResult:
    async def run() -> DiscoveryResult:
        discoverer = SageMakerDiscoverer(cfg)
        try:
            return await discoverer.discover()
        finally:
            await discoverer.aclose()

    return asyncio.run(asyncio.wait_for(run(), timeout=100))


@pytest.mark.usefixtures("aws_env")
def test_a_trickling_aws_endpoint_fails_the_call_at_its_total_deadline(trickling: HostileServer) -> None:
    started = time.monotonic()
    result = discover(config(trickling.url, call_timeout=1.5, max_attempts=1))
    elapsed = time.monotonic() - started

    # Without the deadline the answer would take a million (body) or more half-seconds.
    assert elapsed < 1.5 + 3, elapsed
    assert not result.findings
    [failure] = result.failures
    assert failure.kind == "timeout"
    assert failure.reason == (
        f"cannot assume role {ROLE}: no complete answer from {trickling.url}/ within 1.5s (call_timeout, per attempt)"
    )
    assert trickling.requests == 1


@pytest.mark.usefixtures("aws_env")
def test_each_attempt_gets_its_own_deadline_and_the_retries_stay_bounded() -> None:
    server = trickling_server("trickle_body")
    try:
        started = time.monotonic()
        result = discover(config(server.url, call_timeout=1, max_attempts=3))
        elapsed = time.monotonic() - started
    finally:
        server.close()

    assert server.requests == 3  # botocore retried the timed-out attempts, as any timeout
    assert 3 * 1 <= elapsed < 3 * 1 + 3 + 4, elapsed  # three deadlines, backoff, margin
    assert [f.kind for f in result.failures] == ["timeout"]


def test_a_call_in_flight_never_keeps_the_process_alive(tmp_path: Path) -> None:
    """A cycle abandoned mid-call (a cycle deadline, a signal) lets the process exit at once."""
    server = trickling_server("trickle_body")
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys, time
        from mlsvc_discover.discoverers.sagemaker import SageMakerConfig, SageMakerDiscoverer

        cfg = SageMakerConfig.model_validate({{
            "type": "sagemaker", "name": "sm", "regions": ["us-east-1"], "endpoint_url": {server.url!r},
            "accounts": [{{"role_arn": {ROLE!r}}}], "read_timeout": 5, "call_timeout": 600, "max_attempts": 1,
        }})

        async def main():
            discoverer = SageMakerDiscoverer(cfg)
            try:
                await asyncio.wait_for(discoverer.discover(), timeout=1)
            except TimeoutError:
                print(json.dumps({{"abandoned_at": time.monotonic()}}), flush=True)
            finally:
                await discoverer.aclose()

        asyncio.run(main())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    (tmp_path / "empty").write_text("")
    env |= {
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_CONFIG_FILE": str(tmp_path / "empty"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "empty"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    try:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        elapsed = time.monotonic() - started
    finally:
        server.close()

    assert done.returncode == 0, done.stderr
    assert "abandoned_at" in json.loads(done.stdout.strip().splitlines()[-1])
    assert server.requests == 1  # the call was in flight when the cycle gave up on it
    assert elapsed < 1 + 15, elapsed  # interpreter start-up and imports included; the call had 600 s left
    assert "Traceback" not in done.stderr


_IDENTITY = f"""<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult><Arn>arn:aws:iam::{ACCOUNT}:user/test</Arn><UserId>AIDATEST</UserId>
  <Account>{ACCOUNT}</Account></GetCallerIdentityResult>
  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>""".encode()


class _AwsLike(BaseHTTPRequestHandler):
    """STS GetCallerIdentity (query protocol) and empty SageMaker listings (JSON protocol)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        target = self.headers.get("X-Amz-Target", "")
        if target.startswith("SageMaker."):
            body, kind = b"{}", "application/x-amz-json-1.1"
        else:
            body, kind = _IDENTITY, "text/xml"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def tls_aws(tls_material: TlsMaterial) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AwsLike)
    server.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_material.cert_path, tls_material.key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.usefixtures("aws_env")
def test_aws_calls_verify_tls_and_honour_aws_ca_bundle(
    tls_aws: str, tls_material: TlsMaterial, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline sender replaces botocore's: it must verify as botocore does, CA bundle included."""
    cfg = config(tls_aws, accounts=[{}], max_attempts=1)

    refused = discover(cfg)
    [failure] = refused.failures
    assert failure.kind == "unreachable"
    assert failure.reason == f"cannot identify the account of default credentials: cannot reach {tls_aws}/ (SSLError)"

    monkeypatch.setenv("AWS_CA_BUNDLE", str(tls_material.ca_path))
    trusted = discover(cfg)
    assert trusted.failures == []
    assert {s.scope: s.ok for s in trusted.scopes} == {
        ("sagemaker", "sm"): True,
        ("sagemaker", "sm", ACCOUNT): True,
        ("sagemaker", "sm", ACCOUNT, "us-east-1"): True,
    }
