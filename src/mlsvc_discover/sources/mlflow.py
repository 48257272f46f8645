"""The ``mlflow`` discoverer: probe listed MLflow tracking servers over HTTP.

A URI is reported as an MLflow tracking server only when its REST API answers like one
(``experiments/search`` returns a JSON object), so a typo, a login page or a reverse proxy's
error page is a failed item with a precise reason, never a service. Every URI has its own scope
so that a server that is down only puts its own service on hold.

Credentials (per discoverer, per URI, or in the URI itself) are sent only to the origin they
were configured for: redirects are followed by hand and only within that origin, and the
credential-free, normalised URI is what leaves this module as key, trackingUri and label.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import ConfigDict, Discriminator, Field, SecretStr, Tag, field_validator, model_validator

from mlsvc_discover.config import Duration
from mlsvc_discover.openmetadata.models import validate_service_name
from mlsvc_discover.sources._http import (
    HttpProbeError,
    clean_text,
    format_origin_host,
    format_seconds,
    misplaced_userinfo,
    origin_of,
    read_bounded,
    redact_uri,
    strip_userinfo,
    translate_transport_error,
)
from mlsvc_discover.sources.base import (
    Discoverer,
    DiscovererConfig,
    DiscoveryResult,
    Finding,
    ItemFailure,
    PlatformKind,
    ScopeOutcome,
    ServiceMetadata,
    StrictModel,
)

__all__ = [
    "MlflowAuth",
    "MlflowDiscoverer",
    "MlflowDiscovererConfig",
    "MlflowTarget",
    "normalise_tracking_uri",
    "redact_uri",
]

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
EXPERIMENTS_PATH = "api/2.0/mlflow/experiments/search?max_results=1"
REGISTRY_PATH = "api/2.0/mlflow/registered-models/search?max_results=1"
VERSION_PATH = "version"
# 401/403 bodies are read only to tell MLflow's Host-header refusal from a permission problem.
_HINT_BYTES = 1024
_VERSION_BYTES = 256
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
_HOST_RE = re.compile(r"^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$")
_MEDIA_RE = re.compile(r"[^A-Za-z0-9.+/_-]")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

_ENCODE_HINT = "if it belongs to the password, percent-encode the password (@ %40, / %2F, ? %3F, # %23, : %3A)"

# Secrets reach these models; pydantic must not echo raw input values into error messages.
_SECRET_SAFE = ConfigDict(hide_input_in_errors=True)


# --- URIs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ParsedUri:
    clean: str
    scheme: str
    host: str
    port: int
    path: str
    username: str | None
    password: str | None = field(repr=False)
    raw_password: str | None = field(repr=False)


def _parse_tracking_uri(uri: str) -> _ParsedUri:
    """Validate and normalise one tracking URI; ValueError messages quote it redacted."""
    shown = repr(redact_uri(uri))
    text = uri.strip()
    if not text:
        raise ValueError("a tracking URI must not be empty")
    if re.search(r"[\s\x00-\x1f\x7f]", text):
        # urlsplit silently drops tabs and newlines; refuse instead of probing something else.
        raise ValueError(f"{shown} contains whitespace or control characters")
    if misplaced_userinfo(text):
        # Else urlsplit reads "http://u:pa/ss@h" as host "u", and the password ends up in the path.
        raise ValueError(f"{shown} has '@' after the host; {_ENCODE_HINT}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{shown} is not a valid URI ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{shown} must start with http:// or https://")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"{shown} has no host; write e.g. http://mlflow.example.com:5000")
    if ":" in host or host.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{shown} has an invalid IPv6 host") from None
    else:
        try:
            ascii_host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise ValueError(f"{shown} has an invalid host name") from None
        if not _HOST_RE.match(ascii_host):
            raise ValueError(f"{shown} has an invalid host name")
        host = ascii_host
    if port == 0:
        raise ValueError(f"{shown} has port 0")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"{shown} must not have a query or fragment; give the server's base URL")
    if port is None:
        port = 443 if scheme == "https" else 80
    username, raw_password = parts.username, parts.password
    if (username is not None or raw_password is not None) and not (username and raw_password):
        raise ValueError(f"{shown} has incomplete credentials; give both user and password, or use `auth`")
    path = parts.path.rstrip("/")
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return _ParsedUri(
        clean=f"{scheme}://{netloc}{path}",
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        username=unquote(username) if username else None,
        password=unquote(raw_password) if raw_password else None,
        raw_password=raw_password or None,
    )


def normalise_tracking_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``(clean uri, username, password)`` of an http(s) tracking URI.

    The clean URI has a lower-case scheme and host, an explicit port, no userinfo and no
    trailing slash, so two spellings of one server get one key. User and password come back
    percent-decoded. Raises ValueError (naming the URI redacted) when it cannot be probed.
    """
    parsed = _parse_tracking_uri(uri)
    return parsed.clean, parsed.username, parsed.password


