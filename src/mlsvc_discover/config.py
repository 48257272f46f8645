"""The agent's configuration: YAML, ``${VAR}`` expansion, pydantic validation.

Loading never contacts anything. Every problem becomes a :class:`ConfigError` that names the
key (dotted path, e.g. ``discoverers[1].accounts[0].role_arn``) and says how to fix it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from mlsvc_discover._errors import ConfigError
from mlsvc_discover.sources.base import DiscovererConfig, StrictModel

__all__ = [
    "AgentConfig",
    "Duration",
    "LoggingConfig",
    "OpenMetadataConfig",
    "ScheduleConfig",
    "ServerConfig",
    "StateConfig",
    "load_config",
    "parse_duration",
]

CONFIG_ENV = "MLSVC_DISCOVER_CONFIG"
HOST_ENV = "OPENMETADATA_HOST"
TOKEN_ENV = "OPENMETADATA_JWT_TOKEN"  # noqa: S105 - a variable name, not a value

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``"15m"`` -> 900.0. Numbers are seconds. Raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m, 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. 500ms, 30s, 15m, 1h or 1d")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class OpenMetadataConfig(StrictModel):
    """Where OpenMetadata is and how to talk to it."""

    host: str | None = Field(
        default=None,
        description="Base URL of the API, e.g. `http://openmetadata:8585/api`. Env: OPENMETADATA_HOST.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="JWT of a bot, sent as `Authorization: Bearer`. Env: OPENMETADATA_JWT_TOKEN.",
    )
    timeout: Duration = Field(default=30.0, gt=0, description="Timeout of one HTTP request.")
    verify_tls: bool = Field(default=True, description="Verify the server's TLS certificate.")
    ca_bundle: Path | None = Field(default=None, description="CA bundle (PEM) to verify the server with.")
    batch_size: int = Field(default=100, ge=1, le=10_000, description="Services per bulk request.")
    page_size: int = Field(default=1000, ge=1, le=1_000_000, description="Services per list request.")
    max_concurrency: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Most concurrent writes (bulk batches or per-item PUTs); the upper bound of the adaptive limit.",
    )
    min_concurrency: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Fewest concurrent writes the adaptive limit goes down to under 429/503 or rising latency; "
        "equal to `max_concurrency` for a fixed concurrency.",
    )
    initial_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Concurrent writes at the start (slow start doubles it each healthy round trip); "
        "unset: 4, kept within the bounds.",
    )
    retries: int = Field(default=4, ge=0, le=20, description="Retries of a retryable failure (5xx, 429, timeout).")
    backoff_initial: Duration = Field(
        default=0.5, ge=0, description="First retry delay; doubles each retry, with jitter."
    )
    backoff_max: Duration = Field(default=30.0, ge=0, description="Longest retry delay (also caps Retry-After).")
    use_bulk: bool = Field(
        default=True, description="Try `PUT .../bulk` first; false always writes one PUT per service."
    )

    @field_validator("host")
    @classmethod
    def _host_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL; write e.g. http://openmetadata:8585/api")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _concurrency_bounds(self) -> OpenMetadataConfig:
        if self.min_concurrency > self.max_concurrency:
            raise ValueError(
                f"min_concurrency ({self.min_concurrency}) is above max_concurrency ({self.max_concurrency}); "
                "set min_concurrency <= max_concurrency (equal for a fixed concurrency)"
            )
        return self


class ScheduleConfig(StrictModel):
    """When the long-running agent runs a cycle."""

    interval: Duration | None = Field(default=None, gt=0, description="Run every interval, e.g. `15m`.")
    cron: str | None = Field(default=None, description="Crontab expression (5 fields), instead of interval.")
    jitter: Duration = Field(default=0.0, ge=0, description="Random delay up to this long added to each run.")
    grace_period: Duration = Field(
        default=30.0, ge=0, description="On SIGTERM/SIGINT, how long a cycle in flight may take to finish."
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        # A field validator, so the error names `schedule.cron` rather than `schedule`.
        if value is not None:
            # The daemon's builder, so config accepts exactly what the scheduler will run
            # (standard crontab weekdays: 0 and 7 are Sunday).
            from mlsvc_discover.daemon import cron_trigger

            try:
                cron_trigger(value)
            except ValueError as exc:
                raise ValueError(
                    f"{value!r} is not a valid crontab expression ({exc}); write 5 fields: "
                    "minute hour day-of-month month day-of-week, e.g. '*/15 * * * *'"
                ) from exc
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleConfig:
        if self.interval is not None and self.cron is not None:
            raise ValueError("set either interval or cron, not both")
        return self


class ServerConfig(StrictModel):
    """The health and metrics endpoint of the long-running agent."""

    enabled: bool = Field(default=True, description="Serve /healthz, /readyz and /metrics (never in --once).")
    address: str = Field(default="0.0.0.0:8080", description="host:port to listen on.")
    ready_intervals: int = Field(
        default=3, ge=1, description="/readyz fails when no cycle succeeded within this many intervals."
    )

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port; write e.g. 0.0.0.0:8080")
        return value


class LoggingConfig(StrictModel):
    """Log level and format."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level. Env MLSVC_DISCOVER_LOG_LEVEL overrides it."
    )
    format: Literal["text", "json"] = Field(default="text", description="One event per line, text or JSON.")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class StateConfig(StrictModel):
    """Where deletion bookkeeping (consecutive misses) is kept between processes."""

    path: Path | None = Field(
        default=None,
        description="JSON file keeping miss counts across runs (needed for `sync` deletes from cron/--once).",
    )


