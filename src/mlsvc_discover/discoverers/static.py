"""The ``static`` discoverer: services declared in config, of any of the five types.

Useful for what cannot be discovered (a Vertex AI project, a custom model platform) and for
pinning a service to an exact name. The connection is validated when the config is loaded, so
a typo exits 2 before anything is contacted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from mlsvc_discover.discoverers.base import (
    Discoverer,
    DiscovererConfig,
    DiscoveryResult,
    Finding,
    ScopeOutcome,
    ServiceMetadata,
    ServiceType,
    StrictModel,
)
from mlsvc_discover.openmetadata.models import MlModelConnection, validate_service_name

__all__ = ["StaticDiscoverer", "StaticDiscovererConfig", "StaticService"]


class StaticService(StrictModel):
    """One declared service."""

    name: str = Field(description="Service name in OpenMetadata (1-256 characters, no `::`).")
    service_type: ServiceType = Field(description="OpenMetadata serviceType; connection.type is set to the same value.")
    connection: dict[str, Any] = Field(
        default_factory=dict,
        description="connection.config as OpenMetadata takes it, without `type` (e.g. trackingUri, registryUri).",
    )
    metadata: ServiceMetadata | None = Field(default=None, description="Overrides of the discoverer's defaults.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels for metadata templates.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return validate_service_name(value)

    @model_validator(mode="after")
    def _valid_connection(self) -> StaticService:
        config = dict(self.connection)
        given = config.pop("type", self.service_type)
        if given != self.service_type:
            raise ValueError(
                f"connection.type {given!r} does not match service_type {self.service_type.value!r}; "
                "drop connection.type"
            )
        try:
            MlModelConnection.model_validate({"config": {**config, "type": self.service_type}})
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            loc = [str(p) for p in first["loc"] if p not in ("config", self.service_type)]
            raise ValueError(f"connection.{'.'.join(loc)}: {first['msg']}") from None
        return self


class StaticDiscovererConfig(DiscovererConfig):
    """Config of the ``static`` discoverer."""

    type: Literal["static"] = Field(description="Always `static`.")
    services: list[StaticService] = Field(default_factory=list, description="The services to declare.")

    @model_validator(mode="after")
    def _unique(self) -> StaticDiscovererConfig:
        names = [s.name for s in self.services]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"service names must be unique; repeated: {', '.join(dupes)}")
        return self


class StaticDiscoverer(Discoverer[StaticDiscovererConfig]):
    """Turns each declared service into a finding; never fails."""

    config_model = StaticDiscovererConfig

    async def discover(self) -> DiscoveryResult:
        result = DiscoveryResult(source=self.name, scopes=[ScopeOutcome(self.root_scope, True)])
        for svc in self.config.services:
            connection = {k: v for k, v in svc.connection.items() if k != "type"}
            result.findings.append(
                Finding(
                    kind=ServiceType(svc.service_type),
                    source=self.name,
                    scope=(*self.root_scope, svc.name),
                    key=svc.name,
                    attributes={"connection": connection},
                    labels={"discoverer": self.name, **svc.labels},
                    metadata=self.config.defaults.merged(svc.metadata),
                    name=svc.name,
                )
            )
        return result
