"""Typed models of OpenMetadata's ``CreateMlModelServiceRequest`` (OpenMetadata 2.0.7).

Only what this agent sends is modelled; every model forbids unknown keys, as the server does.
``connection.config`` is a union discriminated on ``type``, and the request checks that
``serviceType`` and ``connection.config.type`` agree, which the server itself does not.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer, model_validator

__all__ = [
    "AWSCredentials",
    "CreateMlModelServiceRequest",
    "CustomMlModelConnection",
    "EntityReference",
    "MlModelConnection",
    "MlflowConnection",
    "SageMakerConnection",
    "ServiceType",
    "SklearnConnection",
    "TagLabel",
    "VertexAIConnection",
    "validate_service_name",
]


class ServiceType(enum.StrEnum):
    """OpenMetadata's ``serviceType`` of an ML model service: the one spelling of the five types.

    A finding's kind, the static discoverer's ``service_type``, the request's ``serviceType`` and
    each connection's ``type`` are all this enum.
    """

    MLFLOW = "Mlflow"
    SKLEARN = "Sklearn"
    CUSTOM = "CustomMlModel"
    SAGEMAKER = "SageMaker"
    VERTEXAI = "VertexAI"


NAME_MAX = 256


def validate_service_name(name: str) -> str:
    """Return ``name`` if OpenMetadata accepts it as a service name, else raise ValueError."""
    if not 1 <= len(name) <= NAME_MAX:
        raise ValueError(f"service name must be 1 to {NAME_MAX} characters, got {len(name)}")
    if "::" in name:
        raise ValueError(f"service name {name!r} must not contain '::'")
    if re.search(r"[\x00-\x1f\x7f]", name):
        raise ValueError(f"service name {name!r} must not contain control characters")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilterPattern(_Strict):
    includes: list[str] | None = None
    excludes: list[str] | None = None


class AWSCredentials(_Strict):
    awsRegion: str = Field(min_length=1)
    awsAccessKeyId: str | None = None
    awsSecretAccessKey: SecretStr | None = None
    awsSessionToken: SecretStr | None = None
    endPointURL: str | None = None
    profileName: str | None = None
    assumeRoleArn: str | None = None
    assumeRoleSessionName: str | None = None
    assumeRoleSourceIdentity: str | None = None
    enabled: bool | None = None

    @field_serializer("awsSecretAccessKey", "awsSessionToken", when_used="json")
    def _reveal(self, value: SecretStr | None) -> str | None:
        # Only reached when the config explicitly asked to send keys; the body must carry them.
        return value.get_secret_value() if value is not None else None


class _ConnectionBase(_Strict):
    mlModelFilterPattern: FilterPattern | None = None
    supportsMetadataExtraction: bool | None = None


class MlflowConnection(_ConnectionBase):
    type: Literal[ServiceType.MLFLOW] = ServiceType.MLFLOW
    trackingUri: str = Field(min_length=1)
    registryUri: str = Field(min_length=1)


class SklearnConnection(_ConnectionBase):
    type: Literal[ServiceType.SKLEARN] = ServiceType.SKLEARN


class CustomMlModelConnection(_ConnectionBase):
    # The server allows extra keys here, so this model does too.
    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal[ServiceType.CUSTOM] = ServiceType.CUSTOM
    sourcePythonClass: str | None = None
    connectionOptions: dict[str, str] | None = None


class SageMakerConnection(_ConnectionBase):
    type: Literal[ServiceType.SAGEMAKER] = ServiceType.SAGEMAKER
    awsConfig: AWSCredentials


class VertexAIConnection(_ConnectionBase):
    type: Literal[ServiceType.VERTEXAI] = ServiceType.VERTEXAI
    credentials: dict[str, Any]
    location: str = Field(min_length=1)

    @model_validator(mode="after")
    def _gcp_config(self) -> VertexAIConnection:
        if "gcpConfig" not in self.credentials:
            raise ValueError("credentials.gcpConfig is required")
        return self


ConnectionConfig = Annotated[
    MlflowConnection | SklearnConnection | CustomMlModelConnection | SageMakerConnection | VertexAIConnection,
    Field(discriminator="type"),
]


class MlModelConnection(_Strict):
    config: ConnectionConfig


class EntityReference(_Strict):
    id: UUID
    type: Literal["user", "team"]


class TagLabel(_Strict):
    tagFQN: str = Field(min_length=1)
    source: Literal["Classification", "Glossary"] = "Classification"
    labelType: Literal["Manual", "Propagated", "Automated", "Derived", "Generated"] = "Automated"
    state: Literal["Suggested", "Confirmed"] = "Confirmed"


class CreateMlModelServiceRequest(_Strict):
    name: str
    serviceType: ServiceType
    displayName: str | None = None
    description: str | None = None
    owners: list[EntityReference] | None = None
    domains: list[str] | None = None
    tags: list[TagLabel] | None = None
    connection: MlModelConnection

    @model_validator(mode="after")
    def _check(self) -> CreateMlModelServiceRequest:
        validate_service_name(self.name)
        if self.connection.config.type != self.serviceType:
            raise ValueError(
                f"serviceType {self.serviceType.value!r} does not match connection.config.type "
                f"{self.connection.config.type.value!r}"
            )
        return self

    def body(self) -> dict[str, Any]:
        """The JSON body to send: unset fields left out, UUIDs as strings, secrets revealed."""
        return self.model_dump(mode="json", exclude_none=True)
