"""moto's server app with what moto lacks in front of it: SageMaker's managed MLflow, refused roles, faults.

``python -m testing.aws_fake --port N`` serves one loopback HTTP server: every request
goes to moto's own server app (the one ``moto_server`` runs) except

- SageMaker's MLflow calls (``X-Amz-Target: SageMaker.ListMlflowTrackingServers`` and the
  other read calls), which moto implements in no version. They are answered here in AWS's JSON
  1.1 protocol, per calling account (the SigV4 access key mapped to its account by moto's
  ``get_account_id_from``) and region (the SigV4 credential scope), with ``NextToken``
  pagination and AWS's error shapes (``{"__type": ..., "message": ...}``). Every request is
  checked against the input shape and every answer against the output shape of botocore's own
  service model; a violation is a 500 naming it, so a test fails loudly.
- ``AssumeRole`` in strict mode: moto lets anyone assume any role, even one that does not exist;
  strict mode refuses (403 ``AccessDenied``, in STS's XML) unless the role exists in the target
  account's IAM in moto and the ExternalId matches its trust policy's ``sts:ExternalId``.
- Faults: chosen calls (by action, account, region) answered with a chosen AWS error, for a
  number of times or always, e.g. ``ThrottlingException`` or ``AccessDeniedException``.

The test (or the benchmark) drives the state over HTTP: ``POST /_fake/<command>`` with a JSON
body (see :class:`FakeControl`); ``POST /moto-api/reset`` also resets the fake. ``/_fake/latency``
adds a delay to every AWS call (the benchmark's stand-in for AWS's round trip).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

MLFLOW_ACTIONS = (
    "ListMlflowTrackingServers",
    "DescribeMlflowTrackingServer",
    "ListMlflowApps",
    "DescribeMlflowApp",
)
_JSON = "application/x-amz-json-1.1"
_TARGET_PREFIXES = {"SageMaker": "sagemaker", "AWSOrganizationsV20161128": "organizations"}


# --- botocore's model as the contract --------------------------------------------------------


class ModelViolation(Exception):
    pass


def _check(shape: Any, value: Any, path: str) -> None:
    """``value`` as AWS's JSON protocol would carry it for ``shape``; raises ModelViolation."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            raise ModelViolation(f"{path}: expected an object, got {type(value).__name__}")
        for name in shape.required_members:
            if name not in value:
                raise ModelViolation(f"{path}: required member {name} missing")
        for name, item in value.items():
            if name not in shape.members:
                raise ModelViolation(f"{path}: {name} is not a member of {shape.name}")
            _check(shape.members[name], item, f"{path}.{name}")
    elif kind == "list":
        if not isinstance(value, list):
            raise ModelViolation(f"{path}: expected a list")
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            raise ModelViolation(f"{path}: {len(value)} items, the model allows {low}..{high}")
        for i, item in enumerate(value):
            _check(shape.member, item, f"{path}[{i}]")
    elif kind == "map":
        if not isinstance(value, dict):
            raise ModelViolation(f"{path}: expected a map")
        for k, v in value.items():
            _check(shape.key, k, f"{path} key")
            _check(shape.value, v, f"{path}[{k}]")
    elif kind == "string":
        if not isinstance(value, str):
            raise ModelViolation(f"{path}: expected a string, got {value!r}")
        if shape.enum and value not in shape.enum:
            raise ModelViolation(f"{path}: {value!r} is not one of {shape.enum}")
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            raise ModelViolation(f"{path}: length {len(value)} outside {low}..{high}")
        pattern = shape.metadata.get("pattern")
        if pattern and not re.fullmatch(pattern, value):
            raise ModelViolation(f"{path}: {value!r} does not match {pattern}")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ModelViolation(f"{path}: expected an integer")
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ModelViolation(f"{path}: {value} outside {low}..{high}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise ModelViolation(f"{path}: expected a boolean")
    elif kind in ("timestamp", "double", "float"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ModelViolation(f"{path}: expected a number (epoch seconds for timestamps)")
    else:
        raise ModelViolation(f"{path}: the fake does not produce {kind} values")


_model_lock = threading.Lock()
_models: dict[str, Any] = {}


def service_model(service: str) -> Any:
    from botocore.loaders import create_loader
    from botocore.model import ServiceModel

    with _model_lock:
        if service not in _models:
            _models[service] = ServiceModel(create_loader().load_service_model(service, "service-2"), service)
        return _models[service]


def check_request(action: str, body: dict[str, Any]) -> None:
    _check(service_model("sagemaker").operation_model(action).input_shape, body, f"{action} request")


def check_response(action: str, body: dict[str, Any]) -> None:
    _check(service_model("sagemaker").operation_model(action).output_shape, body, f"{action} response")


# --- state -------------------------------------------------------------------------------------


@dataclass
class Resource:
    kind: str  # "tracking-server" or "app"
    account: str
    region: str
    name: str
    status: str
    version: str
    created: float
    size: str = "Small"

    @property
    def partition(self) -> str:
        if self.region.startswith("cn-"):
            return "aws-cn"
        return "aws-us-gov" if self.region.startswith("us-gov-") else "aws"

    @property
    def arn(self) -> str:
        base = f"arn:{self.partition}:sagemaker:{self.region}:{self.account}"
        if self.kind == "tracking-server":
            return f"{base}:mlflow-tracking-server/{self.name}"
        return f"{base}:mlflow-app/app-{hashlib.sha256(self.name.encode()).hexdigest()[:12].upper()}"


@dataclass
class Fault:
    action: str  # e.g. "SageMaker.ListMlflowTrackingServers", "STS.AssumeRole", "Organizations.ListAccounts"
    code: str
    message: str
    status: int = 400
    account: str | None = None  # the calling account; None = any
    region: str | None = None
    times: int | None = None  # None = always
    hits: int = 0


@dataclass
class FakeState:
    resources: list[Resource] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    strict_roles: bool = False
    page_size: int = 100
    latency: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)  # "<action> <account> <region>" -> count
    violations: list[str] = field(default_factory=list)


class FakeControl:
    """``POST /_fake/<command>`` handlers; each takes the JSON body and returns a JSON answer."""

    def __init__(self, state: FakeState, lock: threading.Lock) -> None:
        self.state = state
        self.lock = lock

    def handle(self, command: str, body: dict[str, Any]) -> Any:
        with self.lock:
            s = self.state
            if command == "reset":
                self.state.__init__()  # type: ignore[misc]
                return {"ok": True}
            if command in ("tracking-server", "app"):
                kind = "tracking-server" if command == "tracking-server" else "app"
                s.resources = [
                    r
                    for r in s.resources
                    if (r.kind, r.account, r.region, r.name) != (kind, body["account"], body["region"], body["name"])
                ]
                s.resources.append(
                    Resource(
                        kind=kind,
                        account=body["account"],
                        region=body["region"],
                        name=body["name"],
                        status=body.get("status", "Created"),
                        version=body.get("version", "3.0.0"),
                        created=time.time() + len(s.resources) * 0.001,
                    )
                )
                return {"arn": s.resources[-1].arn}
            if command == "delete":
                before = len(s.resources)
                gone = (body["kind"], body["account"], body["region"], body["name"])
                s.resources = [r for r in s.resources if (r.kind, r.account, r.region, r.name) != gone]
                return {"deleted": before - len(s.resources)}
            if command == "fault":
                s.faults.append(Fault(**body))
                return {"index": len(s.faults) - 1}
            if command == "clear-faults":
                s.faults.clear()
                return {"ok": True}
            if command == "strict-roles":
                s.strict_roles = bool(body["on"])
                return {"ok": True}
            if command == "page-size":
                s.page_size = int(body["n"])
                return {"ok": True}
            if command == "latency":
                s.latency = float(body["seconds"])
                return {"ok": True}
            if command == "stats":
                return {
                    "calls": dict(s.calls),
                    "faults": [f.hits for f in s.faults],
                    "violations": list(s.violations),
                }
        raise KeyError(command)


# --- the WSGI middleware --------------------------------------------------------------------------


def _credential(environ: dict[str, Any]) -> tuple[str, str, str]:
    """(access key id, region, service) from the SigV4 Authorization header."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scope = auth.partition("Credential=")[2].partition(",")[0].split("/")
    return (scope[0], scope[2], scope[3]) if len(scope) >= 4 else ("", "", "")


def _account_of(access_key: str) -> str:
    from moto.iam.models import get_account_id_from

    return str(get_account_id_from(access_key))


def _json_error(start_response: Callable[..., Any], status: int, code: str, message: str) -> list[bytes]:
    payload = json.dumps({"__type": code, "message": message}).encode()
    start_response(
        f"{status} Error",
        [("Content-Type", _JSON), ("x-amzn-RequestId", "aws-fake"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


def _query_error(start_response: Callable[..., Any], status: int, code: str, message: str) -> list[bytes]:
    payload = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>aws-fake</RequestId></ErrorResponse>"
    ).encode()
    start_response(f"{status} Error", [("Content-Type", "text/xml"), ("Content-Length", str(len(payload)))])
    return [payload]


class AwsFake:
    """WSGI middleware in front of moto's server app; see the module docstring."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.state = FakeState()
        self.control = FakeControl(self.state, self.lock)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(size) if size else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if path.startswith("/_fake/"):
            try:
                answer = self.control.handle(path[len("/_fake/") :], json.loads(body or b"{}"))
            except KeyError as exc:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [f"unknown fake command {exc}".encode()]
            payload = json.dumps(answer).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
            return [payload]
        if path.startswith("/moto-api"):
            if path.rstrip("/") == "/moto-api/reset":
                self.control.handle("reset", {})
            return self.app(environ, start_response)

        with self.lock:
            latency = self.state.latency
        if latency > 0:
            time.sleep(latency)  # in the request's own thread: waiting, not CPU
        access_key, region, service = _credential(environ)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            prefix, _, action = target.partition(".")
            label = {"SageMaker": "SageMaker", "AWSOrganizationsV20161128": "Organizations"}.get(prefix, prefix)
        else:
            form = parse_qs(body.decode("utf-8", "replace"))
            action = (form.get("Action") or [""])[0]
            label = service.upper() if service else "?"
        name = f"{label}.{action}"
        account = _account_of(access_key) if access_key else ""
        with self.lock:
            key = f"{name} {account} {region}"
            self.state.calls[key] = self.state.calls.get(key, 0) + 1
            fault = self._fault(name, account, region)
        if fault is not None:
            if target:
                return _json_error(start_response, fault.status, fault.code, fault.message)
            return _query_error(start_response, fault.status, fault.code, fault.message)
        if label == "SageMaker" and action in MLFLOW_ACTIONS:
            return self._mlflow(action, account, region, body, start_response)
        if name == "STS.AssumeRole":
            refusal = self._refuse_assume(account, parse_qs(body.decode("utf-8", "replace")))
            if refusal is not None:
                return _query_error(start_response, 403, "AccessDenied", refusal)
        return self.app(environ, start_response)

    def _fault(self, name: str, account: str, region: str) -> Fault | None:
        for fault in self.state.faults:
            if fault.action != name or (fault.account and fault.account != account):
                continue
            if fault.region and fault.region != region:
                continue
            if fault.times is not None and fault.hits >= fault.times:
                continue
            fault.hits += 1
            return fault
        return None

    # -- STS

    def _refuse_assume(self, caller: str, form: dict[str, list[str]]) -> str | None:
        with self.lock:
            if not self.state.strict_roles:
                return None
        from moto.iam.models import iam_backends

        arn = (form.get("RoleArn") or [""])[0]
        external_ids = form.get("ExternalId")
        external_id = external_ids[0] if external_ids else None
        parts = arn.split(":")
        denied = (
            f"User: arn:aws:iam::{caller}:user/caller is not authorized to perform: sts:AssumeRole on resource: {arn}"
        )
        if len(parts) < 6:
            return denied
        target, role_name = parts[4], parts[5].rpartition("/")[2]
        try:
            roles = iam_backends[target][parts[1]].roles.values()
        except KeyError:
            return denied
        role = next((r for r in roles if r.name == role_name), None)
        if role is None:
            return denied
        policy = json.loads(role.assume_role_policy_document or "{}")
        for statement in policy.get("Statement", []):
            expected = statement.get("Condition", {}).get("StringEquals", {}).get("sts:ExternalId")
            if expected is not None and expected != external_id:
                return denied
        return None

    # -- SageMaker managed MLflow

    def _mlflow(
        self, action: str, account: str, region: str, raw: bytes, start_response: Callable[..., Any]
    ) -> list[bytes]:
        try:
            request = json.loads(raw or b"{}")
            check_request(action, request)
        except (ValueError, ModelViolation) as exc:
            return _json_error(start_response, 400, "ValidationException", str(exc))
        with self.lock:
            mine = [r for r in self.state.resources if r.account == account and r.region == region]
            page_size = self.state.page_size
        try:
            if action == "ListMlflowTrackingServers":
                body = self._page(
                    [r for r in mine if r.kind == "tracking-server"],
                    request,
                    page_size,
                    "TrackingServerSummaries",
                    lambda r: {
                        "TrackingServerArn": r.arn,
                        "TrackingServerName": r.name,
                        "CreationTime": r.created,
                        "LastModifiedTime": r.created,
                        "TrackingServerStatus": r.status,
                        "IsActive": "Active" if r.status in ("Created", "Started", "Updated") else "Inactive",
                        "MlflowVersion": r.version,
                    },
                )
            elif action == "ListMlflowApps":
                body = self._page(
                    [r for r in mine if r.kind == "app"],
                    request,
                    page_size,
                    "Summaries",
                    lambda r: {
                        "Arn": r.arn,
                        "Name": r.name,
                        "Status": r.status,
                        "CreationTime": r.created,
                        "LastModifiedTime": r.created,
                        "MlflowVersion": r.version,
                    },
                )
            elif action == "DescribeMlflowTrackingServer":
                found = [r for r in mine if r.kind == "tracking-server" and r.name == request["TrackingServerName"]]
                if not found:
                    missing = f"Tracking server {request['TrackingServerName']} not found"
                    return _json_error(start_response, 400, "ResourceNotFound", missing)
                r = found[0]
                body = {
                    "TrackingServerArn": r.arn,
                    "TrackingServerName": r.name,
                    "ArtifactStoreUri": f"s3://mlflow-{account}-{region}/{r.name}",
                    "TrackingServerSize": r.size,
                    "MlflowVersion": r.version,
                    "RoleArn": f"arn:{r.partition}:iam::{account}:role/mlflow-server",
                    "TrackingServerStatus": r.status,
                    "IsActive": "Active" if r.status in ("Created", "Started", "Updated") else "Inactive",
                    "TrackingServerUrl": f"https://t-{hashlib.sha256(r.arn.encode()).hexdigest()[:12]}.{region}"
                    ".experiments.sagemaker.aws",
                    "CreationTime": r.created,
                    "LastModifiedTime": r.created,
                }
            else:
                return _json_error(start_response, 400, "ValidationException", f"{action} is not served by the fake")
            check_response(action, body)
        except ModelViolation as exc:
            with self.lock:
                self.state.violations.append(str(exc))
            violation = f"fake response violates botocore's model: {exc}"
            return _json_error(start_response, 500, "InternalFailure", violation)
        payload = json.dumps(body).encode()
        start_response(
            "200 OK", [("Content-Type", _JSON), ("x-amzn-RequestId", "aws-fake"), ("Content-Length", str(len(payload)))]
        )
        return [payload]

    @staticmethod
    def _page(
        items: list[Resource],
        request: dict[str, Any],
        page_size: int,
        key: str,
        render: Callable[[Resource], dict[str, Any]],
    ) -> dict[str, Any]:
        # AWS's default order: newest first.
        items = sorted(items, key=lambda r: r.created, reverse=True)
        start = int(base64.b64decode(request["NextToken"]).decode()) if request.get("NextToken") else 0
        size = min(int(request.get("MaxResults") or page_size), page_size)
        page = items[start : start + size]
        body: dict[str, Any] = {key: [render(r) for r in page]}
        if start + size < len(items):
            body["NextToken"] = base64.b64encode(str(start + size).encode()).decode()
        return body


# --- client side and process ---------------------------------------------------------------------


def control(url: str, command: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    """``POST /_fake/<command>`` on a running fake; returns its JSON answer."""
    request = urllib.request.Request(
        f"{url}/_fake/{command}",
        data=json.dumps(body or {}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def app_with_fake() -> AwsFake:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return AwsFake(DomainDispatcherApplication(create_backend_app))


def main(argv: list[str] | None = None) -> int:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    run_simple(args.host, args.port, app_with_fake(), threaded=True, request_handler=MotoRequestHandler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
