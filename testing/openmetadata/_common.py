"""What every part of the stand-in shares: paths and messages, the value types, the state
the parts read (:class:`StandInBase`) and the helpers every route uses.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testing.openmetadata.faults import FaultRule
    from testing.openmetadata.pipelines import PipelineRoutes


API_PREFIX = "/api"
SERVICES_PATH = "/api/v1/services/mlmodelServices"
VERSION_PATH = "/api/v1/system/version"
PIPELINES_PATH = "/api/v1/services/ingestionPipelines"  # routes in pipelines.py
SECRET_MASK = "*********"
NAME_PATTERN_MESSAGE = '[name must match "^((?!::).)*$"]'
INVALID_FORMAT = "Invalid request format"
# What upstream answers to ``PUT .../bulk``: Jersey's 405 wrapped by the catch-all exception mapper.
NO_ROUTE_MESSAGE = "An exception with message [HTTP 405 Method Not Allowed] was thrown while processing request."
MAX_LIMIT = 1_000_000
DEFAULT_LIMIT = 10
# Keys only shown when named in ``fields``; the set upstream's MlModelServiceResource accepts.
OPTIONAL_FIELDS = ("owners", "tags", "domains", "followers", "pipelines", "dataProducts", "ingestionRunner")
# Paths of the ``format: password`` fields inside ``connection.config``.
SECRET_PATHS: tuple[tuple[str, ...], ...] = (
    ("awsConfig", "awsSecretAccessKey"),
    ("credentials", "gcpConfig", "privateKey"),
)
_DOMAIN_NAMESPACE = uuid.UUID("6f1c7a52-3f0e-4c8e-9d8e-0b5d3c2a1e77")
Entity = dict[str, Any]


@dataclass(frozen=True)
class Principal:
    """Who a bearer token stands for. ``allowed=False`` makes every write answer 403;
    ``may_tag=False`` only the creation of classifications and tags."""

    name: str
    is_bot: bool = True
    allowed: bool = True
    may_tag: bool = True


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in saw it.

    ``headers`` has lower-case names, with the bearer token replaced by ``Bearer ***`` so that a
    failing assertion never prints it; ``principal`` names whom the token stood for. ``body`` is
    the parsed JSON (None when empty or not JSON) and ``raw`` the bytes, for secret-leak checks.
    ``status`` is 0 when the connection was reset instead of answered; ``at`` is the arrival time
    (``time.time()``), before any latency or delay.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw: bytes
    status: int
    principal: str | None
    at: float


def fqn_of(name: str) -> str:
    """The fully qualified name of a service: quoted when it holds a dot and no double quote."""
    return f'"{name}"' if "." in name and '"' not in name else name


class _ApiError(Exception):
    """An error answer: becomes ``{"code": status, "message": message}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class _InternalError(Exception):
    """The stand-in itself misbehaved (e.g. produced a body the schema rejects)."""


@dataclass
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    empty: bool = False
    reset: bool = False
    trickle: float | None = None


@dataclass
class _Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    body_ok: bool
    principal: Principal | None
    rule: FaultRule | None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _bump(version: float) -> float:
    return round(version + 0.1, 1)


def _encode_cursor(name: str) -> str:
    # Standard base64 on purpose, as upstream: '+', '/' and '=' test that clients encode params.
    return base64.b64encode(name.encode("utf-8")).decode("ascii")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise _ApiError(400, "Invalid cursor") from exc


