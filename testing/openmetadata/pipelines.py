"""Ingestion pipeline routes of the OpenMetadata stand-in (``/api/v1/services/ingestionPipelines``).

Plugged into :class:`testing.openmetadata.OpenMetadataStandIn` by two hooks: its dispatch
hands every path under the pipelines route to :meth:`PipelineRoutes.dispatch`, and its service
delete asks :meth:`PipelineRoutes.blocks_delete` (a service with a non-deleted pipeline is
"not empty") and tells :meth:`PipelineRoutes.service_deleted` when a service goes. The contract
is ``docs/openmetadata-contract.md`` (Ingestion pipelines), read from upstream's
``IngestionPipelineResource``, ``IngestionPipelineMapper`` and ``IngestionPipelineRepository``:

* ``PUT`` creates or updates by name (FQN = service FQN + ``.`` + name, the name quoted when it
  holds a dot); ``POST`` creates, 409 when the name exists. The entity is rebuilt from the
  request each time, so ``deployed`` (false) and ``enabled`` (true) are reset by every PUT, and
  an unchanged body sent to a deployed pipeline is an update. A bot's PUT keeps a non-empty
  stored ``displayName`` and ``description``.
* When a deployed pipeline's schedule, source config, logger level or ``enabled`` changes, the
  server redeploys it before saving; with the pipeline client unreachable (or the deploy
  failing) that PUT is 400 "Deployment failed. Changes not saved." and nothing is saved.
* ``POST /deploy/{id}`` and ``/trigger/{id}`` answer a ``PipelineServiceClientResponse``; with no
  pipeline client, HTTP 200 ``{"code": 200, "reason": "Pipeline Client Disabled"}`` and nothing
  happens; unreachable: deploy 400, trigger 503; ``deploy_error`` set: HTTP 200 with ``code``
  500 and that reason (the orchestrator refused the DAG).
* ``GET`` lists with ``service``, ``pipelineType``, ``serviceType``, ``provider``, ``include``,
  ``fields`` and ``limit``/``after``/``before``; ``GET /{id}``, ``GET /name/{fqn}``;
  ``DELETE /{id}?hardDelete=`` and ``DELETE /name/{fqn}``.

Every request body is validated against the 2.0.7 ``CreateIngestionPipelineRequest`` schema and
every pipeline in a response against ``IngestionPipeline`` (copies in ``testing/openmetadata/schemas``).
Each pipeline it answers with carries ``openMetadataServerConnection`` with the ingestion bot's
JWT (``bot_jwt``), as upstream does. Options: ``client`` (``"airflow"``, ``"none"``: no pipeline
service client, ``"unreachable"``) and ``deploy_error``. ``deploys``, ``redeploys`` and
``triggers`` count what reached the orchestrator; :meth:`seed` creates a pipeline as a person
would.
"""

from __future__ import annotations

import copy
import json
import uuid
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from testing.openmetadata._common import (
    INVALID_FORMAT,
    Principal,
    _ApiError,
    _bump,
    _Call,
    _InternalError,
    _now_ms,
    _Reply,
    fqn_of,
    page_of,
)
from testing.openmetadata.schemas import _request_error_message, _schema_problem, _Validator

if TYPE_CHECKING:
    from testing.openmetadata.server import OpenMetadataStandIn

__all__ = ["PIPELINES_PATH", "SCHEMAS", "PipelineRoutes", "pipeline_validator"]

PIPELINES_PATH = "/api/v1/services/ingestionPipelines"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
CLIENT_DISABLED = "Pipeline Client Disabled"
OPTIONAL_FIELDS = frozenset({"owners", "followers", "pipelineStatuses", "domains", "votes", "extension", "tags"})
# The server's POJOs fill these defaults, so a stored pipeline shows them whether sent or not.
AIRFLOW_DEFAULTS: dict[str, Any] = {
    "concurrency": 1,
    "maxActiveRuns": 1,
    "pausePipeline": False,
    "pipelineCatchup": False,
    "pipelineTimezone": "UTC",
    "retries": 0,
    "retryDelay": 300,
    "workflowDefaultView": "tree",
    "workflowDefaultViewOrientation": "LR",
}
ML_MODEL_DEFAULTS: dict[str, Any] = {
    "type": "MlModelMetadata",
    "markDeletedMlModels": True,
    "overrideMetadata": False,
    "overrideLineage": False,
}
# What makes the server redeploy a deployed pipeline before it saves an update.
REDEPLOY_KEYS = ("sourceConfig", "loggerLevel", "enabled")
Client = Literal["airflow", "none", "unreachable"]
Entity = dict[str, Any]


