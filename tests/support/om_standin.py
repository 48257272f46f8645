"""A faithful fake of the OpenMetadata 2.0.7 ML model service API, served over real HTTP on loopback.

No OpenMetadata server can run on these machines, so the client is tested against this stand-in
instead. It follows the API contract read from the upstream server's source (summarised in the
README's "Connecting to OpenMetadata") and validates every request and every response body
against the OpenMetadata 2.0.7 JSON Schemas vendored in ``tests/support/schemas``, so a client
that passes here sends what the real server accepts and copes with what it answers. What it
cannot know (the *(inferred)* points of the README) is chosen as the README infers.

By default it behaves as a real server does: no bulk route (``PUT /bulk`` answers 500 "An
exception with message [HTTP 405 Method Not Allowed] ..."; ``no_bulk_status`` 405 or 404 as
options, ``bulk_enabled=True`` for the seed's bulk route), tags, domains and owners a request
names must exist (404 "tag instance for X not found"), optional fields listed only when named in
``fields`` (400 on unknown names), a non-empty service's delete refused, and the bot update rules
below. ``server_version`` below 1.8 makes it an old server: ``fields=domains`` and a body with
``domains`` are 400.

Routes (under ``/api``): ``GET /v1/system/version`` (no token needed, as upstream's JwtFilter
excludes it); ``GET|PUT|POST /v1/classifications``, ``GET /v1/classifications/name/{name}``,
``PUT|POST /v1/tags``, ``GET /v1/tags/name/{fqn}``, ``GET /v1/domains/name/{fqn}``,
``GET /v1/users/{id}``, ``GET /v1/teams/{id}``; and under ``/v1/services/mlmodelServices``:
``PUT`` and ``POST`` (create a service), ``PUT /bulk`` (option), ``GET`` (list),
``GET /name/{fqn}``, ``GET /{id}``, ``DELETE /{id}``, ``DELETE /name/{fqn}`` and
``PUT /restore``. Anything else is 404; a known path with a method it lacks is 405.

PUT semantics (create-or-update by name), as upstream's ``EntityRepository`` applies them:

* A field that is absent or ``null`` in the body keeps its stored value, except
  ``ingestionRunner``, which is cleared.
* ``owners`` are replaced by a non-empty sent list; an empty or absent list keeps them.
* ``tags`` are merged: the stored ones stay, the sent ones are added.
* A PUT by a bot principal does not overwrite a non-empty stored ``description``,
  ``displayName``, ``domains`` or ``dataProducts``; a bulk PUT with ``overrideMetadata=true`` does.
* ``connection``, when sent, replaces the stored connection, except that a secret field
  (``awsConfig.awsSecretAccessKey``, Vertex ``privateKey``) sent as the nine-asterisk mask keeps
  the stored secret: that is how the UI round-trips a connection it was shown masked.
* A PUT on a soft-deleted name restores it (``deleted`` false) and counts as a change.
* Any change bumps ``version`` by 0.1 and sets ``updatedAt``/``updatedBy``; a PUT that changes
  nothing keeps both and answers ``X-OpenMetadata-Change: entityNoChange``.
* No ``changeDescription`` is produced: clients must not depend on it, and it would need the
  secret masking rules applied to old and new values as well.

Stored ``domains`` and ``dataProducts`` are entity references (the request carries FQN strings),
with a stable uuid per FQN. Stored owners get a ``name`` (``<type>-<first 8 of id>`` unless one
was sent). Secret fields are shown in plain text to bots and as ``*********`` to other principals.

Tests drive it directly: ``tokens`` maps bearer tokens to :class:`Principal` (revocable at run
time), ``requests`` records every request, :meth:`OpenMetadataStandIn.inject` adds a
:class:`FaultRule` (status, ``Retry-After``, delay, connection reset, a reset half way through a
bulk, per-item bulk failures), ``latency`` slows every answer, and ``put_entity`` / ``edit``
seed and change the store as a person in the UI would. Any exception inside the server,
including a response that fails schema validation, answers 500 and is kept in
``internal_errors`` so the fixture teardown can fail the test.

Run it by hand for demos::

    python -m tests.support.om_standin --port 8585 --token TOKEN [--bulk]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copy
import json
import os
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import best_match

__all__ = [
    "API_PREFIX",
    "SCHEMA_DIR",
    "SECRET_MASK",
    "SERVICES_PATH",
    "FaultRule",
    "OpenMetadataStandIn",
    "Principal",
    "RecordedRequest",
    "fqn_of",
    "main",
    "schema_validator",
]

# Vendored copies of the OpenMetadata 2.0.7 schemas (see schemas/README.md for their origin).
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

API_PREFIX = "/api"
SERVICES_PATH = "/api/v1/services/mlmodelServices"
VERSION_PATH = "/api/v1/system/version"
PIPELINES_PATH = "/api/v1/services/ingestionPipelines"  # routes in om_pipelines.py
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


# --------------------------------------------------------------------------------------------
# Schemas


def _multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """``multipleOf`` in decimal arithmetic.

    The entity schema says ``version`` is a multiple of 0.1; in binary floats 0.3 / 0.1 is
    2.9999999999999996, so jsonschema's own check rejects versions 0.3, 0.6, 0.7... that the
    real server sends every day. Comparing the decimal spellings matches what the schema means.
    """
    if not validator.is_type(instance, "number") or isinstance(instance, bool):
        return
    if Decimal(repr(instance)) % Decimal(repr(divisor)) != 0:
        yield ValidationError(f"{instance!r} is not a multiple of {divisor}")


_Validator = validators.extend(Draft202012Validator, validators={"multipleOf": _multiple_of})


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its local ``$ref``s replaced by their targets (recursive ones kept).

    Resolving a ``$ref`` through ``referencing`` costs more than checking what it points to;
    inlined, an entity validates in about half the time, which the benchmark notices.
    """
    defs: dict[str, Any] = schema.get("$defs", {})

    def walk(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [walk(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] not in seen:
            target = walk(defs[ref[8:]], seen | {ref[8:]})
            siblings = {k: walk(v, seen) for k, v in node.items() if k != "$ref"}
            return {"allOf": [target], **siblings} if siblings else target
        return {k: v if k == "$defs" else walk(v, seen) for k, v in node.items()}

    inlined: dict[str, Any] = walk(schema, frozenset())
    return inlined


@cache
def schema_validator(name: str) -> Any:
    """The cached validator of ``tests/support/schemas/<name>`` (``.schema.json`` optional).

    A Draft 2020-12 validator with format checks (uuid, date-time) whose ``multipleOf`` compares
    decimals, so that entity versions such as 0.3 validate as they should (see ``_multiple_of``).
    Thread-safe: the server's handler threads share it.
    """
    file_name = name if name.endswith(".json") else f"{name}.schema.json"
    schema = json.loads((SCHEMA_DIR / file_name).read_text(encoding="utf-8"))
    _Validator.check_schema(schema)
    return _Validator(_inline_refs(schema), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _create_validator() -> Any:
    return schema_validator("CreateMlModelServiceRequest")


def _entity_validator() -> Any:
    return schema_validator("MlModelService")


def _bulk_validator() -> Any:
    return schema_validator("BulkOperationResult")


# --------------------------------------------------------------------------------------------
# Public value types


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


@dataclass
class FaultRule:
    """A fault injected into matching requests.

    Matching: ``method`` ("PUT", or alternatives "PUT|POST"; None = any), ``path`` (regex searched
    in the URL path), ``name`` (only requests whose JSON body is an object with that ``name``).
    ``times`` limits how many requests the rule affects (None = no limit); ``rate`` affects each
    matching request with that probability, drawn from the stand-in's seeded RNG.

    Actions, in order: wait ``delay`` seconds; then answer ``status`` (with ``message`` or the
    standard phrase, and ``Retry-After: retry_after`` when set), or reset the connection
    (``reset``), or handle the request normally. With ``reset_after_items=k`` the request is
    applied first (a bulk: only its first k items) and then the connection is reset, so the
    client never learns what was written. ``bulk_item_failures`` makes the named items of a bulk
    request fail with (status, message) while the others are applied.
    """

    method: str | None = None
    path: str = ".*"
    name: str | None = None
    times: int | None = None
    rate: float | None = None
    status: int | None = None
    message: str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    reset: bool = False
    reset_after_items: int | None = None
    bulk_item_failures: dict[str, tuple[int, str]] = field(default_factory=dict)
    # A hostile server: ``respond(query, body)`` returns (status, JSON body) sent as it is, unchecked.
    respond: Callable[[dict[str, str], Any], tuple[int, Any]] | None = None
    # Send the answer this many bytes per second (a trickling server); None = at once.
    trickle: float | None = None
    hits: int = 0

    def __post_init__(self) -> None:
        if self.rate is not None and not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {self.rate}")
        if self.times is not None and self.times < 0:
            raise ValueError(f"times must be >= 0, got {self.times}")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status, got {self.status}")
        if self.reset_after_items is not None and self.reset_after_items < 0:
            raise ValueError("reset_after_items must be >= 0")
        self._path_re = re.compile(self.path)
        self._methods = None if self.method is None else frozenset(self.method.upper().split("|"))

    def matches(self, method: str, path: str, body: Any) -> bool:
        if self._methods is not None and method not in self._methods:
            return False
        if not self._path_re.search(path):
            return False
        return self.name is None or (isinstance(body, dict) and body.get("name") == self.name)


def fqn_of(name: str) -> str:
    """The fully qualified name of a service: quoted when it holds a dot and no double quote."""
    return f'"{name}"' if "." in name and '"' not in name else name


# --------------------------------------------------------------------------------------------
# Internals


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


def _request_error_message(error: ValidationError) -> str:
    """The message upstream gives for a schema violation.

    Jackson rejects unknown keys, bad enums and wrong types while parsing ("Invalid request
    format"); bean validation reports missing and over-long fields as ``[field ...]``.
    """
    if not error.path:
        if error.validator == "required":
            missing = [key for key in error.validator_value if key not in error.instance]
            return f"[{missing[0] if missing else 'field'} must not be null]"
    elif len(error.path) == 1 and error.validator in ("minLength", "maxLength"):
        return f"[{error.path[0]} size must be between 1 and 256]"
    return INVALID_FORMAT


def _schema_problem(kind: str, error: ValidationError) -> str:
    # Never the instance itself: it may hold a secret and this text ends up in test output.
    where = "/".join(str(p) for p in error.absolute_path) or "<root>"
    rule = "/".join(str(p) for p in error.absolute_schema_path)
    return f"{kind} failed schema validation at {where}: {error.validator} ({rule})"


# --------------------------------------------------------------------------------------------
# The stand-in


class OpenMetadataStandIn:
    """The fake OpenMetadata server. ``start()`` it (or use it as a context manager)."""

    def __init__(
        self,
        *,
        bulk_enabled: bool = False,
        no_bulk_status: int = 500,
        tokens: Mapping[str, Principal] | None = None,
        latency: float = 0.0,
        validate_responses: bool = True,
        max_bulk_items: int | None = None,
        unknown_fields: tuple[str, ...] = (),
        strict_type_check: bool = True,
        server_version: str = "2.0.7",
        version_requires_auth: bool = False,
        seed: int = 0,
    ) -> None:
        if no_bulk_status not in (404, 405, 500):
            raise ValueError("no_bulk_status must be 404, 405 or 500")
        self.bulk_enabled = bulk_enabled
        # Field names this server does not know (400 "Invalid field name X"), as an older release.
        self.unknown_fields = frozenset(unknown_fields)
        self.no_bulk_status = no_bulk_status
        # Classifications (name -> entity), tags (FQN -> entity), domains, users and teams that exist.
        self.classifications: dict[str, Entity] = {}
        self.tags: dict[str, Entity] = {}
        self.domains: set[str] = set()
        self.users: set[str] = set()
        self.teams: set[str] = set()
        self.tokens: dict[str, Principal] = dict(tokens or {})
        self.latency = latency
        self.validate_responses = validate_responses
        self.max_bulk_items = max_bulk_items
        self.strict_type_check = strict_type_check
        self.server_version = server_version
        self.version_requires_auth = version_requires_auth
        self.requests: list[RecordedRequest] = []
        self.internal_errors: list[str] = []
        self.random = random.Random(seed)
        self._faults: list[FaultRule] = []
        self._lock = threading.RLock()
        self._store: dict[str, Entity] = {}
        self._ids: dict[str, str] = {}
        self._model_counts: dict[str, int] = {}
        self._async_jobs: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Bodies that already passed response validation: the benchmark re-reads the same
        # entities many times and validation is the costliest part of an answer.
        self._validated: set[str] = set()
        self._validated_lock = threading.Lock()
        # Ingestion pipeline routes live in their own module (hooks: _dispatch and _delete).
        from tests.support.om_pipelines import PipelineRoutes

        self.pipelines = PipelineRoutes(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> OpenMetadataStandIn:
        if self._server is not None:
            raise RuntimeError("stand-in already started")
        # Load the schemas now so the first request is not the one paying for it.
        _create_validator()
        _entity_validator()
        _bulk_validator()
        self._stopping.clear()
        self._server = _Server((host, port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="om-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping on latency or delay faults
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.wait_async(timeout=5)

    def __enter__(self) -> OpenMetadataStandIn:
        return self.start() if self._server is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

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

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/api``: what the client is configured with."""
        return f"{self.url}{API_PREFIX}"

    # -- tokens --------------------------------------------------------------------------------

    def add_token(self, token: str, principal: Principal) -> None:
        self.tokens[token] = principal

    def revoke(self, token: str) -> None:
        """Forget a token: its next request answers 401, as an expired JWT would."""
        self.tokens.pop(token, None)

    # -- faults ----------------------------------------------------------------------------------

    def inject(self, rule: FaultRule) -> FaultRule:
        """Add a fault; rules are tried in the order they were added, the first match wins."""
        with self._lock:
            self._faults.append(rule)
        return rule

    def fail_items(self, failures: Mapping[str, tuple[int, str]], *, times: int | None = None) -> None:
        """Make the named services fail the same way whether written by bulk or one by one."""
        self.inject(FaultRule(method="PUT", path=r"/mlmodelServices/bulk$", bulk_item_failures=dict(failures)))
        for name, (status, message) in failures.items():
            self.inject(
                FaultRule(
                    method="PUT|POST", path=r"/mlmodelServices$", name=name, status=status, message=message, times=times
                )
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _pick_fault(self, method: str, path: str, body: Any) -> FaultRule | None:
        with self._lock:
            for rule in self._faults:
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                if not rule.matches(method, path, body):
                    continue
                if rule.rate is not None and self.random.random() >= rule.rate:
                    continue
                rule.hits += 1
                return rule
        return None

    # -- request log -----------------------------------------------------------------------------

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def count(self, method: str | None = None, path: str | None = None, status: int | None = None) -> int:
        """How many recorded requests match (``path`` is a regex searched in the URL path)."""
        return len(self.find(method=method, path=path, status=status))

    def find(
        self, method: str | None = None, path: str | None = None, status: int | None = None
    ) -> list[RecordedRequest]:
        with self._lock:
            recorded = list(self.requests)
        pattern = re.compile(path) if path is not None else None
        return [
            r
            for r in recorded
            if (method is None or r.method == method.upper())
            and (pattern is None or pattern.search(r.path))
            and (status is None or r.status == status)
        ]

    def writes(self) -> list[RecordedRequest]:
        """Every PUT, POST and DELETE sent to the ML model service routes, whatever its answer."""
        return [
            r
            for r in self.find()
            if r.method in ("PUT", "POST", "DELETE")
            and (r.path == SERVICES_PATH or r.path.startswith(SERVICES_PATH + "/"))
        ]

    def bodies_containing(self, text: str) -> list[RecordedRequest]:
        """Recorded requests whose raw body contains ``text`` (e.g. a secret that must not leak)."""
        needle = text.encode("utf-8")
        return [r for r in self.find() if needle in r.raw]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # -- direct store access -----------------------------------------------------------------------

    @property
    def services(self) -> dict[str, Entity]:
        """A deep copy of the store: name -> entity as stored (secrets in plain text, deleted too)."""
        with self._lock:
            return copy.deepcopy(self._store)

    def get_service(self, name: str) -> Entity | None:
        with self._lock:
            entity = self._store.get(name)
            return copy.deepcopy(entity) if entity is not None else None

    def set_model_count(self, name: str, count: int) -> None:
        """Pretend the service holds ``count`` ML models, so deleting it needs ``recursive=true``."""
        with self._lock:
            if name not in self._store:
                raise KeyError(name)
            self._model_counts[name] = count

    def add_tag(self, fqn: str) -> None:
        """Create the tag ``<classification>.<name>`` (and its classification) as a person would."""
        classification, _, name = fqn.partition(".")
        with self._lock:
            self._put_classification({"name": classification, "description": "seeded"})
            self._put_tag({"classification": classification, "name": name or classification, "description": "seeded"})

    def remove_tag(self, fqn: str) -> None:
        """Delete a tag as a person would; the services keep naming it, writes naming it get 404."""
        with self._lock:
            self.tags.pop(fqn, None)

    def add_domain(self, fqn: str) -> None:
        with self._lock:
            self.domains.add(fqn)

    def add_owner(self, kind: str, owner_id: str) -> None:
        """Make the user (``kind="user"``) or team with this id exist."""
        with self._lock:
            (self.teams if kind == "team" else self.users).add(str(owner_id))

    def _register_references(self, body: Mapping[str, Any]) -> None:
        """Seeding as a person: what the body names is made to exist first. Lock held."""
        for tag in body.get("tags") or []:
            if isinstance(tag, dict) and isinstance(tag.get("tagFQN"), str) and tag["tagFQN"] not in self.tags:
                self.add_tag(tag["tagFQN"])
        for domain in body.get("domains") or []:
            if isinstance(domain, str):
                self.domains.add(domain)
        for owner in body.get("owners") or []:
            if isinstance(owner, dict) and "id" in owner:
                self.add_owner(str(owner.get("type")), str(owner["id"]))

    def _check_references(self, body: Mapping[str, Any]) -> None:
        """The 404 a real server gives when a request names a tag, domain or owner that does not exist."""
        for tag in body.get("tags") or []:
            if tag.get("source", "Classification") == "Classification" and tag["tagFQN"] not in self.tags:
                raise _ApiError(404, f"tag instance for {tag['tagFQN']} not found")
        for domain in body.get("domains") or []:
            if domain not in self.domains:
                raise _ApiError(404, f"domain instance for {domain} not found")
        for owner in body.get("owners") or []:
            known = self.teams if owner["type"] == "team" else self.users
            if str(owner["id"]) not in known:
                raise _ApiError(404, f"{owner['type']} instance for {owner['id']} not found")

    def put_entity(self, request: Mapping[str, Any], principal: Principal | None = None) -> Entity:
        """Create or update a service as ``principal`` would by PUT (default: a person, "admin").

        Raises ValueError when the server would answer 400.
        """
        who = principal or Principal("admin", is_bot=False)
        body = copy.deepcopy(dict(request))
        try:
            self._validate_create(body)
            with self._lock:
                self._register_references(body)
                _, _, entity = self._apply_put(body, who, override=False)
                result = copy.deepcopy(entity)
        except _ApiError as exc:
            raise ValueError(f"{exc.status}: {exc.message}") from exc
        self._check_entity(self._render(result, fields=None, reveal=True))
        return result

    def edit(self, name: str, *, by: str = "admin", **fields: Any) -> Entity:
        """Change stored fields as a person in the UI would: version +0.1, ``updatedBy=by``.

        ``domains``/``dataProducts`` may be given as FQN strings; a field set to None is removed.
        Raises KeyError for an unknown service and ValueError if the result breaks the schema.
        """
        with self._lock:
            stored = self._store[name]
            entity = copy.deepcopy(stored)
            for key, given in fields.items():
                if key in ("id", "name", "fullyQualifiedName"):
                    raise ValueError(f"{key} cannot be edited")
                if given is None:
                    entity.pop(key, None)
                    continue
                value = copy.deepcopy(given)
                if key == "domains":
                    self.domains.update(v for v in value if isinstance(v, str))
                if key in ("domains", "dataProducts"):
                    kind = "domain" if key == "domains" else "dataProduct"
                    value = [_reference(kind, v) if isinstance(v, str) else v for v in value]
                elif key == "owners":
                    value = [_owner(v) for v in value]
                entity[key] = value
            if entity == stored:
                return copy.deepcopy(stored)
            self._touch(entity, stored, by)
            errors = _entity_validator().iter_errors(entity)
            first = best_match(errors)
            if first is not None:
                raise ValueError(_schema_problem("edited entity", first))
            self._store[name] = entity
            return copy.deepcopy(entity)

    # -- the API, with the store lock taken by the callers below ---------------------------------

    def _validate_create(self, body: Any) -> None:
        """Raise the 400 the server gives for ``body``, if any (schema, then the extra rules)."""
        if not isinstance(body, dict):
            raise _ApiError(400, INVALID_FORMAT)
        validator = _create_validator()
        if not validator.is_valid(body):
            errors = list(validator.iter_errors(body))
            # Parse-level problems (unknown key, bad enum) come first, as Jackson raises them
            # before bean validation looks at lengths and required fields.
            parse_level = [e for e in errors if _request_error_message(e) == INVALID_FORMAT]
            raise _ApiError(400, _request_error_message(best_match(parse_level or errors)))
        if "domains" in body and self._legacy:
            raise _ApiError(400, INVALID_FORMAT)
        if "::" in body["name"]:
            raise _ApiError(400, NAME_PATTERN_MESSAGE)
        for owner in body.get("owners") or []:
            if owner["type"] not in ("user", "team"):
                raise _ApiError(400, f"Entity type {owner['type']} is not a valid owner type")
        config = (body.get("connection") or {}).get("config")
        # Upstream does not check this (README); strict by default so client bugs surface here.
        config_type = config.get("type") if isinstance(config, dict) else None
        if self.strict_type_check and config_type is not None and config_type != body["serviceType"]:
            raise _ApiError(
                400, f"serviceType {body['serviceType']} does not match connection.config.type {config_type}"
            )

    def _touch(self, entity: Entity, previous: Entity | None, by: str) -> None:
        entity["version"] = _bump(previous["version"]) if previous is not None else 0.1
        now = _now_ms()
        # Strictly later than the previous version even within one millisecond.
        if previous is not None and now <= previous.get("updatedAt", 0):
            now = previous["updatedAt"] + 1
        entity["updatedAt"] = now
        entity["updatedBy"] = by

    def _apply_put(self, body: dict[str, Any], principal: Principal, *, override: bool) -> tuple[int, str, Entity]:
        """Create or update by name; returns (status, change type, stored entity). Lock held."""
        name = body["name"]
        stored = self._store.get(name)
        self._check_references(body)
        if stored is None:
            self._authorize(principal, "Create")
            entity_id = str(uuid.uuid4())
            entity: Entity = {
                "id": entity_id,
                "name": name,
                "fullyQualifiedName": fqn_of(name),
                "serviceType": body["serviceType"],
                "owners": [],
                "tags": [],
                "domains": [],
                "href": f"{self._href_base()}/{entity_id}",
                "deleted": False,
            }
            self._merge(entity, body, principal, override=override, creating=True)
            self._touch(entity, None, principal.name)
            self._store[name] = entity
            self._ids[entity_id] = name
            return 201, "entityCreated", entity
        self._authorize(principal, "EditAll")
        entity = copy.deepcopy(stored)
        entity["deleted"] = False
        self._merge(entity, body, principal, override=override, creating=False)
        if entity == stored:
            return 200, "entityNoChange", stored
        self._touch(entity, stored, principal.name)
        self._store[name] = entity
        return 200, "entityUpdated", entity

    def _merge(
        self, entity: Entity, body: dict[str, Any], principal: Principal, *, override: bool, creating: bool
    ) -> None:
        if body.get("serviceType") is not None:
            entity["serviceType"] = body["serviceType"]
        # A bot's PUT does not overwrite what a person set (EntityUpdater, DisplayName-Deny).
        bot_keeps = principal.is_bot and not override and not creating
        for key in ("displayName", "description"):
            if body.get(key) is not None and not (bot_keeps and entity.get(key)):
                entity[key] = body[key]
        if body.get("owners"):
            entity["owners"] = [_owner(ref) for ref in body["owners"]]
        if body.get("tags") is not None:
            tags = list(entity.get("tags") or [])
            known = {t["tagFQN"] for t in tags}
            tags += [copy.deepcopy(t) for t in body["tags"] if t["tagFQN"] not in known]
            entity["tags"] = tags
        for key, kind in (("domains", "domain"), ("dataProducts", "dataProduct")):
            if body.get(key) is not None and not (bot_keeps and entity.get(key)):
                entity[key] = [_reference(kind, fqn) for fqn in body[key]]
        if body.get("style") is not None:
            entity["style"] = copy.deepcopy(body["style"])
        # Upstream clears the runner when an update does not carry it.
        if body.get("ingestionRunner") is not None:
            entity["ingestionRunner"] = copy.deepcopy(body["ingestionRunner"])
        else:
            entity.pop("ingestionRunner", None)
        if body.get("connection") is not None:
            connection = copy.deepcopy(body["connection"])
            old_config = _get_path(entity.get("connection"), ("config",))
            new_config = connection.get("config")
            for secret in SECRET_PATHS:
                if _get_path(new_config, secret) == SECRET_MASK:
                    old_secret = _get_path(old_config, secret)
                    if old_secret is not None:
                        _set_path(new_config, secret, old_secret)
            entity["connection"] = connection

    def _authorize(self, principal: Principal, operation: str) -> None:
        if not principal.allowed:
            raise _ApiError(
                403, f"Principal: CatalogPrincipal{{name='{principal.name}'}} operations [{operation}] not allowed"
            )

    def _href_base(self) -> str:
        server = self._server
        if server is None:  # seeding before start(): any well-formed URI will do
            return f"http://127.0.0.1{SERVICES_PATH}"
        return f"{self.url}{SERVICES_PATH}"

    def _render(self, entity: Entity, *, fields: frozenset[str] | None, reveal: bool) -> Entity:
        """The entity as a response shows it: optional fields filtered, secrets masked."""
        out = {
            k: copy.deepcopy(v) for k, v in entity.items() if fields is None or k not in OPTIONAL_FIELDS or k in fields
        }
        if fields is not None:
            for key in ("followers", "pipelines", "owners", "tags", "domains", "dataProducts"):
                if key in fields and key not in out:
                    out[key] = []
        if not reveal:
            config = _get_path(out.get("connection"), ("config",))
            for secret in SECRET_PATHS:
                if _get_path(config, secret) is not None:
                    _set_path(config, secret, SECRET_MASK)
        return out

    # -- response validation -----------------------------------------------------------------------

    def _check(self, kind: str, validator: Any, body: Any) -> None:
        if not self.validate_responses:
            return
        key = json.dumps(body, sort_keys=True)
        with self._validated_lock:
            if key in self._validated:
                return
        if not validator.is_valid(body):
            first = best_match(validator.iter_errors(body))
            raise _InternalError(_schema_problem(kind, first) if first is not None else f"{kind} invalid")
        with self._validated_lock:
            if len(self._validated) > 200_000:
                self._validated.clear()
            self._validated.add(key)

    def _check_entity(self, body: Entity) -> None:
        self._check("mlmodelService response", _entity_validator(), body)

    def _check_bulk(self, body: dict[str, Any]) -> None:
        self._check("BulkOperationResult response", _bulk_validator(), body)

    # -- routing -------------------------------------------------------------------------------------

    def _dispatch(self, call: _Call) -> _Reply:
        path = call.path
        if path == VERSION_PATH:
            if call.method != "GET":
                raise _ApiError(405, "HTTP 405 Method Not Allowed")
            if self.version_requires_auth:
                self._require_principal(call)
            return _Reply(200, {"version": self.server_version, "revision": "standin0000000", "timestamp": _now_ms()})
        if not path.startswith("/api/v1/"):
            raise _ApiError(404, "HTTP 404 Not Found")
        principal = self._require_principal(call)
        if path == PIPELINES_PATH or path.startswith(PIPELINES_PATH + "/"):
            return self.pipelines.dispatch(call, principal)
        if path == SERVICES_PATH:
            if call.method == "GET":
                return self._list(call, principal)
            if call.method in ("PUT", "POST"):
                return self._create(call, principal)
            raise _ApiError(405, "HTTP 405 Method Not Allowed")
        if not path.startswith(SERVICES_PATH + "/"):
            return self._other_entities(call, principal)
        rest = path[len(SERVICES_PATH) + 1 :]
        if rest == "bulk" and call.method == "PUT":
            if self.bulk_enabled:
                return self._bulk(call, principal)
            if self.no_bulk_status == 500:
                raise _ApiError(500, NO_ROUTE_MESSAGE)
            if self.no_bulk_status == 404:
                raise _ApiError(404, "HTTP 404 Not Found")
        if rest == "restore" and call.method == "PUT":
            return self._restore(call, principal)
        if rest.startswith("name/") and "/" not in rest[5:]:
            fqn = unquote(rest[5:])
            if call.method == "GET":
                return self._get(call, principal, self._by_fqn(fqn), fqn)
            if call.method == "DELETE":
                return self._delete(call, principal, self._by_fqn(fqn), fqn)
            raise _ApiError(405, "HTTP 405 Method Not Allowed")
        if "/" in rest:
            raise _ApiError(404, "HTTP 404 Not Found")
        # ``/{id}``: JAX-RS answers 404 when the segment is not a UUID, 405 for a missing method
        # first (which is what ``PUT /bulk`` meets on a server without the bulk route).
        if call.method not in ("GET", "DELETE"):
            raise _ApiError(405, "HTTP 405 Method Not Allowed")
        try:
            entity_id = str(uuid.UUID(rest))
        except ValueError as exc:
            raise _ApiError(404, "HTTP 404 Not Found") from exc
        with self._lock:
            name = self._ids.get(entity_id)
        if call.method == "GET":
            return self._get(call, principal, name, entity_id)
        return self._delete(call, principal, name, entity_id)

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

    # -- classifications, tags and the other entities a request may name -----------------------

    def _put_classification(self, body: Any) -> tuple[int, Entity]:
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise _ApiError(400, "[name must not be null]")
        stored = self.classifications.get(body["name"])
        if stored is not None:
            return 200, stored
        entity = {
            "id": str(uuid.uuid4()),
            "name": body["name"],
            "fullyQualifiedName": body["name"],
            "description": str(body.get("description") or ""),
            "version": 0.1,
            "deleted": False,
        }
        self.classifications[body["name"]] = entity
        return 201, entity

    def _put_tag(self, body: Any) -> tuple[int, Entity]:
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise _ApiError(400, "[name must not be null]")
        classification = body.get("classification")
        if not isinstance(classification, str) or classification not in self.classifications:
            raise _ApiError(404, f"classification instance for {classification} not found")
        fqn = f"{classification}.{body['name']}"
        stored = self.tags.get(fqn)
        if stored is not None:
            return 200, stored
        entity = {
            "id": str(uuid.uuid4()),
            "name": body["name"],
            "fullyQualifiedName": fqn,
            "description": str(body.get("description") or ""),
            "version": 0.1,
            "deleted": False,
        }
        self.tags[fqn] = entity
        return 201, entity

    def _other_entities(self, call: _Call, principal: Principal) -> _Reply:
        path = call.path[len(API_PREFIX) :]
        for collection, put in (("/v1/classifications", self._put_classification), ("/v1/tags", self._put_tag)):
            if path == collection and call.method in ("PUT", "POST"):
                if not principal.may_tag:
                    self._authorize(Principal(principal.name, allowed=False), "Create")
                self._authorize(principal, "Create")
                with self._lock:
                    existing = isinstance(call.body, dict) and (
                        call.body.get("name") in self.classifications
                        if collection == "/v1/classifications"
                        else f"{call.body.get('classification')}.{call.body.get('name')}" in self.tags
                    )
                    if call.method == "POST" and existing:
                        raise _ApiError(409, "Entity already exists")
                    status, entity = put(self._body(call))
                return _Reply(status, copy.deepcopy(entity))
        if call.method != "GET":
            raise _ApiError(405, "HTTP 405 Method Not Allowed")
        for prefix, kind in (
            ("/v1/classifications/name/", "classification"),
            ("/v1/tags/name/", "tag"),
            ("/v1/domains/name/", "domain"),
            ("/v1/users/", "user"),
            ("/v1/teams/", "team"),
        ):
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                key = unquote(path[len(prefix) :])
                with self._lock:
                    found: Any = {
                        "classification": self.classifications.get(key),
                        "tag": self.tags.get(key),
                        "domain": _reference("domain", key) if key in self.domains else None,
                        "user": {"id": key, "name": f"user-{key[:8]}"} if key in self.users else None,
                        "team": {"id": key, "name": f"team-{key[:8]}"} if key in self.teams else None,
                    }[kind]
                if found is None:
                    raise _ApiError(404, f"{kind} instance for {key} not found")
                return _Reply(200, copy.deepcopy(found))
        raise _ApiError(404, "HTTP 404 Not Found")

    @staticmethod
    def _visible(entity: Entity, include: str) -> bool:
        if include == "all":
            return True
        return bool(entity.get("deleted")) == (include == "deleted")

    def _by_fqn(self, fqn: str) -> str | None:
        """The stored service whose FQN is ``fqn``, found without a scan.

        Only two names can have a given FQN: the FQN itself, or it without its quotes (both
        ``a.b`` and a name spelled ``"a.b"`` have the FQN ``"a.b"``); the stored one wins.
        """
        with self._lock:
            for name in (fqn[1:-1], fqn):
                if name and fqn_of(name) == fqn and name in self._store:
                    return name
        return None

    def _body(self, call: _Call) -> Any:
        if not call.body_ok:
            raise _ApiError(400, "Unable to process JSON")
        return call.body

    def _create(self, call: _Call, principal: Principal) -> _Reply:
        body = self._body(call)
        self._validate_create(body)
        with self._lock:
            if call.method == "POST":
                # POST never updates: authorized as a create, then any existing name conflicts.
                self._authorize(principal, "Create")
                if body["name"] in self._store:
                    raise _ApiError(409, "Entity already exists")
            status, change, entity = self._apply_put(body, principal, override=False)
            rendered = self._render(entity, fields=None, reveal=principal.is_bot)
        self._check_entity(rendered)
        headers = {"X-OpenMetadata-Change": change}
        if status == 201:
            headers["Location"] = rendered["href"]
        return _Reply(status, rendered, headers)

    def _bulk(self, call: _Call, principal: Principal) -> _Reply:
        items = self._body(call)
        if not isinstance(items, list):
            raise _ApiError(400, INVALID_FORMAT)
        if self.max_bulk_items is not None and len(items) > self.max_bulk_items:
            raise _ApiError(413, f"Bulk request of {len(items)} entities exceeds the limit of {self.max_bulk_items}")
        self._authorize(principal, "Create")
        override = call.query.get("overrideMetadata", "false").lower() == "true"
        rule = call.rule
        if call.query.get("async", "false").lower() == "true":
            job = threading.Thread(
                target=self._bulk_job, args=(items, principal, override, rule), name="om-standin-bulk", daemon=True
            )
            with self._lock:
                self._async_jobs.append(job)
            job.start()
            return _Reply(202, empty=True)
        result, complete = self._run_bulk(items, principal, override, rule)
        if not complete:
            return _Reply(0, reset=True)
        self._check_bulk(result)
        return _Reply(200, result)

    def _bulk_job(self, items: list[Any], principal: Principal, override: bool, rule: FaultRule | None) -> None:
        try:
            result, complete = self._run_bulk(items, principal, override, rule)
            if complete:
                self._check_bulk(result)
        except Exception as exc:  # a background job has nobody to answer: keep it for teardown
            self.internal_errors.append(f"async bulk job: {type(exc).__name__}: {exc}")

    def _run_bulk(
        self, items: list[Any], principal: Principal, override: bool, rule: FaultRule | None
    ) -> tuple[dict[str, Any], bool]:
        """Apply the items one at a time; ``False`` when a reset fault cut the batch short."""
        success: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        item_failures = rule.bulk_item_failures if rule is not None else {}
        stop_after = rule.reset_after_items if rule is not None else None
        for index, item in enumerate(items):
            if stop_after is not None and index >= stop_after:
                return {}, False
            try:
                self._validate_create(item)
            except _ApiError as exc:
                failed.append({"request": item, "status": exc.status, "message": exc.message})
                continue
            fqn = fqn_of(item["name"])
            if item["name"] in item_failures:
                status, message = item_failures[item["name"]]
                failed.append({"request": fqn, "status": status, "message": message})
                continue
            try:
                with self._lock:
                    status, change, _ = self._apply_put(item, principal, override=override)
            except _ApiError as exc:
                failed.append({"request": fqn, "status": exc.status, "message": exc.message})
                continue
            success.append({"request": fqn, "status": status, "message": change})
        if stop_after is not None:
            return {}, False
        if not failed:
            status_word = "success"
        elif success:
            status_word = "partialSuccess"
        else:
            status_word = "failure"
        result = {
            "status": status_word,
            "numberOfRowsProcessed": len(items),
            "numberOfRowsPassed": len(success),
            "numberOfRowsFailed": len(failed),
            "successRequest": success,
            "failedRequest": failed,
        }
        return result, True

    def wait_async(self, timeout: float = 10.0) -> bool:
        """Wait for background (``async=true``) bulk jobs; True when all have finished."""
        deadline = time.monotonic() + timeout
        with self._lock:
            jobs = list(self._async_jobs)
        for job in jobs:
            job.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._async_jobs = [j for j in self._async_jobs if j.is_alive()]
            return not self._async_jobs

    def _list(self, call: _Call, principal: Principal) -> _Reply:
        query = call.query
        try:
            limit = int(query.get("limit", str(DEFAULT_LIMIT)))
        except ValueError as exc:
            raise _ApiError(400, "[query param limit must be a number]") from exc
        if limit < 0:
            raise _ApiError(400, "[query param limit must be greater than or equal to 0]")
        if limit > MAX_LIMIT:
            raise _ApiError(400, f"[query param limit must be less than or equal to {MAX_LIMIT}]")
        if "after" in query and "before" in query:
            raise _ApiError(400, "Only one of before or after query parameter allowed")
        include = self._include(query)
        fields = self._fields(query)
        with self._lock:
            matching = sorted((e for e in self._store.values() if self._visible(e, include)), key=lambda e: e["name"])
            total = len(matching)
            start, stop = 0, limit
            if "after" in query:
                after = _decode_cursor(query["after"])
                start = next((i for i, e in enumerate(matching) if e["name"] > after), total)
                stop = start + limit
            elif "before" in query:
                before = _decode_cursor(query["before"])
                stop = next((i for i, e in enumerate(matching) if e["name"] >= before), total)
                start = max(0, stop - limit)
            page = matching[start:stop]
            data = [self._render(e, fields=fields, reveal=principal.is_bot) for e in page]
        paging: dict[str, Any] = {"total": total}
        if page and start > 0:
            paging["before"] = _encode_cursor(page[0]["name"])
        if page and start + len(page) < total:
            paging["after"] = _encode_cursor(page[-1]["name"])
        for item in data:
            self._check_entity(item)
        return _Reply(200, {"data": data, "paging": paging})

    def _get(self, call: _Call, principal: Principal, name: str | None, key: str) -> _Reply:
        include = self._include(call.query)
        fields = self._fields(call.query)
        with self._lock:
            entity = self._store.get(name) if name is not None else None
            if entity is None or not self._visible(entity, include):
                raise _ApiError(404, f"mlmodelService instance for {key} not found")
            rendered = self._render(entity, fields=fields, reveal=principal.is_bot)
        self._check_entity(rendered)
        return _Reply(200, rendered)

    def _delete(self, call: _Call, principal: Principal, name: str | None, key: str) -> _Reply:
        hard = call.query.get("hardDelete", "false").lower() == "true"
        recursive = call.query.get("recursive", "false").lower() == "true"
        with self._lock:
            entity = self._store.get(name) if name is not None else None
            # A soft-deleted service can still be hard-deleted, not soft-deleted again.
            if entity is None or (entity.get("deleted") and not hard):
                raise _ApiError(404, f"mlmodelService instance for {key} not found")
            self._authorize(principal, "Delete")
            assert name is not None
            if (self._model_counts.get(name, 0) > 0 or self.pipelines.blocks_delete(entity["id"])) and not recursive:
                raise _ApiError(400, "mlmodelService is not empty")
            if recursive:
                self.pipelines.service_deleted(entity["id"], hard=hard)
            if hard:
                del self._store[name]
                del self._ids[entity["id"]]
                self._model_counts.pop(name, None)
                rendered = self._render(entity, fields=None, reveal=principal.is_bot)
                change = "entityDeleted"
            else:
                rendered = self._set_deleted(name, entity, principal, deleted=True)
                change = "entitySoftDeleted"
        self._check_entity(rendered)
        return _Reply(200, rendered, {"X-OpenMetadata-Change": change})

    def _set_deleted(self, name: str, entity: Entity, principal: Principal, *, deleted: bool) -> Entity:
        """Soft delete or restore (a change: version +0.1); the caller holds the lock. Returns it rendered."""
        updated = copy.deepcopy(entity)
        updated["deleted"] = deleted
        self._touch(updated, entity, principal.name)
        self._store[name] = updated
        return self._render(updated, fields=None, reveal=principal.is_bot)

    def _restore(self, call: _Call, principal: Principal) -> _Reply:
        body = self._body(call)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise _ApiError(400, INVALID_FORMAT)
        try:
            entity_id = str(uuid.UUID(body["id"]))
        except ValueError as exc:
            raise _ApiError(400, INVALID_FORMAT) from exc
        self._authorize(principal, "EditAll")
        with self._lock:
            name = self._ids.get(entity_id)
            entity = self._store.get(name) if name is not None else None
            if entity is None or name is None:
                raise _ApiError(404, f"mlmodelService instance for {entity_id} not found")
            if not entity.get("deleted"):
                rendered = self._render(entity, fields=None, reveal=principal.is_bot)
                change = "entityNoChange"
            else:
                rendered = self._set_deleted(name, entity, principal, deleted=False)
                change = "entityRestored"
        self._check_entity(rendered)
        return _Reply(200, rendered, {"X-OpenMetadata-Change": change})

    # -- one HTTP exchange -----------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _handle_http(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        """Turn one request into a reply (or a reset) and record it."""
        arrived = time.time()
        split = urlsplit(target)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        body: Any = None
        body_ok = True
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body_ok = False
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        principal = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        reply = self._answer(method, path, query, body, body_ok, principal)
        shown = dict(headers)
        if "authorization" in shown:
            shown["authorization"] = f"{scheme} ***"
        self._record(
            RecordedRequest(
                method=method,
                path=path,
                query=query,
                headers=shown,
                body=body,
                raw=raw,
                status=0 if reply.reset else reply.status,
                principal=principal.name if principal is not None else None,
                at=arrived,
            )
        )
        return reply

    def _answer(
        self, method: str, path: str, query: dict[str, str], body: Any, body_ok: bool, principal: Principal | None
    ) -> _Reply:
        self._wait(self.latency)
        rule = self._pick_fault(method, path, body)
        if rule is not None:
            self._wait(rule.delay)
            if rule.status is not None:
                headers: dict[str, str] = {}
                if rule.retry_after is not None:
                    retry = rule.retry_after
                    headers["Retry-After"] = str(int(retry)) if float(retry).is_integer() else str(retry)
                if rule.status == 401:
                    headers["WWW-Authenticate"] = "om-auth"
                message = rule.message or _reason(rule.status)
                return _Reply(rule.status, _error_body(rule.status, message), headers)
            if rule.reset:
                return _Reply(0, reset=True)
            if rule.respond is not None:
                status, answer = rule.respond(query, body)
                return _Reply(status, answer, trickle=rule.trickle)
        call = _Call(method, path, query, body, body_ok, principal, rule)
        try:
            reply = self._dispatch(call)
        except _ApiError as exc:
            return _Reply(exc.status, _error_body(exc.status, exc.message), exc.headers)
        except Exception as exc:  # anything else is a stand-in bug: 500, and fail the test later
            self.internal_errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            return _Reply(500, _error_body(500, f"stand-in internal error: {type(exc).__name__}"))
        if rule is not None and rule.reset_after_items is not None:
            return _Reply(0, reset=True)  # applied, then the answer is lost
        if rule is not None and rule.trickle is not None:
            reply.trickle = rule.trickle
        return reply


# --------------------------------------------------------------------------------------------
# HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], handler: Callable[..., Any], standin: OpenMetadataStandIn) -> None:
        self.standin = standin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End idle keep-alive connections, whose handler threads would otherwise linger."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-answer (timeouts, resets we caused) are expected, not news.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "OpenMetadataStandIn/1.0"
    timeout = 60  # idle keep-alive connections end after this
    # Headers and body go out in two writes: with Nagle on, the client's delayed ACK adds 40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed HTTP gets the JSON error shape too, not http.server's HTML page."""
        payload = json.dumps(_error_body(code, message or _reason(code))).encode()
        with contextlib.suppress(OSError):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(payload)
        self.close_connection = True

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            return None
        if size < 0:
            return None
        return self.rfile.read(size)

    def _serve(self) -> None:
        try:
            raw = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        if raw is None:
            self.send_error(400, "Bad Content-Length")
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.standin._handle_http(self.command, self.path, headers, raw)
        if reply.reset:
            self._reset()
            return
        payload = b"" if reply.empty else json.dumps(reply.body, separators=(",", ":")).encode("utf-8")
        try:
            self.send_response(reply.status)
            if not reply.empty:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if reply.trickle is None:
                self.wfile.write(payload)
            else:
                self.wfile.flush()
                for i in range(len(payload)):
                    if self.server.standin._stopping.wait(1.0 / reply.trickle):
                        break
                    self.wfile.write(payload[i : i + 1])
                    self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _reset(self) -> None:
        """Drop the connection abruptly: SO_LINGER 0 makes close() send RST, not FIN."""
        self.close_connection = True
        conn = self.connection
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # detach() + os.close closes the descriptor now: socket.close() would wait for the
            # handler's file objects, and the server's shutdown(SHUT_WR) would send a FIN first.
            os.close(conn.detach())

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()

    do_GET = _serve
    do_PUT = _serve
    do_POST = _serve
    do_DELETE = _serve
    do_PATCH = _serve
    do_OPTIONS = _serve


# --------------------------------------------------------------------------------------------
# Standalone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a fake OpenMetadata ML model service API for demos.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8585, help="port to bind (default 8585, 0 for any)")
    parser.add_argument("--token", action="append", required=True, help="bearer token of a bot (repeatable)")
    parser.add_argument("--human-token", action="append", default=[], help="bearer token of a person (secrets masked)")
    parser.add_argument("--bulk", action="store_true", help="serve PUT .../bulk (no released server has it)")
    parser.add_argument("--no-bulk", action="store_true", help="no bulk route, like upstream (the default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    args = parser.parse_args(argv)
    tokens = {t: Principal("ingestion-bot", is_bot=True) for t in args.token}
    tokens.update({t: Principal("admin", is_bot=False) for t in args.human_token})
    standin = OpenMetadataStandIn(bulk_enabled=args.bulk and not args.no_bulk, tokens=tokens, latency=args.latency)
    standin.start(args.host, args.port)
    print(standin.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