def page_of(
    matching: list[Entity], key: str, query: Mapping[str, str], limit: int
) -> tuple[list[Entity], dict[str, Any]]:
    """One page of ``matching`` (sorted by ``key``) as upstream's cursor paging cuts it, and its
    ``paging`` object: ``after`` and ``before`` are opaque cursors over ``key``."""
    total = len(matching)
    start, stop = 0, limit
    if "after" in query:
        after = _decode_cursor(query["after"])
        start = next((i for i, e in enumerate(matching) if e[key] > after), total)
        stop = start + limit
    elif "before" in query:
        before = _decode_cursor(query["before"])
        stop = next((i for i, e in enumerate(matching) if e[key] >= before), total)
        start = max(0, stop - limit)
    page = matching[start:stop]
    paging: dict[str, Any] = {"total": total}
    if page and start > 0:
        paging["before"] = _encode_cursor(page[0][key])
    if page and start + len(page) < total:
        paging["after"] = _encode_cursor(page[-1][key])
    return page, paging


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {"code": status, "message": message}


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _get_path(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _set_path(obj: Any, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(obj, dict):
            return
        obj = obj.get(key)
    if isinstance(obj, dict) and path[-1] in obj:
        obj[path[-1]] = value


def _reference(kind: str, fqn: str) -> dict[str, Any]:
    ref_id = str(uuid.uuid5(_DOMAIN_NAMESPACE, f"{kind}:{fqn}"))
    return {"id": ref_id, "type": kind, "name": fqn, "fullyQualifiedName": fqn}


def _owner(ref: Mapping[str, Any]) -> dict[str, Any]:
    owner_id = str(ref["id"])
    return {"id": owner_id, "type": ref["type"], "name": ref.get("name") or f"{ref['type']}-{owner_id[:8]}"}


class StandInBase:
    """The state the parts of :class:`~testing.openmetadata.server.OpenMetadataStandIn` share
    (set in its ``__init__``), and the request helpers every route uses."""

    bulk_enabled: bool
    unknown_fields: frozenset[str]
    no_bulk_status: int
    classifications: dict[str, Entity]
    tags: dict[str, Entity]
    domains: set[str]
    users: set[str]
    teams: set[str]
    tokens: dict[str, Principal]
    latency: float
    validate_responses: bool
    max_bulk_items: int | None
    strict_type_check: bool
    server_version: str
    version_requires_auth: bool
    requests: list[RecordedRequest]
    internal_errors: list[str]
    random: random.Random
    pipelines: PipelineRoutes
    _faults: list[FaultRule]
    _lock: threading.RLock
    _store: dict[str, Entity]
    _ids: dict[str, str]
    _model_counts: dict[str, int]
    _async_jobs: list[threading.Thread]
    _stopping: threading.Event
    _validated: set[str]
    _validated_lock: threading.Lock
    _server: ThreadingHTTPServer | None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("stand-in not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/api``)."""
        if self._server is None:
            raise RuntimeError("stand-in not started")
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}"

    def _authorize(self, principal: Principal, operation: str) -> None:
        if not principal.allowed:
            raise _ApiError(
                403, f"Principal: CatalogPrincipal{{name='{principal.name}'}} operations [{operation}] not allowed"
            )

    def _require_principal(self, call: _Call) -> Principal:
        if call.principal is None:
            raise _ApiError(401, "Not Authorized! Token verification failed", {"WWW-Authenticate": "om-auth"})
        return call.principal

    @staticmethod
    def _include(query: Mapping[str, str]) -> str:
        include = query.get("include", "non-deleted")
        if include not in ("non-deleted", "deleted", "all"):
            raise _ApiError(400, f"Invalid include value {include}")
        return include

    @property
    def _legacy(self) -> bool:
        """A server before 1.8: one ``domain``, no ``domains``."""
        numbers = re.findall(r"\d+", self.server_version)
        return len(numbers) >= 2 and (int(numbers[0]), int(numbers[1])) < (1, 8)

    def _fields(self, query: Mapping[str, str]) -> frozenset[str]:
        names = frozenset(f.strip() for f in query.get("fields", "").split(",") if f.strip())
        for name in sorted(names):
            if name not in OPTIONAL_FIELDS or name in self.unknown_fields or (name == "domains" and self._legacy):
                raise _ApiError(400, f"Invalid field name {name}")
        return names

    def _body(self, call: _Call) -> Any:
        if not call.body_ok:
            raise _ApiError(400, "Unable to process JSON")
        return call.body

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)
