"""The ML model service routes: create-or-update by PUT/POST, bulk, list, get, delete,
restore, with upstream's merge rules, secret masking and response validation.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from jsonschema.exceptions import best_match

from testing.openmetadata._common import (
    DEFAULT_LIMIT,
    INVALID_FORMAT,
    MAX_LIMIT,
    NAME_PATTERN_MESSAGE,
    OPTIONAL_FIELDS,
    SECRET_MASK,
    SECRET_PATHS,
    SERVICES_PATH,
    Entity,
    Principal,
    _ApiError,
    _bump,
    _Call,
    _get_path,
    _InternalError,
    _now_ms,
    _owner,
    _reference,
    _Reply,
    _set_path,
    fqn_of,
    page_of,
)
from testing.openmetadata.faults import FaultRule
from testing.openmetadata.references import ReferencesMixin
from testing.openmetadata.schemas import (
    _bulk_validator,
    _create_validator,
    _entity_validator,
    _request_error_message,
    _schema_problem,
)


class ServicesMixin(ReferencesMixin):
    """The ML model service store and its routes."""

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
            page, paging = page_of(matching, "name", query, limit)
            data = [self._render(e, fields=fields, reveal=principal.is_bot) for e in page]
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
