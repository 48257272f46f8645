"""The agent's configuration: YAML, ``${VAR}`` expansion, pydantic validation.

Loading never contacts anything. Every problem becomes a :class:`ConfigError` that names the
key (dotted path, e.g. ``discoverers[1].accounts[0].role_arn``) and says how to fix it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from mlsvc_discover._crontab import cron_trigger
from mlsvc_discover._duration import Duration, parse_duration
from mlsvc_discover._errors import ConfigError
from mlsvc_discover.discoverers.base import DiscovererConfig, StrictModel
from mlsvc_discover.ingestion import IngestionSettings

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
    timeout: Duration = Field(
        default=30.0,
        gt=0,
        description="Total deadline of one HTTP request attempt: connecting, sending and reading the whole answer.",
    )
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
        default=True,
        description="Try `PUT .../bulk` once; a server without the route gets one PUT per service from then on.",
    )
    max_response_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest answer read from OpenMetadata (bytes); a larger one fails the request, unread.",
    )
    max_pages: int = Field(
        default=10_000,
        ge=1,
        description="Most pages one listing may take; more means the server's paging is broken (fatal, no writes).",
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
        default=30.0,
        ge=0,
        description="On SIGTERM/SIGINT (--once too), how long a cycle in flight may take to finish.",
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        # A field validator, so the error names `schedule.cron` rather than `schedule`.
        if value is not None:
            # The scheduler's own builder, so config accepts exactly what the scheduler will run
            # (standard crontab weekdays: 0 and 7 are Sunday).
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
    status_page: bool = Field(
        default=True,
        description=(
            "Serve /status (HTML) and /status.json: the last cycle's scopes, findings, plan and failures. "
            "Secrets are redacted, but URIs, account ids and service names are shown to whoever reaches the port."
        ),
    )
    liveness_margin: Duration = Field(
        default=60.0,
        ge=0,
        description="/healthz fails once a cycle has run this long past `cycle_timeout` (the agent is wedged).",
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
    cycle_timeout: Duration = Field(
        default=600.0,
        gt=0,
        description=(
            "Deadline of one cycle, --once included. Discoverers get the first 3/4 of it (one still running "
            "then is a failed scope); reading and writing OpenMetadata get what is left (writes not confirmed "
            "by then are reported not applied)."
        ),
    )
    openmetadata: OpenMetadataConfig = Field(default_factory=OpenMetadataConfig, description="OpenMetadata.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Long-running schedule.")
    server: ServerConfig = Field(default_factory=ServerConfig, description="Health and metrics endpoint.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    state: StateConfig = Field(default_factory=StateConfig, description="Deletion bookkeeping.")
    ingestion: IngestionSettings = Field(
        default_factory=IngestionSettings,
        description=(
            "Metadata ingestion pipelines of owned services (opt-in): defaults for every discoverer; "
            "`defaults.ingestion` of a discoverer and `metadata.ingestion` of an item override them key by key."
        ),
    )
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
    from mlsvc_discover.discoverers.registry import discoverer_class

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
        with p.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror or exc}", key="--config") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{p} is larger than {MAX_CONFIG_BYTES} bytes; a config this big is a mistake (move long URI "
            "lists into a uris_file)",
            key="--config",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p} is not UTF-8 text: {exc.reason} at byte {exc.start}", key="--config") from exc
    return parse_config(parse_yaml(text, str(p)), env)


# --- bounded YAML ----------------------------------------------------------------------------

MAX_CONFIG_BYTES = 1024 * 1024
MAX_YAML_NODES = 250_000
MAX_YAML_DEPTH = 64


def parse_yaml(text: str, name: str = "the config") -> Any:
    """``yaml.safe_load`` that refuses alias bombs, recursive aliases and absurd nesting.

    An alias is a reference, so ``safe_load`` itself stays small, but everything that walks the
    result afterwards (``${VAR}`` expansion, validation) sees each alias expanded: ten levels of
    ten aliases are 10**10 values. The composed node graph is therefore measured *as expanded*
    before anything is constructed, in time linear in the document.
    """
    loader = _BoundedLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise ConfigError(f"{name} is not valid YAML{where}: {problem}", key="<root>") from exc
        except RecursionError:
            raise ConfigError(
                f"{name} is nested too deeply to read; flatten it (at most {MAX_YAML_DEPTH} levels)", key="<root>"
            ) from None
        if node is None:
            return None
        _check_expanded_size(node, name)
        return loader.construct_document(node)
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while scanning.

    PyYAML's scanner does work per open level for each token, so a file of a million ``[`` would
    take hours before the composer's recursion limit is ever reached.
    """

    def _too_deep(self) -> yaml.YAMLError:
        return yaml.scanner.ScannerError(
            None, None, f"nested more than {MAX_YAML_DEPTH} levels deep; flatten it", self.get_mark()
        )

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= MAX_YAML_DEPTH:
            raise self._too_deep()
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column: int) -> bool:
        if len(self.indents) >= MAX_YAML_DEPTH:
            raise self._too_deep()
        return bool(super().add_indent(column))


def _check_expanded_size(root: yaml.Node, name: str) -> None:
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        mark = node.start_mark
        if key in open_nodes:
            raise ConfigError(
                f"{name} has a recursive alias (a value that contains itself, line {mark.line + 1}); "
                "YAML anchors must not refer to themselves",
                key="<root>",
            )
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(
                f"{name} is nested more than {MAX_YAML_DEPTH} levels deep (line {mark.line + 1}); flatten it",
                key="<root>",
            )
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        open_nodes.discard(key)
        if total > MAX_YAML_NODES:
            raise ConfigError(
                f"{name}: has more than {MAX_YAML_NODES} values once YAML aliases are expanded (an alias bomb?); "
                "write the values out or use fewer nested aliases",
                key="<root>",
            )
        sizes[key] = total
        return total

    size(root, 0)
