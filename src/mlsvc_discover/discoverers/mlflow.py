"""The ``mlflow`` discoverer: probe listed MLflow tracking servers over HTTP.

The URIs come from ``tracking_uris`` and ``uris_file``; each is probed by the shared
:class:`~mlsvc_discover.mlflow_probe.MlflowProber`, which decides whether an MLflow tracking
server answers there. Every URI has its own scope so that a server that is down only puts its
own service on hold.

Credentials (per discoverer, per URI, or in the URI itself) are sent only to the origin they
were configured for, and the credential-free, normalised URI is what leaves this module as key,
trackingUri and label.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from mlsvc_discover._duration import Duration
from mlsvc_discover._http import HttpProbeError, redact_uri
from mlsvc_discover.discoverers.base import (
    Discoverer,
    DiscovererConfig,
    DiscoveryResult,
    Finding,
    ItemFailure,
    ScopeOutcome,
    ServiceMetadata,
    ServiceType,
    StrictModel,
)
from mlsvc_discover.mlflow_probe import (
    MlflowAuth,
    MlflowProber,
    ProbeResult,
    ProbeSettings,
    ProbeTarget,
    clean_registry_uri,
    normalise_tracking_uri,
    parse_tracking_uri,
    registry_uri_secrets,
)
from mlsvc_discover.mlflow_probe.auth import SECRET_SAFE
from mlsvc_discover.openmetadata.models import validate_service_name

# MlflowAuth, normalise_tracking_uri and redact_uri live in mlsvc_discover.mlflow_probe and
# mlsvc_discover._http; re-exported here for existing imports.
__all__ = [
    "MlflowAuth",
    "MlflowDiscoverer",
    "MlflowDiscovererConfig",
    "MlflowTarget",
    "normalise_tracking_uri",
    "redact_uri",
]

log = logging.getLogger(__name__)


# --- config ----------------------------------------------------------------------------------


class MlflowTarget(StrictModel):
    """One tracking server with its own name, credentials, metadata or labels."""

    model_config = SECRET_SAFE

    uri: str = Field(description="Base URL of the tracking server (http or https); `user:password@` is allowed.")
    registry_uri: str | None = Field(
        default=None, description="registryUri to publish; the tracking URI when unset. Credentials are stripped."
    )
    name: str | None = Field(
        default=None,
        description="Explicit service name (1-256 characters, no `::`); overrides the discoverer's name_template.",
    )
    auth: MlflowAuth | None = Field(default=None, description="Credentials for this URI; overrides the default auth.")
    metadata: ServiceMetadata | None = Field(
        default=None, description="Overrides of the discoverer's defaults for this service."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels for name and metadata templates (override built-in ones)."
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        return validate_service_name(value) if value is not None else None

    @field_validator("uri")
    @classmethod
    def _valid_uri(cls, value: str) -> str:
        parse_tracking_uri(value)
        return value

    @field_validator("registry_uri")
    @classmethod
    def _valid_registry_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("registry_uri must not be empty; leave it out to use the tracking URI")
        clean_registry_uri(value)
        return value

    @model_validator(mode="after")
    def _one_credential_source(self) -> MlflowTarget:
        if self.auth is not None and parse_tracking_uri(self.uri).password is not None:
            raise ValueError(f"{redact_uri(self.uri)!r} has credentials in the URI and in auth; keep one of them")
        return self


def _shape(value: Any) -> str:
    return "uri" if isinstance(value, str) else "target"


# Picks the branch by shape, so a bad mapping reports its own field instead of also
# "input should be a valid string" from the other branch of the union.
_UriItem = Annotated[
    Annotated[str, Tag("uri")] | Annotated[MlflowTarget, Tag("target")],
    Discriminator(_shape),
]


class MlflowDiscovererConfig(DiscovererConfig):
    """Config of the ``mlflow`` discoverer."""

    model_config = SECRET_SAFE

    type: Literal["mlflow"] = Field(description="Always `mlflow`.")
    tracking_uris: list[_UriItem] = Field(
        default_factory=list,
        description="Tracking servers to probe: URIs, or mappings with `uri` and per-server settings.",
    )
    uris_file: Path | None = Field(
        default=None,
        description="File with one URI per line (`#` comments), re-read every cycle; unreadable fails the root scope.",
    )
    auth: MlflowAuth | None = Field(default=None, description="Default credentials for every URI without its own.")
    timeout: Duration = Field(
        default=5.0, gt=0, le=600, description="Total deadline of one URI's probe (all its requests together)."
    )
    max_concurrency: int = Field(default=256, ge=1, le=4096, description="URIs probed at the same time.")
    verify_tls: bool = Field(default=True, description="Verify the servers' TLS certificates.")
    ca_bundle: Path | None = Field(default=None, description="CA bundle (PEM) to verify the servers with.")
    check_registry: bool = Field(default=True, description="Also ask each server whether it serves the model registry.")
    read_version: bool = Field(
        default=False,
        description=(
            "Also read each server's /version for the `mlflow_version` label (one more request per "
            "server, so off by default; bench/README.md has its cost at fleet scale)."
        ),
    )
    max_response_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=1 << 30,
        description="Largest response body read from a server; past it the probe fails.",
    )

    @field_validator("tracking_uris")
    @classmethod
    def _valid_uris(cls, value: list[str | MlflowTarget]) -> list[str | MlflowTarget]:
        for item in value:
            if isinstance(item, str):
                parse_tracking_uri(item)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MlflowDiscovererConfig:
        if not self.tracking_uris and self.uris_file is None:
            raise ValueError("nothing to probe: set tracking_uris or uris_file")
        if self.ca_bundle is not None and not self.verify_tls:
            raise ValueError("ca_bundle is set but verify_tls is false; drop one of them")
        seen: dict[str, str] = {}
        for item in self.tracking_uris:
            uri = item if isinstance(item, str) else item.uri
            clean = parse_tracking_uri(uri).clean
            if clean in seen:
                raise ValueError(
                    f"tracking_uris lists {clean} twice ({seen[clean]!r} and {redact_uri(uri)!r}); keep one"
                )
            seen[clean] = redact_uri(uri)
        return self


# --- discovery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """One URI to probe and what its finding carries; ``probe`` holds the Authorization value."""

    probe: ProbeTarget
    registry_uri: str
    name: str | None
    metadata: ServiceMetadata | None
    labels: dict[str, str]

    @property
    def key(self) -> str:
        return self.probe.key


class MlflowDiscoverer(Discoverer[MlflowDiscovererConfig]):
    """Probes every configured MLflow URI concurrently; one scope and at most one finding each."""

    config_model = MlflowDiscovererConfig

    def __init__(self, config: MlflowDiscovererConfig) -> None:
        super().__init__(config)
        self._prober = MlflowProber(ProbeSettings.of(config))
        self._file_secrets: tuple[str, ...] = ()

    # -- public hooks --

    async def discover(self) -> DiscoveryResult:
        cfg = self.config
        result = DiscoveryResult(source=self.name)
        targets: list[_Target] = [self._target(item) for item in cfg.tracking_uris]
        root_errors: list[str] = []
        if cfg.uris_file is not None:
            root_errors += await self._read_uris_file(cfg.uris_file, targets, result)

        try:
            # Loaded once up front: a bad CA bundle fails every URI with one reason.
            self._prober.ssl_context()
        except HttpProbeError as exc:
            # Without a client nothing can be probed; every scope says so rather than looking empty.
            result.scopes.append(ScopeOutcome(self.root_scope, ok=False, error="; ".join([*root_errors, exc.reason])))
            for t in targets:
                result.scopes.append(ScopeOutcome((*self.root_scope, t.key), ok=False, error=exc.reason))
                result.failures.append(ItemFailure(self.name, t.key, exc.reason, exc.kind))
            return result

        result.scopes.append(ScopeOutcome(self.root_scope, ok=not root_errors, error="; ".join(root_errors) or None))
        gate = asyncio.Semaphore(cfg.max_concurrency)
        outcomes = await self.gather_scopes(
            [self._guarded(gate, t) for t in targets], failures=lambda o: int(isinstance(o, HttpProbeError))
        )
        for t, outcome in zip(targets, outcomes, strict=True):
            scope = (*self.root_scope, t.key)
            if isinstance(outcome, HttpProbeError):
                log.debug("mlflow probe of %s failed: %s", t.key, outcome.reason)
                result.scopes.append(ScopeOutcome(scope, ok=False, error=outcome.reason))
                result.failures.append(ItemFailure(self.name, t.key, outcome.reason, outcome.kind))
            else:
                result.scopes.append(ScopeOutcome(scope, ok=True))
                result.findings.append(self._finding(t, outcome))
        return result

    async def _guarded(self, gate: asyncio.Semaphore, target: _Target) -> ProbeResult | HttpProbeError:
        async with gate:
            try:
                return await self._prober.probe(target.probe)
            except HttpProbeError as exc:
                return exc

    def _finding(self, t: _Target, res: ProbeResult) -> Finding:
        cfg = self.config
        u = t.probe.uri
        labels = {
            "host": u.host,
            "port": str(u.port),
            "scheme": u.scheme,
            "path": u.path.strip("/"),
            "discoverer": self.name,
            "mlflow_version": res.mlflow_version or "unknown",
            **t.labels,
        }
        return Finding(
            kind=ServiceType.MLFLOW,
            source=self.name,
            scope=(*self.root_scope, t.key),
            key=t.key,
            attributes={
                "tracking_uri": t.key,
                "registry_uri": t.registry_uri,
                "registry_available": res.registry_available,
                "mlflow_version": res.mlflow_version,
            },
            labels=labels,
            metadata=cfg.defaults.merged(t.metadata),
            name=t.name,
            name_template=cfg.name_template,
        )

    async def aclose(self) -> None:
        """Nothing to release: every probe closes its own client."""

    def secrets(self) -> Sequence[str]:
        cfg = self.config
        found: list[str] = []
        if cfg.auth is not None:
            found += cfg.auth.secret_values()
        for item in cfg.tracking_uris:
            target = MlflowTarget(uri=item) if isinstance(item, str) else item
            parsed = parse_tracking_uri(target.uri)
            found += [s for s in (parsed.password, parsed.raw_password) if s]
            if target.auth is not None:
                found += target.auth.secret_values()
            found += registry_uri_secrets(target.registry_uri)
        found += self._file_secrets
        return tuple(dict.fromkeys(s for s in found if s))

    # -- targets --

    def _target(self, item: str | MlflowTarget) -> _Target:
        target = MlflowTarget(uri=item) if isinstance(item, str) else item
        probe = ProbeTarget.from_uri(target.uri, target.auth or self.config.auth)
        registry = clean_registry_uri(target.registry_uri) if target.registry_uri else probe.key
        return _Target(
            probe=probe,
            registry_uri=registry,
            name=target.name,
            metadata=target.metadata,
            labels=dict(target.labels),
        )

    async def _read_uris_file(self, path: Path, targets: list[_Target], result: DiscoveryResult) -> list[str]:
        """Add the file's URIs to ``targets``; return why the root scope failed, if it did.

        A bad line fails the root scope: the URI it was meant to be is unknown, and a root
        scope that looks healthy would let its service be deleted as gone.
        """
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror or type(exc).__name__
            reason = f"cannot read uris_file {path}: {why}"
            # A failure of its own as well as the root scope's, so reports and metrics count it.
            result.failures.append(ItemFailure(self.name, str(path), reason, "uris_file"))
            return [reason]
        errors: list[str] = []
        secrets: list[str] = []
        known = {t.key for t in targets}
        for lineno, line in enumerate(text.splitlines(), start=1):
            uri = re.sub(r"(^|\s)#.*$", "", line).strip()
            if not uri:
                continue
            where = f"{path}:{lineno}"
            try:
                target = self._target(uri)
            except ValueError as exc:
                reason = str(exc)
                errors.append(f"uris_file line {lineno}: {reason}")
                result.failures.append(ItemFailure(self.name, where, reason, "invalid"))
                continue
            secrets += [s for s in (target.probe.uri.password, target.probe.uri.raw_password) if s]
            if target.key in known:
                result.ignored.append(ItemFailure(self.name, target.key, f"listed again at {where}", "duplicate"))
                continue
            known.add(target.key)
            targets.append(target)
        self._file_secrets = tuple(secrets)
        return errors

    # -- probing --