@cache
def pipeline_validator(name: str) -> Any:
    """Validator of ``testing/openmetadata/schemas/<name>.schema.json`` (refs resolved, not inlined)."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    return _Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _pipeline_fqn(service_fqn: str, name: str) -> str:
    return f"{service_fqn}.{fqn_of(name)}"


class PipelineRoutes:
    """The pipeline store and routes; shares the stand-in's lock, tokens and service store."""

    def __init__(self, standin: OpenMetadataStandIn) -> None:
        self.standin = standin
        self.client: Client = "airflow"
        self.deploy_error: str | None = None
        self.deploys: list[str] = []
        self.redeploys: list[str] = []
        self.triggers: list[str] = []
        # Upstream answers every pipeline with the connection its workflow will use, the
        # ingestion bot's JWT included (decryptOrNullify): a client must never show it.
        self.bot_jwt = "standin-ingestion-bot-jwt-" + uuid.uuid4().hex
        self._store: dict[str, Entity] = {}  # FQN -> stored pipeline
        self._ids: dict[str, str] = {}

    # -- for tests -------------------------------------------------------------------------------

    @property
    def pipelines(self) -> dict[str, Entity]:
        """A deep copy of the store: FQN -> pipeline as stored (deleted ones too)."""
        with self.standin._lock:
            return copy.deepcopy(self._store)

    def of_service(self, service: str, *, include_deleted: bool = False) -> list[Entity]:
        return [
            p
            for p in self.pipelines.values()
            if p["service"]["name"] == service and (include_deleted or not p.get("deleted"))
        ]

    def seed(self, request: dict[str, Any], *, by: str = "admin") -> Entity:
        """Create or update a pipeline as a person in the UI would (a non-bot PUT)."""
        body = copy.deepcopy(request)
        self._validate(body)
        with self.standin._lock:
            _, _, entity = self._apply_put(body, Principal(by, is_bot=False))
            return copy.deepcopy(entity)

    def writes(self) -> list[Any]:
        """Every PUT, POST and DELETE sent to the pipeline routes, whatever its answer."""
        return [r for r in self.standin.find(path=f"^{PIPELINES_PATH}") if r.method in ("PUT", "POST", "DELETE")]

    # -- hooks for the service routes ----------------------------------------------------------

    def blocks_delete(self, service_id: str) -> bool:
        """Whether the service has a non-deleted pipeline (then only a recursive delete may go)."""
        with self.standin._lock:
            return any(p["service"]["id"] == service_id and not p.get("deleted") for p in self._store.values())

    def service_deleted(self, service_id: str, *, hard: bool) -> None:
        """A (recursive) service delete takes its pipelines with it."""
        with self.standin._lock:
            for fqn, p in list(self._store.items()):
                if p["service"]["id"] != service_id:
                    continue
                if hard:
                    del self._store[fqn]
                    self._ids.pop(p["id"], None)
                elif not p.get("deleted"):
                    self._store[fqn] = self._touched({**p, "deleted": True}, p, "admin")

    # -- routing ---------------------------------------------------------------------------------

    def dispatch(self, call: _Call, principal: Principal) -> _Reply:
        rest = call.path[len(PIPELINES_PATH) :].strip("/")
        if rest == "":
            if call.method == "GET":
                return self._list(call)
            if call.method in ("PUT", "POST"):
                return self._write(call, principal)
            raise _ApiError(405, "HTTP 405 Method Not Allowed")
        if rest.startswith("deploy/") and call.method == "POST":
            return self._deploy(self._by_id(rest[7:]), principal)
        if rest.startswith("trigger/") and call.method == "POST":
            return self._trigger(self._by_id(rest[8:]), principal)
        if rest.startswith("name/"):
            fqn = unquote(rest[5:])
            return self._one(call, principal, self._store_key(fqn), fqn)
        if "/" in rest:
            raise _ApiError(404, "HTTP 404 Not Found")
        try:
            pipeline_id = str(uuid.UUID(rest))
        except ValueError as exc:
            raise _ApiError(404, "HTTP 404 Not Found") from exc
        with self.standin._lock:
            key = self._ids.get(pipeline_id)
        return self._one(call, principal, key, pipeline_id)

    def _store_key(self, fqn: str) -> str | None:
        with self.standin._lock:
            return fqn if fqn in self._store else None

    def _by_id(self, raw: str) -> str:
        try:
            pipeline_id = str(uuid.UUID(raw))
        except ValueError as exc:
            raise _ApiError(404, "HTTP 404 Not Found") from exc
        with self.standin._lock:
            key = self._ids.get(pipeline_id)
            if key is None or self._store[key].get("deleted"):
                raise _ApiError(404, f"ingestionPipeline instance for {pipeline_id} not found")
            return key

    # -- writes ----------------------------------------------------------------------------------

    def _validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise _ApiError(400, INVALID_FORMAT)
        validator = pipeline_validator("CreateIngestionPipelineRequest")
        errors = list(validator.iter_errors(body))
        if errors:
            parse_level = [e for e in errors if _request_error_message(e) == INVALID_FORMAT]
            raise _ApiError(400, _request_error_message(best_match(parse_level or errors)))
        if "::" in body["name"]:
            raise _ApiError(400, '[name must match "^((?!::).)*$"]')

    def _service(self, ref: dict[str, Any]) -> Entity:
        kind, service_id = ref["type"], ref["id"]
        if kind != "mlmodelService":
            raise _ApiError(404, f"{kind} instance for {service_id} not found")
        name = self.standin._ids.get(service_id)
        service = self.standin._store.get(name) if name is not None else None
        if service is None or service.get("deleted"):
            raise _ApiError(404, f"mlmodelService instance for {service_id} not found")
        return service

    def _write(self, call: _Call, principal: Principal) -> _Reply:
        if not call.body_ok:
            raise _ApiError(400, "Unable to process JSON")
        body = call.body
        self._validate(body)
        with self.standin._lock:
            if call.method == "POST":
                self.standin._authorize(principal, "Create")
                service = self._service(body["service"])
                if _pipeline_fqn(service["fullyQualifiedName"], body["name"]) in self._store:
                    raise _ApiError(409, "Entity already exists")
            status, change, entity = self._apply_put(body, principal)
            rendered = self._render(entity, fields=None)
        headers = {"X-OpenMetadata-Change": change}
        if status == 201:
            headers["Location"] = rendered["href"]
        return _Reply(status, rendered, headers)

    def _build(self, body: dict[str, Any], service: Entity, pipeline_id: str) -> Entity:
        fqn = _pipeline_fqn(service["fullyQualifiedName"], body["name"])
        config = copy.deepcopy((body.get("sourceConfig") or {}).get("config"))
        if isinstance(config, dict) and config.get("type", "MlModelMetadata") == "MlModelMetadata":
            config = {**ML_MODEL_DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
        entity: Entity = {
            "id": pipeline_id,
            "name": body["name"],
            "fullyQualifiedName": fqn,
            "pipelineType": body["pipelineType"],
            "sourceConfig": {"config": config} if config is not None else {},
            "airflowConfig": {
                **AIRFLOW_DEFAULTS,
                **{k: v for k, v in body["airflowConfig"].items() if v is not None},
            },
            "loggerLevel": body.get("loggerLevel") or "INFO",
            "raiseOnError": True if body.get("raiseOnError") is None else body["raiseOnError"],
            "provider": body.get("provider") or "user",
            "service": {
                "id": service["id"],
                "type": "mlmodelService",
                "name": service["name"],
                "fullyQualifiedName": service["fullyQualifiedName"],
            },
            "deployed": False,
            "enabled": True,
            "deleted": False,
            "href": f"{self.standin.url if self.standin._server else 'http://127.0.0.1'}{PIPELINES_PATH}/{pipeline_id}",
        }
        for key in ("displayName", "description"):
            if body.get(key) is not None:
                entity[key] = body[key]
        if body.get("owners"):
            entity["owners"] = [{"id": str(o["id"]), "type": o["type"]} for o in body["owners"]]
        return entity

    def _touched(self, entity: Entity, previous: Entity | None, by: str) -> Entity:
        entity["version"] = _bump(previous["version"]) if previous is not None else 0.1
        now = _now_ms()
        if previous is not None and now <= previous.get("updatedAt", 0):
            now = previous["updatedAt"] + 1
        entity["updatedAt"] = now
        entity["updatedBy"] = by
        return entity

    def _apply_put(self, body: dict[str, Any], principal: Principal) -> tuple[int, str, Entity]:
        """Create or update by FQN; returns (status, change type, stored entity). Lock held."""
        service = self._service(body["service"])
        fqn = _pipeline_fqn(service["fullyQualifiedName"], body["name"])
        stored = self._store.get(fqn)
        if stored is None:
            self.standin._authorize(principal, "Create")
            entity = self._touched(self._build(body, service, str(uuid.uuid4())), None, principal.name)
            self._store[fqn] = entity
            self._ids[entity["id"]] = fqn
            return 201, "entityCreated", entity
        self.standin._authorize(principal, "EditAll")
        entity = self._build(body, service, stored["id"])
        if principal.is_bot:
            for key in ("displayName", "description"):
                if stored.get(key):
                    entity[key] = stored[key]
        comparable = {k: v for k, v in stored.items() if k not in ("version", "updatedAt", "updatedBy")}
        if entity == comparable:
            return 200, "entityNoChange", stored
        if stored.get("deployed") and self._needs_redeploy(stored, entity):
            self._redeploy_before_save(entity)
        entity = self._touched(entity, stored, principal.name)
        self._store[fqn] = entity
        return 200, "entityUpdated", entity

    @staticmethod
    def _needs_redeploy(stored: Entity, entity: Entity) -> bool:
        schedule = stored["airflowConfig"].get("scheduleInterval") != entity["airflowConfig"].get("scheduleInterval")
        return schedule or any(stored.get(k) != entity.get(k) for k in REDEPLOY_KEYS)

    def _redeploy_before_save(self, entity: Entity) -> None:
        if self.client == "none":
            return  # upstream logs a warning and saves without deploying
        if self.client == "unreachable":
            raise _ApiError(400, "Deployment failed. Changes not saved.")
        if self.deploy_error is not None:
            raise _ApiError(400, "Deployment failed: deployment error. Changes not saved.")
        self.redeploys.append(entity["fullyQualifiedName"])

    # -- deploy and trigger ----------------------------------------------------------------------

    def _deploy(self, key: str, principal: Principal) -> _Reply:
        with self.standin._lock:
            self.standin._authorize(principal, "Deploy")
            stored = self._store[key]
            if self.client == "none":
                return _Reply(200, {"code": 200, "reason": CLIENT_DISABLED})
            if self.client == "unreachable":
                reason = "Connection refused (Connection refused)"
                raise _ApiError(400, f"Failed to deploy pipeline [{stored['name']}] due to [{reason}]")
            if self.deploy_error is not None:
                return _Reply(200, {"code": 500, "reason": self.deploy_error, "platform": "Airflow"})
            self.deploys.append(key)
            if not stored.get("deployed"):
                self._store[key] = self._touched({**stored, "deployed": True}, stored, principal.name)
            return _Reply(
                200,
                {"code": 200, "reason": f"Workflow [{stored['name']}] has been created", "platform": "Airflow"},
            )

    def _trigger(self, key: str, principal: Principal) -> _Reply:
        with self.standin._lock:
            self.standin._authorize(principal, "Trigger")
            stored = self._store[key]
            if self.client == "none":
                return _Reply(200, {"code": 200, "reason": CLIENT_DISABLED})
            if self.client == "unreachable":
                raise _ApiError(503, f"Failed to trigger pipeline [{stored['name']}] due to [Connection refused]")
            if not stored.get("deployed"):
                raise _ApiError(400, f"Failed to trigger pipeline [{stored['name']}] due to [DAG not found]")
            self.triggers.append(key)
            return _Reply(200, {"code": 200, "reason": f"Workflow [{stored['name']}] triggered", "platform": "Airflow"})

    # -- reads and deletes -----------------------------------------------------------------------

    @staticmethod
    def _include(query: dict[str, str]) -> str:
        include = query.get("include", "non-deleted")
        if include not in ("non-deleted", "deleted", "all"):
            raise _ApiError(400, f"Invalid include value {include}")
        return include

    @staticmethod
    def _fields(query: dict[str, str]) -> frozenset[str]:
        names = frozenset(f.strip() for f in query.get("fields", "").split(",") if f.strip())
        for name in sorted(names):
            if name not in OPTIONAL_FIELDS:
                raise _ApiError(400, f"Invalid field name {name}")
        return names

    def _render(self, entity: Entity, *, fields: frozenset[str] | None) -> Entity:
        out = copy.deepcopy(entity)
        if not (fields and "owners" in fields):
            out.pop("owners", None)
        elif "owners" not in out:
            out["owners"] = []
        out["openMetadataServerConnection"] = {
            "hostPort": f"{self.standin.url if self.standin._server else 'http://127.0.0.1'}/api",
            "securityConfig": {"jwtToken": self.bot_jwt},
        }
        validator = pipeline_validator("IngestionPipeline")
        if self.standin.validate_responses and not validator.is_valid(out):
            first = best_match(validator.iter_errors(out))
            raise _InternalError(_schema_problem("ingestionPipeline response", first))
        return out

    def _list(self, call: _Call) -> _Reply:
        query = call.query
        try:
            limit = int(query.get("limit", "10"))
        except ValueError as exc:
            raise _ApiError(400, "[query param limit must be a number]") from exc
        if not 0 <= limit <= 1_000_000:
            raise _ApiError(400, "[query param limit must be between 0 and 1000000]")
        include = self._include(query)
        fields = self._fields(query)
        provider = query.get("provider")
        if provider is not None and provider not in ("system", "user", "automation"):
            raise _ApiError(400, INVALID_FORMAT)

        def keep(p: Entity) -> bool:
            if include != "all" and bool(p.get("deleted")) != (include == "deleted"):
                return False
            if "service" in query and p["service"]["fullyQualifiedName"] != query["service"]:
                return False
            if "pipelineType" in query and p["pipelineType"] != query["pipelineType"]:
                return False
            if "serviceType" in query and p["service"]["type"] != query["serviceType"]:
                return False
            return provider is None or p.get("provider") == provider

        with self.standin._lock:
            matching = sorted((p for p in self._store.values() if keep(p)), key=lambda p: p["fullyQualifiedName"])
            page, paging = page_of(matching, "fullyQualifiedName", query, limit)
            data = [self._render(p, fields=fields) for p in page]
        return _Reply(200, {"data": data, "paging": paging})

    def _one(self, call: _Call, principal: Principal, key: str | None, shown: str) -> _Reply:
        if call.method == "GET":
            include = self._include(call.query)
            fields = self._fields(call.query)
            with self.standin._lock:
                stored = self._store.get(key) if key is not None else None
                if stored is None or (include != "all" and bool(stored.get("deleted")) != (include == "deleted")):
                    raise _ApiError(404, f"ingestionPipeline instance for {shown} not found")
                return _Reply(200, self._render(stored, fields=fields))
        if call.method != "DELETE":
            raise _ApiError(405, "HTTP 405 Method Not Allowed")
        hard = call.query.get("hardDelete", "false").lower() == "true"
        with self.standin._lock:
            stored = self._store.get(key) if key is not None else None
            if stored is None or (stored.get("deleted") and not hard):
                raise _ApiError(404, f"ingestionPipeline instance for {shown} not found")
            self.standin._authorize(principal, "Delete")
            assert key is not None
            if hard:
                del self._store[key]
                del self._ids[stored["id"]]
                return _Reply(200, self._render(stored, fields=None), {"X-OpenMetadata-Change": "entityDeleted"})
            updated = self._touched({**stored, "deleted": True}, stored, principal.name)
            self._store[key] = updated
            return _Reply(200, self._render(updated, fields=None), {"X-OpenMetadata-Change": "entitySoftDeleted"})
