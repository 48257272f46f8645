"""A listed OpenMetadata ``MlModelService`` as the plan reads it, and secret masking for output.

Reading is strict: an entity of a shape the agent cannot read raises ``ValueError`` naming the
field, which the agent turns into a fatal "OpenMetadata answered something unexpected"
(a listing that cannot be read is never taken for a smaller catalog).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SECRET_KEYS", "SECRET_MASK", "CurrentService", "mask_secrets"]

SECRET_MASK = "*********"  # noqa: S105 - the mask OpenMetadata shows, not a secret
SECRET_KEYS = frozenset({"awsSecretAccessKey", "awsSessionToken", "privateKey"})


@dataclass(frozen=True)
class CurrentService:
    """The parts of an OpenMetadata ``MlModelService`` the plan looks at."""

    id: str
    name: str
    service_type: str
    deleted: bool
    connection: Mapping[str, Any]
    display_name: str | None
    description: str | None
    owners: tuple[Mapping[str, Any], ...]
    domains: tuple[str, ...]
    tags: tuple[Mapping[str, Any], ...]
    data_products: tuple[str, ...] = ()
    ingestion_runner: Mapping[str, Any] | None = None
    style: Mapping[str, Any] | None = None

    @classmethod
    def from_entity(cls, entity: Any) -> CurrentService:
        """Read one listed entity; raises ValueError naming the field it cannot read."""
        if not isinstance(entity, Mapping):
            raise ValueError("a listed service is not an object")
        name = entity.get("name")
        where = f"service {name!r}" if isinstance(name, str) else "a listed service"

        def bad(what: str) -> ValueError:
            return ValueError(f"{where}: {what}")

        if not isinstance(name, str) or not isinstance(entity.get("id"), str):
            raise bad("`id` or `name` is not a string")
        conn = entity.get("connection")
        config = conn.get("config") if isinstance(conn, Mapping) else None
        if (conn is not None and not isinstance(conn, Mapping)) or (
            config is not None and not isinstance(config, Mapping)
        ):
            raise bad("`connection.config` is not an object")
        for key in ("displayName", "description", "serviceType"):
            if entity.get(key) is not None and not isinstance(entity.get(key), str):
                raise bad(f"`{key}` is not a string")
        runner = entity.get("ingestionRunner")
        if runner is not None and not (
            isinstance(runner, Mapping) and isinstance(runner.get("id"), str) and isinstance(runner.get("type"), str)
        ):
            raise bad("`ingestionRunner` is not an entity reference")
        style = entity.get("style")
        return cls(
            id=entity["id"],
            name=name,
            service_type=str(entity.get("serviceType", "")),
            deleted=entity.get("deleted") is True,
            connection=dict(config or {}),
            display_name=entity.get("displayName"),
            description=entity.get("description"),
            owners=tuple({"id": o["id"], "type": o["type"]} for o in _objects(entity, "owners", ("id", "type"), bad)),
            domains=_fqns(entity, "domains", bad),
            tags=tuple(_tag_request(t) for t in _objects(entity, "tags", ("tagFQN",), bad)),
            data_products=_fqns(entity, "dataProducts", bad),
            ingestion_runner={"id": runner["id"], "type": runner["type"]} if runner is not None else None,
            style=dict(style) if isinstance(style, Mapping) else None,
        )

    @property
    def tag_fqns(self) -> frozenset[str]:
        return frozenset(str(t["tagFQN"]) for t in self.tags)


def _objects(entity: Mapping[str, Any], key: str, required: tuple[str, ...], bad: Any) -> list[Mapping[str, Any]]:
    """``entity[key]`` as a list of objects whose ``required`` keys are strings."""
    items = entity.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise bad(f"`{key}` is not a list")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not all(isinstance(item.get(k), str) for k in required):
            raise bad(f"`{key}[{i}]` lacks {', '.join(required)}")
    return items


def _fqns(entity: Mapping[str, Any], key: str, bad: Any) -> tuple[str, ...]:
    """``entity[key]`` (entity references, or FQN strings) as FQNs."""
    items = entity.get(key)
    if items is None:
        return ()
    if not isinstance(items, list):
        raise bad(f"`{key}` is not a list")
    out: list[str] = []
    for i, item in enumerate(items):
        value = item.get("fullyQualifiedName") or item.get("name") if isinstance(item, Mapping) else item
        if not isinstance(value, str):
            raise bad(f"`{key}[{i}]` has no fully qualified name")
        out.append(value)
    return tuple(out)


def mask_secrets(value: Any) -> Any:
    """A body as the plan prints it: secret values replaced by OpenMetadata's mask."""
    if isinstance(value, Mapping):
        return {k: SECRET_MASK if k in SECRET_KEYS and v is not None else mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(v) for v in value]
    return value


def _tag_request(tag: Mapping[str, Any]) -> dict[str, Any]:
    """A stored TagLabel reduced to the keys a create request may carry back."""
    keep = ("tagFQN", "source", "labelType", "state")
    return {k: tag[k] for k in keep if k in tag and tag[k] is not None}