def _clean_registry_uri(uri: str) -> str:
    """A registry URI as it may be published: normalised when http(s), credentials stripped always."""
    if urlsplit(uri.strip()).scheme.lower() in ("http", "https"):
        return _parse_tracking_uri(uri).clean
    if misplaced_userinfo(uri.strip()):
        raise ValueError(f"registry_uri {redact_uri(uri.strip())!r} has '@' after the host; {_ENCODE_HINT}")
    return strip_userinfo(uri.strip())


def _registry_uri_secrets(uri: str | None) -> list[str]:
    if not uri:
        return []
    try:
        raw = urlsplit(uri.strip()).password
    except ValueError:
        return []
    return [raw, unquote(raw)] if raw else []


# --- config ----------------------------------------------------------------------------------


class MlflowAuth(StrictModel):
    """Credentials for MLflow servers: a bearer token, or a user name and password (basic auth)."""

    model_config = _SECRET_SAFE

    token: SecretStr | None = Field(default=None, description="Bearer token, e.g. `${MLFLOW_TRACKING_TOKEN}`.")
    username: str | None = Field(default=None, description="User name for HTTP basic auth (with `password`).")
    password: SecretStr | None = Field(
        default=None, description="Password for HTTP basic auth, e.g. `${MLFLOW_TRACKING_PASSWORD}`."
    )

    @model_validator(mode="after")
    def _one_scheme(self) -> MlflowAuth:
        token = self.token.get_secret_value() if self.token is not None else None
        password = self.password.get_secret_value() if self.password is not None else None
        if token is not None and (self.username is not None or password is not None):
            raise ValueError("set either token, or username and password, not both")
        if token is not None:
            if not token:
                raise ValueError("token is empty; is its environment variable set?")
            return self
        if self.username is None and password is None:
            raise ValueError("set token, or username and password")
        if not self.username or not password:
            raise ValueError("username and password go together; set both (non-empty) or use token")
        return self

    def authorization(self) -> str:
        """The ``Authorization`` header value these credentials produce."""
        if self.token is not None:
            return f"Bearer {self.token.get_secret_value()}"
        assert self.password is not None  # guaranteed by the validator
        return _basic(self.username or "", self.password.get_secret_value())

    def secret_values(self) -> list[str]:
        return [s.get_secret_value() for s in (self.token, self.password) if s is not None]


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class MlflowTarget(StrictModel):
    """One tracking server with its own name, credentials, metadata or labels."""

    model_config = _SECRET_SAFE

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
        _parse_tracking_uri(value)
        return value

    @field_validator("registry_uri")
    @classmethod
    def _valid_registry_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("registry_uri must not be empty; leave it out to use the tracking URI")
        _clean_registry_uri(value)
        return value

    @model_validator(mode="after")
    def _one_credential_source(self) -> MlflowTarget:
        if self.auth is not None and _parse_tracking_uri(self.uri).password is not None:
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

    model_config = _SECRET_SAFE

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
            "server; off by default because at fleet scale it is a third of the probe's cost)."
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
                _parse_tracking_uri(item)
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
            clean = _parse_tracking_uri(uri).clean
            if clean in seen:
                raise ValueError(
                    f"tracking_uris lists {clean} twice ({seen[clean]!r} and {redact_uri(uri)!r}); keep one"
                )
            seen[clean] = redact_uri(uri)
        return self


# --- discovery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """One URI ready to probe; holds the Authorization value, so it must never be printed."""

    uri: _ParsedUri
    registry_uri: str
    name: str | None
    metadata: ServiceMetadata | None
    labels: dict[str, str]
    authorization: str | None = field(repr=False)

    @property
    def key(self) -> str:
        return self.uri.clean