class AgentConfig(StrictModel):
    """The whole configuration file."""

    owner_id: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Identifies this agent instance; written into every service it owns.",
    )
    ownership_classification: str = Field(
        default="mlsvc-discover",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Classification whose tag `<classification>.<owner_id>` marks owned services.",
    )
    policy: Literal["upsert-only", "create-only", "sync"] = Field(
        default="upsert-only", description="upsert-only, create-only, or sync (also soft-deletes)."
    )
    stale_after: int = Field(default=3, ge=1, description="Consecutive misses before a service is deleted (sync).")
    max_delete_fraction: float = Field(
        default=0.2, ge=0, le=1, description="A cycle deleting more than this share of owned services deletes nothing."
    )
    openmetadata: OpenMetadataConfig = Field(default_factory=OpenMetadataConfig, description="OpenMetadata.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Long-running schedule.")
    server: ServerConfig = Field(default_factory=ServerConfig, description="Health and metrics endpoint.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    state: StateConfig = Field(default_factory=StateConfig, description="Deletion bookkeeping.")
    discoverers: tuple[SerializeAsAny[DiscovererConfig], ...] = Field(
        default=(), description="Discoverer instances; each has a `type` and a unique `name`."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> AgentConfig:
        seen: set[str] = set()
        for d in self.discoverers:
            if d.name in seen:
                raise ValueError(f"two discoverers are named {d.name!r}; give each a unique name")
            seen.add(d.name)
        return self


# --- loading ---------------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)\})")


def expand_env(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` in every string of a YAML tree; ``$$`` is a literal ``$``."""
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            if m.group(1) == "$":
                return "$"
            var = m.group(2)
            if var not in env:
                raise ConfigError(
                    f"environment variable {var} is not set; export it or remove ${{{var}}}",
                    key=path or "<root>",
                )
            return env[var]

        return _VAR_RE.sub(repl, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


_UNKNOWN = object()


def _loc(prefix: str, loc: tuple[int | str, ...], raw: Any = _UNKNOWN, kind: str = "") -> str:
    """The dotted key of an error location, walking ``raw`` (the input) alongside it.

    pydantic puts the tag of a tagged-union branch into the location (an MLflow URI given as
    a mapping fails at ``tracking_uris.1.target.auth``), but ``target`` is no key anyone wrote:
    a part that is not a key of the input at that point is left out. A missing key is not in
    the input either, and is kept.
    """
    out, node = prefix, raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list | tuple) and 0 <= part < len(node) else _UNKNOWN
            continue
        if node is not _UNKNOWN and (not isinstance(node, dict) or (part not in node and kind != "missing")):
            continue
        out += f".{part}" if out else str(part)
        node = node.get(part, _UNKNOWN) if isinstance(node, dict) else _UNKNOWN
    return out


def _hint(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key; remove it or check its spelling (see README, Configuration)"
    if kind == "missing":
        return "required key is missing; add it"
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def config_error_from_validation(exc: ValidationError, prefix: str = "", raw: Any = _UNKNOWN) -> ConfigError:
    """The first pydantic error as a ConfigError naming the key; the rest follow on new lines.

    ``raw`` is the validated input, used only to tell keys from union tags (never shown).
    """
    errors = exc.errors(include_url=False, include_input=False)
    keys = [_loc(prefix, tuple(e["loc"]), raw, e.get("type", "")) or "<root>" for e in errors]
    err = ConfigError("\n".join(f"{key}: {_hint(e)}" for key, e in zip(keys, errors, strict=True)))
    err.key = None if keys[0] == "<root>" else keys[0]
    return err


def parse_config(raw: Any, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Validate a parsed YAML document (a mapping) into an :class:`AgentConfig`."""
    from mlsvc_discover.sources.registry import discoverer_class

    env = os.environ if env is None else env
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the config file must be a YAML mapping of keys to values", key="<root>")
    raw = expand_env(raw, env)
    items = raw.get("discoverers") or []
    if not isinstance(items, list):
        raise ConfigError("must be a list of discoverers, each with `type` and `name`", key="discoverers")
    discoverers: list[DiscovererConfig] = []
    names: dict[str, int] = {}
    for i, item in enumerate(items):
        key = f"discoverers[{i}]"
        if not isinstance(item, dict):
            raise ConfigError("must be a mapping with `type` and `name`", key=key)
        kind = item.get("type")
        if not isinstance(kind, str):
            raise ConfigError("`type` is required (mlflow, sagemaker, static, or a plugin's)", key=f"{key}.type")
        cls = discoverer_class(kind, key=f"{key}.type")
        try:
            discoverers.append(cls.config_model.model_validate(item))
        except ValidationError as exc:
            raise config_error_from_validation(exc, key, item) from None
        # Checked here rather than only by AgentConfig, so the error names the second one's key.
        name = discoverers[-1].name
        if name in names:
            raise ConfigError(
                f"discoverers[{names[name]}] is already named {name!r}; give each discoverer a unique name",
                key=f"{key}.name",
            )
        names[name] = i
    rest = {k: v for k, v in raw.items() if k != "discoverers"}
    # Checked before dict(): dict() of a list or a string raises a bare ValueError (a crash).
    if not isinstance(rest.get("openmetadata") or {}, dict):
        raise ConfigError("must be a mapping of settings such as host and token", key="openmetadata")
    om = dict(rest.get("openmetadata") or {})
    if not om.get("host") and env.get(HOST_ENV):
        om["host"] = env[HOST_ENV]
    if not om.get("token") and env.get(TOKEN_ENV):
        om["token"] = env[TOKEN_ENV]
    rest["openmetadata"] = om
    try:
        # Discoverer configs are already validated instances (a subclass per plugin), which
        # pydantic keeps as they are.
        return AgentConfig.model_validate({**rest, "discoverers": tuple(discoverers)})
    except ValidationError as exc:
        raise config_error_from_validation(exc) from None


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read, expand and validate the config file at ``path`` (or ``$MLSVC_DISCOVER_CONFIG``)."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"no config file: pass --config PATH or set {CONFIG_ENV}", key="--config")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror or exc}", key="--config") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p} is not valid YAML{where}: {problem}", key="<root>") from exc
    return parse_config(raw, env)
