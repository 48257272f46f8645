"""A real ``moto_server`` on loopback, a seeded two-account AWS world, and a fault-injecting proxy.

``moto_server`` (session scope) starts one moto process (moto's server app behind
:mod:`testing.aws_fake`, which adds SageMaker's managed MLflow calls, refused roles and
faults, driven with :meth:`MotoServer.fake`) and points the AWS environment of the
test session at throw-away credentials and config files, so neither the developer's own AWS
files nor instance metadata are ever read. ``aws_world`` (function scope) resets moto and seeds
two accounts reached by assuming roles, each with two regions, some in use and some empty.
``aws_fault_proxy`` (function scope) is a small HTTP server in front of moto that answers chosen
SageMaker calls with AWS-shaped errors moto cannot produce (throttling, a region that refuses the
credentials), so the discoverer's real botocore path, retries included, meets them over HTTP.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"
DEFAULT_ACCOUNT = "123456789012"  # moto's account for credentials it does not know
REGIONS = ("us-east-1", "eu-west-1")
PROFILE = "mlsvc-profile"
PROFILE_KEY_ID = "AKIAMLSVCPROFILE0001"
PROFILE_SECRET = "profile-secret-0123456789abcdefghijklmnop"
_START_TIMEOUT = 30.0
_HTTP_TIMEOUT = 10.0

# Variables that would make botocore pick credentials or endpoints other than the test's.
_AWS_ENV_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_SAGEMAKER",
    "AWS_ENDPOINT_URL_EC2",
)


def role_arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:role/mlsvc-discover"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class MotoServer:
    """A running ``moto_server``: its URL, helpers to reset it, and the test AWS files."""

    url: str
    process: subprocess.Popen[bytes]
    config_file: Path
    credentials_file: Path
    startup_seconds: float
    _profiles: dict[str, dict[str, str]] = field(default_factory=dict)
    _boto: Any = None

    def post(self, path: str, data: bytes = b"") -> bytes:
        # Not form-encoded: moto reads reset-auth's number from the raw body, which Flask
        # empties for form posts.
        request = urllib.request.Request(
            self.url + path, data=data, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT) as response:
            return bytes(response.read())

    def reset(self) -> None:
        """Forget every resource, in every account and region (the fake's state too)."""
        self.post("/moto-api/reset")

    def fake(self, command: str, **body: Any) -> Any:
        """Drive the fake in front of moto (see :class:`testing.aws_fake.FakeControl`)."""
        from testing.aws_fake import control

        return control(self.url, command, body)

    def require_auth(self, after_requests: float) -> None:
        """Make moto check signatures and IAM policies after ``after_requests`` more requests.

        ``float("inf")`` switches checking off again (moto's default).
        """
        self.post("/moto-api/reset-auth", str(after_requests).encode())

    def rss_mb(self) -> float:
        return _rss_mb(self.process.pid)

    def write_profile(self, name: str, access_key_id: str, secret_access_key: str, region: str = "eu-west-1") -> None:
        """Add (or replace) a named profile in the session's AWS config and credentials files."""
        self._profiles[name] = {"key": access_key_id, "secret": secret_access_key, "region": region}
        self._write_files()

    def remove_profile(self, name: str) -> None:
        """Take a profile out of the files again (botocore then raises ProfileNotFound for it)."""
        self._profiles.pop(name, None)
        self._write_files()

    def _write_files(self) -> None:
        # botocore reads both files afresh for every new session, so changes apply at once.
        profiles = self._profiles.items()
        self.config_file.write_text("".join(f"[profile {n}]\nregion = {p['region']}\n\n" for n, p in profiles))
        self.credentials_file.write_text(
            "".join(
                f"[{n}]\naws_access_key_id = {p['key']}\naws_secret_access_key = {p['secret']}\n\n" for n, p in profiles
            )
        )

    def client(self, service: str, region: str = "us-east-1", creds: dict[str, str] | None = None) -> Any:
        """A boto3 client on this server, as the default account or with ``creds`` (assume_role's)."""
        import boto3

        if self._boto is None:
            self._boto = boto3.Session(
                aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
            )
        keys = (
            {
                "aws_access_key_id": creds["AccessKeyId"],
                "aws_secret_access_key": creds["SecretAccessKey"],
                "aws_session_token": creds["SessionToken"],
            }
            if creds
            else {}
        )
        return self._boto.client(service, region_name=region, endpoint_url=self.url, **keys)

    def assume(self, arn: str) -> dict[str, str]:
        """Temporary credentials that act as the role's account (moto needs no role to exist)."""
        creds = self.client("sts").assume_role(RoleArn=arn, RoleSessionName="seed")["Credentials"]
        return {k: str(v) for k, v in creds.items()}


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise RuntimeError(f"moto_server did not answer within {_START_TIMEOUT:.0f}s: {log.read_text()[-2000:]}")


def terminate_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s; always reaped. Also used by the benchmark's moto."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One ``moto_server`` process for the session, and an AWS environment that only knows it."""
    tmp = tmp_path_factory.mktemp("moto")
    config_file, credentials_file, log = tmp / "aws-config", tmp / "aws-credentials", tmp / "moto.log"
    config_file.write_text("")
    credentials_file.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        for name in _AWS_ENV_TO_CLEAR:
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", str(config_file))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials_file))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")

        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "testing.aws_fake", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
                cwd=Path(__file__).resolve().parents[1],
            )
        try:
            _wait_until_up(url, process, log)
            server = MotoServer(
                url=url,
                process=process,
                config_file=config_file,
                credentials_file=credentials_file,
                startup_seconds=time.monotonic() - started,
            )
            server.write_profile(PROFILE, PROFILE_KEY_ID, PROFILE_SECRET)
            yield server
        finally:
            terminate_process(process)