@dataclass(frozen=True)
class _Answer:
    status: int
    media_type: str
    body: bytes


class MlflowDiscoverer(Discoverer[MlflowDiscovererConfig]):
    """Probes every configured MLflow URI concurrently; one scope and at most one finding each."""

    config_model = MlflowDiscovererConfig

    def __init__(self, config: MlflowDiscovererConfig) -> None:
        super().__init__(config)
        self._ssl: ssl.SSLContext | None = None
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
            context = self._ssl_context()
        except HttpProbeError as exc:
            # Without a client nothing can be probed; every scope says so rather than looking empty.
            result.scopes.append(ScopeOutcome(self.root_scope, ok=False, error="; ".join([*root_errors, exc.reason])))
            for t in targets:
                result.scopes.append(ScopeOutcome((*self.root_scope, t.key), ok=False, error=exc.reason))
                result.failures.append(ItemFailure(self.name, t.key, exc.reason, exc.kind))
            return result

        result.scopes.append(ScopeOutcome(self.root_scope, ok=not root_errors, error="; ".join(root_errors) or None))
        gate = asyncio.Semaphore(cfg.max_concurrency)
        outcomes = await asyncio.gather(*(self._guarded(gate, context, t) for t in targets))
        for t, outcome in zip(targets, outcomes, strict=True):
            scope = (*self.root_scope, t.key)
            if isinstance(outcome, HttpProbeError):
                log.debug("mlflow probe of %s failed: %s", t.key, outcome.reason)
                result.scopes.append(ScopeOutcome(scope, ok=False, error=outcome.reason))
                result.failures.append(ItemFailure(self.name, t.key, outcome.reason, outcome.kind))
            else:
                result.scopes.append(ScopeOutcome(scope, ok=True))
                result.findings.append(outcome)
        return result

    async def aclose(self) -> None:
        """Nothing to release: every probe closes its own client."""

    def secrets(self) -> Sequence[str]:
        cfg = self.config
        found: list[str] = []
        if cfg.auth is not None:
            found += cfg.auth.secret_values()
        for item in cfg.tracking_uris:
            target = MlflowTarget(uri=item) if isinstance(item, str) else item
            parsed = _parse_tracking_uri(target.uri)
            found += [s for s in (parsed.password, parsed.raw_password) if s]
            if target.auth is not None:
                found += target.auth.secret_values()
            found += _registry_uri_secrets(target.registry_uri)
        found += self._file_secrets
        return tuple(dict.fromkeys(s for s in found if s))

    # -- targets --

    def _target(self, item: str | MlflowTarget) -> _Target:
        target = MlflowTarget(uri=item) if isinstance(item, str) else item
        parsed = _parse_tracking_uri(target.uri)
        auth = target.auth or self.config.auth
        if parsed.password is not None:
            authorization: str | None = _basic(parsed.username or "", parsed.password)
        else:
            authorization = auth.authorization() if auth is not None else None
        registry = _clean_registry_uri(target.registry_uri) if target.registry_uri else parsed.clean
        return _Target(
            uri=parsed,
            registry_uri=registry,
            name=target.name,
            metadata=target.metadata,
            labels=dict(target.labels),
            authorization=authorization,
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
            secrets += [s for s in (target.uri.password, target.uri.raw_password) if s]
            if target.key in known:
                result.skipped.append(ItemFailure(self.name, target.key, f"listed again at {where}", "duplicate"))
                continue
            known.add(target.key)
            targets.append(target)
        self._file_secrets = tuple(secrets)
        return errors

    # -- probing --

    def _ssl_context(self) -> ssl.SSLContext:
        """One TLS context for every probe: loading CA certificates costs ~10 ms each time."""
        if self._ssl is not None:
            return self._ssl
        cfg = self.config
        try:
            if not cfg.verify_tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif cfg.ca_bundle is not None:
                context = ssl.create_default_context(cafile=str(cfg.ca_bundle))
            else:
                import certifi

                # httpx's own default: certifi's bundle, not whatever the system happens to have.
                context = ssl.create_default_context(cafile=certifi.where())
        except (OSError, ssl.SSLError) as exc:
            detail = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
            raise HttpProbeError(f"cannot load ca_bundle {cfg.ca_bundle}: {detail}", kind="tls") from exc
        self._ssl = context
        return context

    def _http(self, context: ssl.SSLContext) -> httpx.AsyncClient:
        """A client for one probe.

        One small client per probe, not one shared pool: httpcore's pool bookkeeping grows with
        the square of its connections, and with a pool sized for hundreds of probes the cycle
        became CPU-bound and probes of live servers missed their deadline (bench/README.md:
        73 of 900 live servers found with a shared 768-connection pool, all 900 with this).
        """
        client = httpx.AsyncClient(
            verify=context,
            timeout=httpx.Timeout(self.config.timeout),
            follow_redirects=False,
            # A probe holds at most three connections (tracking, registry and version checks).
            limits=httpx.Limits(max_connections=3, max_keepalive_connections=3),
            headers={"User-Agent": "mlsvc-discover", "Accept-Encoding": "identity"},
        )
        # Probes must not carry state (session cookies of a login page) from one server or cycle to the next.
        client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        return client

    async def _guarded(
        self, gate: asyncio.Semaphore, context: ssl.SSLContext, target: _Target
    ) -> Finding | HttpProbeError:
        async with gate, self._http(context) as client:
            try:
                return await self._probe(client, target)
            except HttpProbeError as exc:
                return exc
            except Exception as exc:
                # A bug here must cost one URI, not the cycle; the type is enough to find it.
                log.exception("unexpected error probing %s", target.key)
                return HttpProbeError(f"unexpected error: {type(exc).__name__}", kind="error")

    async def _probe(self, client: httpx.AsyncClient, t: _Target) -> Finding:
        cfg = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.timeout
        version_task: asyncio.Task[str | None] | None = None
        try:
            async with asyncio.timeout_at(deadline):
                await self._check_tracking(client, t)
                # /version runs beside the registry check and may only ever cost time, never the probe.
                if cfg.read_version:
                    version_task = asyncio.create_task(self._version(client, t, deadline))
                registry = await self._registry_available(client, t) if cfg.check_registry else False
        except TimeoutError:
            if version_task is not None:
                version_task.cancel()
            raise HttpProbeError(f"timed out after {format_seconds(cfg.timeout)}", kind="timeout") from None
        except BaseException:
            if version_task is not None:
                version_task.cancel()
            raise
        version = await version_task if version_task is not None else None
        u = t.uri
        labels = {
            "host": u.host,
            "port": str(u.port),
            "scheme": u.scheme,
            "path": u.path.strip("/"),
            "discoverer": self.name,
            "mlflow_version": version or "unknown",
            **t.labels,
        }
        return Finding(
            kind=PlatformKind.MLFLOW,
            source=self.name,
            scope=(*self.root_scope, t.key),
            key=t.key,
            attributes={
                "tracking_uri": t.key,
                "registry_uri": t.registry_uri,
                "registry_available": registry,
                "mlflow_version": version,
            },
            labels=labels,
            metadata=cfg.defaults.merged(t.metadata),
            name=t.name,
            name_template=cfg.name_template,
        )

    async def _check_tracking(self, client: httpx.AsyncClient, t: _Target) -> None:
        answer = await self._get(client, t, EXPERIMENTS_PATH, limit=self.config.max_response_bytes)
        if answer.status in (401, 403):
            raise self._auth_failure(t, answer)
        if answer.status >= 500:
            raise HttpProbeError(f"HTTP {answer.status} from server", kind="server_error")
        if answer.status != 200:
            raise HttpProbeError(f"not an MLflow tracking server: HTTP {answer.status}", kind="not_mlflow")
        data = _json_object(answer)
        if data and not isinstance(data.get("experiments"), list):
            raise HttpProbeError("not an MLflow tracking server: JSON without an experiments list", kind="not_mlflow")

    def _auth_failure(self, t: _Target, answer: _Answer) -> HttpProbeError:
        if answer.status == 401:
            hint = "check the credentials for this URI" if t.authorization else "this URI needs `auth`"
            return HttpProbeError(f"HTTP 401: unauthorized; {hint}", kind="unauthorized")
        if b"invalid host header" in answer.body.lower():
            return HttpProbeError(
                "HTTP 403: the server refuses this host name; add it to the server's --allowed-hosts",
                kind="unauthorized",
            )
        return HttpProbeError(
            "HTTP 403: forbidden; the credentials lack permission on this server", kind="unauthorized"
        )

    async def _registry_available(self, client: httpx.AsyncClient, t: _Target) -> bool:
        try:
            answer = await self._get(client, t, REGISTRY_PATH, limit=self.config.max_response_bytes)
            if answer.status != 200:
                return False
            data = _json_object(answer)
        except HttpProbeError:
            return False
        return not data or isinstance(data.get("registered_models"), list)

    async def _version(self, client: httpx.AsyncClient, t: _Target, deadline: float) -> str | None:
        try:
            async with asyncio.timeout_at(deadline):
                answer = await self._get(client, t, VERSION_PATH, limit=_VERSION_BYTES, truncate=True)
        except (HttpProbeError, TimeoutError):
            return None
        if answer.status != 200:
            return None
        text = answer.body.decode("utf-8", "replace").strip()
        return text if _VERSION_RE.match(text) else None

    async def _get(
        self, client: httpx.AsyncClient, t: _Target, path: str, *, limit: int, truncate: bool = False
    ) -> _Answer:
        """GET ``path`` under the target, following redirects only within its origin.

        Bodies of 2xx answers are read up to ``limit``; 401/403 bodies only far enough for a
        hint; others not at all, as their status already says everything.
        """
        url = httpx.URL(f"{t.key}/{path}")
        home = origin_of(url)
        seen = {str(url)}
        headers = {"Accept": "application/json, text/plain;q=0.5"}
        if t.authorization is not None:
            headers["Authorization"] = t.authorization
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with client.stream("GET", url, headers=headers) as resp:
                    if resp.status_code in _REDIRECTS:
                        url = _next_hop(resp, home, seen)
                        continue
                    if 200 <= resp.status_code < 300:
                        body = await read_bounded(resp, limit, truncate=truncate)
                    elif resp.status_code in (401, 403):
                        body = await read_bounded(resp, _HINT_BYTES, truncate=True)
                    else:
                        body = b""
                    return _Answer(resp.status_code, _media_type(resp), body)
        except httpx.HTTPError as exc:
            raise translate_transport_error(exc, self.config.timeout) from exc
        raise HttpProbeError(f"too many redirects (more than {MAX_REDIRECTS})", kind="redirect")


def _next_hop(resp: httpx.Response, home: tuple[str, str, int], seen: set[str]) -> httpx.URL:
    """Where a redirect may be followed to; anything leaving the origin is refused, not followed."""
    location = resp.headers.get("location")
    if not location:
        raise HttpProbeError(f"HTTP {resp.status_code} redirect without a Location", kind="redirect")
    try:
        target = resp.url.join(location)
        # Userinfo in a Location would make httpx send basic auth the config never asked for.
        target = target.copy_with(userinfo=b"")
        there = origin_of(target)
    except (httpx.InvalidURL, ValueError):
        raise HttpProbeError("redirect to an invalid URL refused", kind="redirect") from None
    if there[1:] != home[1:]:
        raise HttpProbeError(f"redirect to another host ({format_origin_host(there)}) refused", kind="redirect")
    if there[0] != home[0]:
        raise HttpProbeError(f"redirect from {home[0]} to {there[0]} refused", kind="redirect")
    if str(target) in seen:
        raise HttpProbeError(f"redirect loop at {clean_text(target.path)}", kind="redirect")
    seen.add(str(target))
    return target


def _media_type(resp: httpx.Response) -> str:
    raw = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return _MEDIA_RE.sub("", raw)[:64]


def _json_object(answer: _Answer) -> dict[str, Any]:
    """The answer's JSON object, or the ``not_mlflow`` failure saying what it was instead."""
    media = answer.media_type
    if media != "application/json" and not media.endswith("+json"):
        shown = media or "no content type"
        raise HttpProbeError(f"not an MLflow tracking server: response is not JSON ({shown})", kind="not_mlflow")
    try:
        data = json.loads(answer.body)
    except (ValueError, RecursionError):
        raise HttpProbeError("not an MLflow tracking server: invalid JSON", kind="not_mlflow") from None
    if not isinstance(data, dict):
        raise HttpProbeError(
            f"not an MLflow tracking server: JSON {type(data).__name__} instead of an object", kind="not_mlflow"
        )
    return data
