"""The discoverer plug point: config base class, neutral findings, and the result of a run.

A discoverer knows one platform (MLflow, SageMaker, ...). It reads its own pydantic config,
looks at the world and returns a :class:`DiscoveryResult`: neutral :class:`Finding` objects
(what was found, never an OpenMetadata request) and the :class:`ScopeOutcome` of every scope it
looked at. Scopes matter for safe deletes: a service is only ever deleted when the scope that
produced it was looked at successfully in the same cycle.

Discoverers are registered through the entry-point group ``mlsvc_discover.discoverers``; the
entry point names the :class:`Discoverer` subclass and its name is the ``type`` used in config.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlsvc_discover._errors import MappingError
from mlsvc_discover._templates import check_template
from mlsvc_discover.ingestion import IngestionSettings
from mlsvc_discover.openmetadata.models import ServiceType

__all__ = [
    "Discoverer",
    "DiscovererConfig",
    "DiscoveryResult",
    "Finding",
    "ItemFailure",
    "OwnerRef",
    "Progress",
    "ProgressCallback",
    "Scope",
    "ScopeOutcome",
    "ServiceMetadata",
    "ServiceType",
]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OwnerRef(StrictModel):
    """A reference to an OpenMetadata user or team that owns the service."""

    id: UUID = Field(description="UUID of the user or team in OpenMetadata.")
    type: Literal["user", "team"] = Field(description="`user` or `team`.")


class ServiceMetadata(StrictModel):
    """Catalog metadata the agent sets on a service; a field left unset is not managed."""

    display_name: str | None = Field(
        default=None,
        description="displayName of the service; `{label}` placeholders are filled from the finding.",
    )
    description: str | None = Field(
        default=None,
        description="Markdown description; `{label}` placeholders are filled from the finding.",
    )
    owners: tuple[OwnerRef, ...] | None = Field(
        default=None, description="Owners (users or teams) to add to the service."
    )
    domains: tuple[str, ...] | None = Field(
        default=None, description="Fully qualified names of the domains of the service."
    )
    tags: tuple[str, ...] | None = Field(
        default=None,
        description="Tag FQNs (`Classification.Tag`) to add to the service; they must exist in OpenMetadata.",
    )
    ingestion: IngestionSettings | None = Field(
        default=None,
        description="Metadata ingestion pipeline of the service; keys set here override the layer above.",
    )

    def merged(self, override: ServiceMetadata | None) -> ServiceMetadata:
        """Return these defaults with every field that ``override`` sets replaced."""
        if override is None:
            return self
        # model_copy(update=...) would bypass validation and leave owners as plain dicts.
        data = {**self.model_dump(), **override.model_dump(exclude_none=True)}
        if self.ingestion is not None and override.ingestion is not None:
            # Key by key: an item that only sets a schedule keeps its discoverer's `enabled`.
            data["ingestion"] = self.ingestion.merged(override.ingestion).model_dump(exclude_none=True)
        return ServiceMetadata.model_validate(data)


class DiscovererConfig(StrictModel):
    """Fields every discoverer config has. Subclasses add their own (still ``extra="forbid"``)."""

    type: str = Field(description="Discoverer type: the entry-point name (`mlflow`, `sagemaker`, `static`, ...).")
    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Unique name of this discoverer instance; used in reports, metrics and scopes.",
    )
    enabled: bool = Field(
        default=True, description="Set to false to turn this discoverer off (what it found before is not deleted)."
    )
    defaults: ServiceMetadata = Field(
        default_factory=ServiceMetadata,
        description="Metadata applied to every service this discoverer finds (items can override).",
    )
    name_template: str | None = Field(
        default=None,
        description=(
            "Python format template for service names, e.g. `mlflow-{host}-{port}`; "
            "placeholders are the finding's labels."
        ),
    )

    @field_validator("name_template")
    @classmethod
    def _usable_template(cls, value: str | None) -> str | None:
        # A template that can never give a name is a config error (exit 2, nothing contacted),
        # not the same mapping failure repeated for every finding of every cycle.
        if value is not None:
            try:
                check_template(value)
            except MappingError as exc:
                raise ValueError(str(exc)) from None
        return value


Scope = tuple[str, ...]
"""A hierarchical scope key, e.g. ``("sagemaker", "prod", "123456789012", "eu-west-1")``."""


@dataclass(frozen=True)
class Finding:
    """One thing a discoverer found: neutral facts, not an OpenMetadata request.

    ``key`` identifies the finding within its kind (the redacted tracking URI, or
    ``account/region``); two findings with the same kind and key are the same thing.
    ``attributes`` holds the kind's facts (see each discoverer); ``labels`` are strings
    used to fill name and metadata templates.
    """

    kind: ServiceType
    source: str
    scope: Scope
    key: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    metadata: ServiceMetadata = field(default_factory=ServiceMetadata)
    name: str | None = None
    name_template: str | None = None


@dataclass(frozen=True)
class ScopeOutcome:
    """Whether one scope was looked at successfully; ``error`` says why not."""

    scope: Scope
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class ItemFailure:
    """One item (a URI, an account, a region) and why: one that could not be discovered (in
    ``DiscoveryResult.failures``, or the mapper's) or one left out on purpose (in ``ignored``).

    It has no stage; the agent records each failure in the report as a ``CycleFailure`` with one.
    """

    source: str
    item: str
    reason: str
    kind: str = "error"


@dataclass
class DiscoveryResult:
    """What one discoverer run produced."""

    source: str
    findings: list[Finding] = field(default_factory=list)
    scopes: list[ScopeOutcome] = field(default_factory=list)
    failures: list[ItemFailure] = field(default_factory=list)
    # Items looked at and deliberately left out (opted out, listed twice), each with its reason.
    ignored: list[ItemFailure] = field(default_factory=list)
    # Lines for the cycle report that are neither failures nor findings (e.g. a fallback taken).
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and all(s.ok for s in self.scopes)


C = TypeVar("C", bound=DiscovererConfig)
T = TypeVar("T")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """How far one discoverer's run is: ``done`` of ``total`` units (``unit``: scopes, accounts).

    ``finished`` marks the end of the run (sent by the agent, with the run's failure count;
    ``done`` and ``total`` are 0 then when the discoverer never reported progress).
    """

    source: str
    done: int
    total: int
    failed: int
    unit: str = "scopes"
    finished: bool = False


ProgressCallback = Callable[[Progress], None]


class Discoverer(abc.ABC, Generic[C]):
    """Base class of every discoverer.

    Subclasses set ``config_model`` and implement :meth:`discover`. ``discover`` must not
    raise for a failing item or scope: it records a failed :class:`ScopeOutcome` and an
    :class:`ItemFailure` instead. An exception escaping ``discover`` marks the whole
    discoverer as failed (its root scope errs) and never stops the other discoverers.
    """

    config_model: ClassVar[type[DiscovererConfig]]
    # Who listens to progress (the CLI's progress line on a terminal); nobody by default.
    _progress: ProgressCallback | None = None

    def __init__(self, config: C) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def root_scope(self) -> Scope:
        return (self.config.type, self.config.name)

    @abc.abstractmethod
    async def discover(self) -> DiscoveryResult:
        """Look at the world once and report findings and scope outcomes."""

    async def aclose(self) -> None:
        """Release resources held between cycles (clients, sessions)."""

    def secrets(self) -> Sequence[str]:
        """Secret values this discoverer knows (for log redaction). Override when there are any."""
        return ()

    # --- progress (optional: a discoverer that never reports it works the same) ---------------

    def set_progress(self, callback: ProgressCallback | None) -> None:
        """Send progress of the next runs to ``callback`` (None: to nobody)."""
        self._progress = callback

    def report_progress(self, done: int, total: int, failed: int, unit: str = "scopes") -> None:
        """Tell the listener, if any, how far this run is; a failing listener never stops discovery."""
        if self._progress is None:
            return
        try:
            self._progress(Progress(self.name, done, total, failed, unit))
        except Exception:
            _log.debug("progress callback failed", exc_info=True)

    async def gather_scopes(
        self, work: Sequence[Awaitable[T]], *, failures: Callable[[T], int], unit: str = "scopes"
    ) -> list[T]:
        """``asyncio.gather(*work)``, reporting progress as each unit of work (a scope) ends.

        ``failures(result)`` says how many failures one finished unit brought.
        """
        total, done, failed = len(work), 0, 0
        self.report_progress(0, total, 0, unit)

        async def one(item: Awaitable[T]) -> T:
            nonlocal done, failed
            result = await item
            done += 1
            failed += failures(result)
            self.report_progress(done, total, failed, unit)
            return result

        return list(await asyncio.gather(*(one(w) for w in work)))