@dataclass(frozen=True)
class AwsWorld:
    """What ``aws_world`` seeded: counts per (account, region), and how to reach each account."""

    endpoint_url: str
    role_arns: dict[str, str]
    regions: tuple[str, ...]
    contents: dict[tuple[str, str], dict[str, int]]

    @property
    def in_use(self) -> set[tuple[str, str]]:
        return {pair for pair, counts in self.contents.items() if any(counts.values())}

    @property
    def empty(self) -> set[tuple[str, str]]:
        return set(self.contents) - self.in_use


def seed_models(moto: MotoServer, account_creds: dict[str, str] | None, region: str, names: list[str]) -> None:
    sm = moto.client("sagemaker", region, account_creds)
    for name in names:
        sm.create_model(
            ModelName=name,
            ExecutionRoleArn="arn:aws:iam::111111111111:role/sagemaker-execution",
            PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/model:1"},
        )


@pytest.fixture
def aws_world(moto_server: MotoServer) -> AwsWorld:
    """Two accounts x two regions; three pairs in use, one empty.

    111111111111/us-east-1: 2 models; 111111111111/eu-west-1: nothing;
    222222222222/us-east-1: 1 model package group; 222222222222/eu-west-1: 1 endpoint whose model
    was deleted afterwards (AWS allows that), so only the endpoint listing shows it.
    """
    moto = moto_server
    moto.require_auth(float("inf"))
    moto.reset()
    creds = {account: moto.assume(role_arn(account)) for account in (ACCOUNT_A, ACCOUNT_B)}

    seed_models(moto, creds[ACCOUNT_A], "us-east-1", ["churn-v1", "churn-v2"])
    moto.client("sagemaker", "us-east-1", creds[ACCOUNT_B]).create_model_package_group(
        ModelPackageGroupName="fraud-detection"
    )
    seed_models(moto, creds[ACCOUNT_B], "eu-west-1", ["ranker"])
    sm = moto.client("sagemaker", "eu-west-1", creds[ACCOUNT_B])
    sm.create_endpoint_config(
        EndpointConfigName="ranker-config",
        ProductionVariants=[
            {"VariantName": "main", "ModelName": "ranker", "InitialInstanceCount": 1, "InstanceType": "ml.t2.medium"}
        ],
    )
    sm.create_endpoint(EndpointName="ranker", EndpointConfigName="ranker-config")
    sm.delete_model(ModelName="ranker")

    none = {"models": 0, "model_package_groups": 0, "endpoints": 0}
    return AwsWorld(
        endpoint_url=moto.url,
        role_arns={account: role_arn(account) for account in (ACCOUNT_A, ACCOUNT_B)},
        regions=REGIONS,
        contents={
            (ACCOUNT_A, "us-east-1"): {**none, "models": 2},
            (ACCOUNT_A, "eu-west-1"): dict(none),
            (ACCOUNT_B, "us-east-1"): {**none, "model_package_groups": 1},
            (ACCOUNT_B, "eu-west-1"): {**none, "endpoints": 1},
        },
    )


@dataclass(frozen=True)
class IamEnforced:
    """Profiles whose credentials moto checks: one may assume roles, one may not, one is unknown."""

    allowed_profile: str
    denied_profile: str
    unknown_profile: str


