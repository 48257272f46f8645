"""Mapper: neutral findings -> validated ``CreateMlModelServiceRequest`` bodies.

Pure code, no I/O. Names are deterministic: ``mlflow-<host>-<port>``,
``sagemaker-<account>-<region>``, or the discoverer's ``name_template`` filled from the
finding's labels, or an explicit name. Every name is checked against OpenMetadata's rules
(1-256 characters, no ``::``) before anything is sent, and two findings that map to one name
are both reported and neither is registered: merging them silently would register one
server under the other's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr, ValidationError

from mlsvc_discover._errors import MappingError, NameCollisionError
from mlsvc_discover._templates import check_template, render_name
from mlsvc_discover.discoverers.base import Finding, ItemFailure, Scope, ServiceMetadata, ServiceType
from mlsvc_discover.openmetadata.models import (
    AWSCredentials,
    CreateMlModelServiceRequest,
    EntityReference,
    MlflowConnection,
    MlModelConnection,
    SageMakerConnection,
    TagLabel,
    validate_service_name,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "DesiredService",
    "MappingResult",
    "check_template",
    "map_finding",
    "map_findings",
    "owner_tag_fqn",
    "render_name",
]

DEFAULT_TEMPLATES: Mapping[ServiceType, str] = {
    ServiceType.MLFLOW: "mlflow-{host}-{port}",
    ServiceType.SAGEMAKER: "sagemaker-{account}-{region}",
    ServiceType.SKLEARN: "sklearn-{key}",
    ServiceType.CUSTOM: "custom-{key}",
    ServiceType.VERTEXAI: "vertexai-{key}",
}


def owner_tag_fqn(classification: str, owner_id: str) -> str:
    """The tag FQN that marks a service as owned by this agent instance."""
    return f"{classification}.{owner_id}"


def _fill(text: str | None, labels: Mapping[str, str]) -> str | None:
    """Fill ``{label}`` placeholders in metadata text; unknown placeholders stay as written."""
    if text is None:
        return None

    def repl(m: re.Match[str]) -> str:
        return labels.get(m.group(1), m.group(0))

    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", repl, text)


@dataclass(frozen=True)
class DesiredService:
    """One service as this agent wants it, and which fields it manages."""

    name: str
    request: CreateMlModelServiceRequest
    managed: frozenset[str]
    source: str
    scope: Scope
    key: str

    def body(self) -> dict[str, Any]:
        return self.request.body()


@dataclass
class MappingResult:
    """Desired services by name, and the findings that could not be mapped."""

    desired: dict[str, DesiredService] = field(default_factory=dict)
    failures: list[ItemFailure] = field(default_factory=list)
    # Names that must not be deleted this cycle although they are not desired (collisions).
    protected: set[str] = field(default_factory=set)


_REQUIRED_ATTRIBUTES: Mapping[ServiceType, tuple[str, ...]] = {
    ServiceType.MLFLOW: ("tracking_uri", "registry_uri"),
    ServiceType.SAGEMAKER: ("region",),
}


def _connection(finding: Finding) -> MlModelConnection:
    a = finding.attributes
    if "connection" in a:
        # Static (and plugin) findings carry the connection config as declared.
        config = dict(a.get("connection") or {})
        config["type"] = finding.kind.value
        return MlModelConnection.model_validate({"config": config})
    missing = [k for k in _REQUIRED_ATTRIBUTES.get(finding.kind, ()) if k not in a]
    if missing:
        raise MappingError(f"{finding.kind.value} finding lacks attribute(s) {', '.join(missing)}")
    if finding.kind is ServiceType.MLFLOW:
        return MlModelConnection(
            config=MlflowConnection(trackingUri=str(a["tracking_uri"]), registryUri=str(a["registry_uri"]))
        )
    if finding.kind is ServiceType.SAGEMAKER:
        keys: Mapping[str, Any] = a.get("access_keys") or {}
        role = a.get("role_arn")
        secret = keys.get("secret_access_key")
        session_token = keys.get("session_token")
        aws = AWSCredentials(
            awsRegion=str(a["region"]),
            assumeRoleArn=role,
            assumeRoleSessionName=a.get("session_name") if role else None,
            endPointURL=a.get("endpoint_url"),
            awsAccessKeyId=keys.get("access_key_id"),
            awsSecretAccessKey=secret if isinstance(secret, SecretStr) or secret is None else SecretStr(secret),
            awsSessionToken=(
                session_token
                if isinstance(session_token, SecretStr) or session_token is None
                else SecretStr(session_token)
            ),
        )
        return MlModelConnection(config=SageMakerConnection(awsConfig=aws))
    return MlModelConnection.model_validate({"config": {"type": finding.kind.value}})


def map_finding(finding: Finding, *, owner_tag: str) -> DesiredService:
    """Map one finding; raises MappingError with the reason when it cannot be mapped."""
    labels = {**finding.labels}
    if finding.name is not None:
        try:
            name = validate_service_name(finding.name)
        except ValueError as exc:
            raise MappingError(str(exc)) from exc
    else:
        template = finding.name_template or DEFAULT_TEMPLATES[finding.kind]
        name = render_name(template, labels, key=finding.key)
    meta: ServiceMetadata = finding.metadata
    fill_labels = {**labels, "name": name, "key": finding.key}
    managed = {"connection", "tags"}
    tags = [TagLabel(tagFQN=owner_tag)]
    if meta.tags is not None:
        tags += [TagLabel(tagFQN=t) for t in meta.tags if t != owner_tag]
    for attr, value in (
        ("displayName", meta.display_name),
        ("description", meta.description),
        ("owners", meta.owners),
        ("domains", meta.domains),
    ):
        if value is not None:
            managed.add(attr)
    try:
        request = CreateMlModelServiceRequest(
            name=name,
            serviceType=finding.kind.value,
            displayName=_fill(meta.display_name, fill_labels),
            description=_fill(meta.description, fill_labels),
            owners=[EntityReference(id=o.id, type=o.type) for o in meta.owners] if meta.owners is not None else None,
            domains=list(meta.domains) if meta.domains is not None else None,
            tags=tags,
            connection=_connection(finding),
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MappingError(f"invalid service request ({where}): {first['msg']}") from None
    return DesiredService(
        name=name,
        request=request,
        managed=frozenset(managed),
        source=finding.source,
        scope=finding.scope,
        key=finding.key,
    )


def map_findings(findings: Iterable[Finding], *, owner_tag: str) -> MappingResult:
    """Map every finding; failures and name collisions are collected, never raised."""
    result = MappingResult()
    claims: dict[str, list[tuple[Finding, DesiredService]]] = {}
    for finding in findings:
        try:
            desired = map_finding(finding, owner_tag=owner_tag)
        except MappingError as exc:
            result.failures.append(ItemFailure(finding.source, finding.key, str(exc), kind="mapping"))
            continue
        claims.setdefault(desired.name, []).append((finding, desired))
    for name, claimants in claims.items():
        distinct = {(f.kind, f.key, f.source) for f, _ in claimants}
        if len(distinct) == 1:
            result.desired[name] = claimants[0][1]
            continue
        others = ", ".join(sorted(f"{f.source}:{f.key}" for f, _ in claimants))
        err = NameCollisionError(
            f"service name {name!r} is claimed by {len(claimants)} findings ({others}); "
            "give them distinct names (name_template or an explicit name)"
        )
        for f, _ in claimants:
            result.failures.append(ItemFailure(f.source, f.key, str(err), kind="name_collision"))
        result.protected.add(name)
    return result
