"""What a request may name and must exist: classifications, tags, domains, users and teams
(their routes, the seeding helpers, and the 404 a missing one gets).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from testing.openmetadata._common import (
    API_PREFIX,
    Entity,
    Principal,
    StandInBase,
    _ApiError,
    _Call,
    _reference,
    _Reply,
)


class ReferencesMixin(StandInBase):
    """Classifications, tags, domains and owners: seeded by tests, created by the client, checked on writes."""

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