def _policy(actions: list[str], principal: bool = False) -> str:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": actions}
    if principal:
        statement["Principal"] = {"AWS": "*"}
    else:
        statement["Resource"] = "*"
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@pytest.fixture
def aws_iam_enforced(aws_world: AwsWorld, moto_server: MotoServer) -> Iterator[IamEnforced]:
    """``aws_world`` with moto checking signatures and IAM policies of every request.

    In moto's default account: IAM user ``allowed`` (may sts:AssumeRole) and ``denied`` (may only
    list SageMaker), each with an access key in profile ``iam-allowed`` / ``iam-denied``, and a
    profile ``iam-unknown`` whose key moto never issued. Account 111111111111 has the role
    ``mlsvc-discover`` allowed to list SageMaker and describe regions; 222222222222 has no
    role. Checking is switched off again at teardown, whatever the test did.
    """
    moto = moto_server
    iam = moto.client("iam")
    names = {"allowed": ["sts:AssumeRole"], "denied": ["sagemaker:List*"]}
    for user, actions in names.items():
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="mlsvc", PolicyDocument=_policy(actions))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        moto.write_profile(f"iam-{user}", key["AccessKeyId"], key["SecretAccessKey"], region="us-east-1")
    moto.write_profile("iam-unknown", "AKIAUNKNOWNUNKNOWN00", "not-a-key-moto-issued", region="us-east-1")
    role_iam = moto.client("iam", creds=moto.assume(aws_world.role_arns[ACCOUNT_A]))
    role_iam.create_role(
        RoleName="mlsvc-discover", AssumeRolePolicyDocument=_policy(["sts:AssumeRole"], principal=True)
    )
    role_iam.put_role_policy(
        RoleName="mlsvc-discover",
        PolicyName="mlsvc",
        PolicyDocument=_policy(["sagemaker:List*", "ec2:DescribeRegions"]),
    )
    moto.require_auth(0)
    try:
        yield IamEnforced(allowed_profile="iam-allowed", denied_profile="iam-denied", unknown_profile="iam-unknown")
    finally:
        moto.require_auth(float("inf"))
        for name in ("iam-allowed", "iam-denied", "iam-unknown"):
            moto.remove_profile(name)


# --- fault-injecting proxy -----------------------------------------------------------------------


@dataclass
class Fault:
    """Answer calls to ``service`` in ``region`` with this JSON-protocol error instead of moto's."""

    service: str
    region: str
    code: str
    message: str
    status: int = 400
    hits: int = 0


def _credential_scope(headers: Any) -> tuple[str, str]:
    """(region, service) from a SigV4 Authorization header: what AWS itself routes on."""
    auth = headers.get("Authorization", "")
    scope = auth.partition("Credential=")[2].partition(",")[0].split("/")
    return (scope[2], scope[3]) if len(scope) >= 4 else ("", "")


class AwsFaultProxy:
    """A loopback HTTP server forwarding to moto, except for calls matching a :class:`Fault`."""

    def __init__(self, upstream: str) -> None:
        self.faults: list[Fault] = []
        self.forwarded = 0
        self._lock = threading.Lock()
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                region, service = _credential_scope(self.headers)
                fault = proxy._match(service, region)
                if fault is not None:
                    payload = json.dumps({"__type": fault.code, "message": fault.message}).encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("x-amzn-RequestId", "fault-proxy")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=_HTTP_TIMEOUT)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in {"connection", "keep-alive"}}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    upstream_response = conn.getresponse()
                    data = upstream_response.read()
                    self.send_response(upstream_response.status)
                    for key, value in upstream_response.getheaders():
                        if key.lower() not in {"connection", "transfer-encoding", "content-length"}:
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()
                with proxy._lock:
                    proxy.forwarded += 1

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval keeps shutdown() quick (the default waits up to half a second).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="aws-fault-proxy", daemon=True
        )
        self._thread.start()

    def fail(self, service: str, region: str, code: str, message: str, status: int = 400) -> Fault:
        fault = Fault(service=service, region=region, code=code, message=message, status=status)
        with self._lock:
            self.faults.append(fault)
        return fault

    def _match(self, service: str, region: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.service == service and fault.region == region:
                    fault.hits += 1
                    return fault
        return None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def aws_fault_proxy(moto_server: MotoServer) -> Iterator[AwsFaultProxy]:
    """A fault-injecting proxy in front of the session's moto server."""
    proxy = AwsFaultProxy(moto_server.url)
    try:
        yield proxy
    finally:
        with contextlib.suppress(OSError):
            proxy.close()
