"""The ``ingestion:`` config: whether and how the agent keeps a metadata ingestion pipeline per service.

It is layered like service metadata: the agent's global ``ingestion`` section, then a
discoverer's ``defaults.ingestion``, then an item's ``metadata.ingestion``; each layer sets only
the keys it names, and :meth:`IngestionSettings.resolve` fills the rest from the defaults
below. No I/O here; this module imports nothing from the rest of the package, so that the
discoverer base classes can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["AIRFLOW_PRESETS", "DEFAULT_SCHEDULE", "IngestionSettings", "ModelFilter", "ResolvedIngestion"]

DEFAULT_SCHEDULE = "0 0 * * *"
# Airflow's schedule presets that make sense for a recurring pipeline (not @once).
AIRFLOW_PRESETS = frozenset({"@hourly", "@daily", "@weekly", "@monthly", "@yearly"})
LogLevel = Literal["DEBUG", "INFO", "WARN", "ERROR"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelFilter(_Strict):
    """Which ML models the pipeline ingests (OpenMetadata's ``mlModelFilterPattern``)."""

    includes: tuple[str, ...] = Field(
        default=(), description="Regexes; only models whose name matches one are ingested."
    )
    excludes: tuple[str, ...] = Field(default=(), description="Regexes; models whose name matches one are left out.")

    @field_validator("includes", "excludes")
    @classmethod
    def _regexes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from None
        return value


class IngestionSettings(_Strict):
    """Metadata ingestion pipeline of a service; a key left unset comes from the layer below."""

    enabled: bool | None = Field(
        default=None,
        description=(
            "Keep one metadata ingestion pipeline for the service (default false: opt-in). Turning it off "
            "deletes the agent's pipeline under `policy: sync` and leaves it under the other policies."
        ),
    )
    schedule: str | None = Field(
        default=None,
        description=(
            f"When the pipeline runs: a 5-field crontab expression (UTC) or @hourly, @daily, @weekly, @monthly, "
            f"@yearly (default `{DEFAULT_SCHEDULE}`). Sent as `airflowConfig.scheduleInterval`."
        ),
    )
    model_filter: ModelFilter | None = Field(
        default=None, description="`mlModelFilterPattern` of the pipeline (default: every model)."
    )
    mark_deleted_models: bool | None = Field(
        default=None,
        description="`markDeletedMlModels`: soft-delete models that vanished from the source (default true).",
    )
    logger_level: LogLevel | None = Field(
        default=None, description="`loggerLevel` of the ingestion workflow (default INFO)."
    )
    run_after_create: bool | None = Field(
        default=None,
        description="Trigger one run right after the pipeline is created and deployed (default false).",
    )

    @field_validator("logger_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.upper()
            return "WARN" if value == "WARNING" else value
        return value

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        if value is None or value.strip() in AIRFLOW_PRESETS:
            return value.strip() if value is not None else None
        # The daemon's own parser: the same crontab dialect the agent itself is scheduled with.
        from mlsvc_discover._crontab import cron_trigger

        try:
            cron_trigger(value)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a valid schedule ({exc}); write 5 crontab fields such as '0 3 * * *' "
                f"or one of {', '.join(sorted(AIRFLOW_PRESETS))}"
            ) from None
        return " ".join(value.split())

    def merged(self, override: IngestionSettings | None) -> IngestionSettings:
        """These settings with every key that ``override`` sets replaced."""
        if override is None:
            return self
        return IngestionSettings.model_validate(
            {**self.model_dump(exclude_none=True), **override.model_dump(exclude_none=True)}
        )

    def resolve(self) -> ResolvedIngestion:
        """Every key decided: unset ones take the documented defaults."""
        flt = self.model_filter or ModelFilter()
        return ResolvedIngestion(
            enabled=bool(self.enabled),
            schedule=self.schedule or DEFAULT_SCHEDULE,
            includes=flt.includes,
            excludes=flt.excludes,
            mark_deleted_models=True if self.mark_deleted_models is None else self.mark_deleted_models,
            logger_level=self.logger_level or "INFO",
            run_after_create=bool(self.run_after_create),
        )


@dataclass(frozen=True)
class ResolvedIngestion:
    """The ingestion settings of one service, every key decided."""

    enabled: bool = False
    schedule: str = DEFAULT_SCHEDULE
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    mark_deleted_models: bool = True
    logger_level: str = "INFO"
    run_after_create: bool = False
