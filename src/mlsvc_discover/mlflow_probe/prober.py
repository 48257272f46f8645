"""The MLflow prober: is there an MLflow tracking server at this URI, and what does it offer?

Public seam (the ``mlflow`` discoverer uses it; any discoverer with candidate URIs, such as a
Kubernetes one, can too)::

    prober = MlflowProber(ProbeSettings(timeout=5.0))
    target = ProbeTarget.from_uri("http://mlflow.ml.svc:5000", auth=None)
    result = await prober.probe(target)  # ProbeResult, or raises HttpProbeError (a ProbeError)

- :class:`ProbeSettings`: total deadline of one probe (all its requests together), TLS
  (``verify_tls``, ``ca_bundle``), ``check_registry``, ``read_version``, ``max_response_bytes``.
- :class:`ProbeTarget`: a parsed URI and the ``Authorization`` value to send (never printed).
- :class:`ProbeResult`: ``tracking_uri`` (clean), ``registry_available``, ``mlflow_version``.
- :class:`MlflowProber`: ``probe(target)``; ``ssl_context()`` (raises HttpProbeError when the
  CA bundle cannot be loaded, so a caller can fail every target at once instead). One prober
  per configuration: it caches the TLS context. Every probe has its own small HTTP client.

A URI is an MLflow tracking server only when its REST API answers like one, on two counts:

1. ``GET api/2.0/mlflow/experiments/search?max_results=1`` answers 200 with a JSON object whose
   ``experiments``, when present, is a list of objects each with a string ``experiment_id``;
2. something that cannot exist gets MLflow's answer for it, 404 with a JSON object whose
   ``error_code`` is ``RESOURCE_DOES_NOT_EXIST``: a registered model with a random name
   (``registered-models/get``; that answer also means the model registry is available), or,
   when the registry does not answer so or ``check_registry`` is off, an experiment with a
   random name (``experiments/get-by-name``). A server that answers ``{}`` or any fixed JSON to
   every path is therefore not taken for MLflow.

Anything else (a typo, a login page, a reverse proxy's error page, a catch-all JSON API) is a
failure with a precise reason (``kind`` for metrics), never a service. ``/version``
(``read_version``) only adds a fact and never fails a probe.
Credentials are sent only to the origin they were configured for: redirects are followed by
hand and only within that origin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import ssl
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any, Protocol

import httpx

from mlsvc_discover._http import (
    HttpProbeError,
    clean_text,
    format_origin_host,
    format_seconds,
    origin_of,
    read_bounded,
    translate_transport_error,
)
from mlsvc_discover.mlflow_probe.auth import MlflowAuth, basic_authorization
from mlsvc_discover.mlflow_probe.uri import ParsedUri, parse_tracking_uri

__all__ = ["HttpProbeError", "MlflowProber", "ProbeResult", "ProbeSettings", "ProbeTarget"]

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
EXPERIMENTS_PATH = "api/2.0/mlflow/experiments/search?max_results=1"
MISSING_MODEL_PATH = "api/2.0/mlflow/registered-models/get?name="
VERSION_PATH = "version"
MISSING_EXPERIMENT_PATH = "api/2.0/mlflow/experiments/get-by-name?experiment_name="
# 401/403 bodies are read only to tell MLflow's Host-header refusal from a permission problem,
# 404 bodies only for MLflow's error_code.
_HINT_BYTES = 1024
_VERSION_BYTES = 256
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
_MEDIA_RE = re.compile(r"[^A-Za-z0-9.+/_-]")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class ProbeOptions(Protocol):
    """The probe settings a discoverer's config carries (the mlflow and kubernetes ones do)."""

    @property
    def timeout(self) -> float: ...
    @property
    def verify_tls(self) -> bool: ...
    @property
    def ca_bundle(self) -> Path | None: ...
    @property
    def check_registry(self) -> bool: ...
    @property
    def read_version(self) -> bool: ...
    @property
    def max_response_bytes(self) -> int: ...


@dataclass(frozen=True)
class ProbeSettings:
    """How to probe: deadline, TLS, optional checks and the body size limit."""

    timeout: float
    verify_tls: bool = True
    ca_bundle: Path | None = None
    check_registry: bool = True
    read_version: bool = False
    max_response_bytes: int = 1_048_576

    @classmethod
    def of(cls, options: ProbeOptions) -> ProbeSettings:
        """The settings a discoverer's config asks for, field by field."""
        return cls(
            timeout=options.timeout,
            verify_tls=options.verify_tls,
            ca_bundle=options.ca_bundle,
            check_registry=options.check_registry,
            read_version=options.read_version,
            max_response_bytes=options.max_response_bytes,
        )


@dataclass(frozen=True)
class ProbeTarget:
    """One URI ready to probe; holds the Authorization value, so it must never be printed."""

    uri: ParsedUri
    authorization: str | None = field(default=None, repr=False)

    @classmethod
    def from_uri(cls, uri: str, auth: MlflowAuth | None = None) -> ProbeTarget:
        """Parse ``uri`` (ValueError when it cannot be probed); credentials in it win over ``auth``."""
        parsed = parse_tracking_uri(uri)
        if parsed.password is not None:
            return cls(parsed, basic_authorization(parsed.username or "", parsed.password))
        return cls(parsed, auth.authorization() if auth is not None else None)

    @property
    def key(self) -> str:
        return self.uri.clean


@dataclass(frozen=True)
class ProbeResult:
    """What a successful probe learnt."""

    tracking_uri: str
    registry_available: bool
    mlflow_version: str | None


@dataclass(frozen=True)
class _Answer:
    status: int
    media_type: str
    body: bytes


class MlflowProber:
    """Probes URIs for MLflow tracking servers; safe to share across concurrent probes."""

    def __init__(self, settings: ProbeSettings) -> None:
        self.settings = settings
        self._ssl: ssl.SSLContext | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """One TLS context for every probe: loading the CA certificates again for each would cost CPU per URI."""
        if self._ssl is not None:
            return self._ssl
        cfg = self.settings
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
        the square of its connections, and a pool sized for hundreds of probes made the cycle
        CPU-bound until live servers missed their deadline (bench/README.md has the numbers).
        """
        client = httpx.AsyncClient(
            verify=context,
            timeout=httpx.Timeout(self.settings.timeout),
            follow_redirects=False,
            # A probe holds at most two connections at once: its checks in turn, and /version beside them.
            limits=httpx.Limits(max_connections=3, max_keepalive_connections=3),
            headers={"User-Agent": "mlsvc-discover", "Accept-Encoding": "identity"},
        )
        # Probes must not carry state (session cookies of a login page) from one server or cycle to the next.
        client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        return client

    async def probe(self, target: ProbeTarget) -> ProbeResult:
        """Probe one URI within ``settings.timeout``; raises :class:`HttpProbeError` saying why not."""
        context = self.ssl_context()
        async with self._http(context) as client:
            try:
                return await self._probe(client, target)
            except HttpProbeError:
                raise
            except Exception as exc:
                # A bug here must cost one URI, not the cycle; the type is enough to find it.
                log.exception("unexpected error probing %s", target.key)
                raise HttpProbeError(f"unexpected error: {type(exc).__name__}", kind="error") from exc

    async def _probe(self, client: httpx.AsyncClient, t: ProbeTarget) -> ProbeResult:
        cfg = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.timeout
        version_task: asyncio.Task[str | None] | None = None
        try:
            async with asyncio.timeout_at(deadline):
                await self._check_tracking(client, t)
                # /version runs beside the other checks and may only ever cost time, never the probe.
                if cfg.read_version:
                    version_task = asyncio.create_task(self._version(client, t, deadline))
                # One after the other on the first request's keep-alive connection: at fleet scale
                # the probe is CPU-bound. A missing registered model proves MLflow and its registry
                # in one request; only when the registry does not answer so is a missing experiment
                # asked for, so a real MLflow server costs two requests, as before the check.
                registry = cfg.check_registry and await self._registry_available(client, t)
                if not registry:
                    await self._check_mlflow_error(client, t)
        except TimeoutError:
            if version_task is not None:
                version_task.cancel()
            raise HttpProbeError(f"timed out after {format_seconds(cfg.timeout)}", kind="timeout") from None
        except BaseException:
            if version_task is not None:
                version_task.cancel()
            raise
        version = await version_task if version_task is not None else None
        return ProbeResult(tracking_uri=t.key, registry_available=registry, mlflow_version=version)

    async def _check_tracking(self, client: httpx.AsyncClient, t: ProbeTarget) -> None:
        answer = await self._get(client, t, EXPERIMENTS_PATH, limit=self.settings.max_response_bytes)
        if answer.status in (401, 403):
            raise self._auth_failure(t, answer)
        if answer.status >= 500:
            raise HttpProbeError(f"HTTP {answer.status} from server", kind="server_error")
        if answer.status != 200:
            raise HttpProbeError(f"not an MLflow tracking server: HTTP {answer.status}", kind="not_mlflow")
        data = _json_object(answer)
        # MLflow answers {} when there are no experiments; anything else must carry the list.
        experiments = data.get("experiments") if data else []
        if not isinstance(experiments, list):
            raise HttpProbeError("not an MLflow tracking server: JSON without an experiments list", kind="not_mlflow")
        if not all(isinstance(e, dict) and isinstance(e.get("experiment_id"), str) for e in experiments):
            raise HttpProbeError(
                "not an MLflow tracking server: experiments without an experiment_id", kind="not_mlflow"
            )

    async def _check_mlflow_error(self, client: httpx.AsyncClient, t: ProbeTarget) -> None:
        """Ask for an experiment that cannot exist: MLflow answers 404 RESOURCE_DOES_NOT_EXIST.

        The second signal: a server that answers ``{}`` or any fixed JSON to every path (a
        catch-all API, a mock) passes the experiments check but not this one. The name is
        random per probe, so no fixed answer can fake it.
        """
        answer = await self._ask_missing(client, t, MISSING_EXPERIMENT_PATH)
        if answer.status in (401, 403):
            raise self._auth_failure(t, answer)
        if answer.status >= 500:
            raise HttpProbeError(f"HTTP {answer.status} from server", kind="server_error")
        if not _is_missing_resource(answer):
            raise HttpProbeError(
                f"not an MLflow tracking server: HTTP {answer.status} for a missing experiment, "
                "not MLflow's 404 RESOURCE_DOES_NOT_EXIST",
                kind="not_mlflow",
            )

    async def _ask_missing(self, client: httpx.AsyncClient, t: ProbeTarget, path: str) -> _Answer:
        name = f"mlsvc-discover-probe-{secrets.token_hex(8)}"
        return await self._get(client, t, path + name, limit=_HINT_BYTES, truncate=True)

    def _auth_failure(self, t: ProbeTarget, answer: _Answer) -> HttpProbeError:
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

    async def _registry_available(self, client: httpx.AsyncClient, t: ProbeTarget) -> bool:
        """Whether a random missing registered model gets MLflow's 404 RESOURCE_DOES_NOT_EXIST."""
        try:
            return _is_missing_resource(await self._ask_missing(client, t, MISSING_MODEL_PATH))
        except HttpProbeError:
            return False

    async def _version(self, client: httpx.AsyncClient, t: ProbeTarget, deadline: float) -> str | None:
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
        self, client: httpx.AsyncClient, t: ProbeTarget, path: str, *, limit: int, truncate: bool = False
    ) -> _Answer:
        """GET ``path`` under the target, following redirects only within its origin.

        Bodies of 2xx answers are read up to ``limit``; 401/403/404 bodies only far enough for a
        hint or an MLflow ``error_code``; others not at all, as their status already says everything.
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
                    elif resp.status_code in (401, 403, 404):
                        # 401/403 for a hint, 404 for MLflow's error_code; never more than a few KiB.
                        body = await read_bounded(resp, _HINT_BYTES, truncate=True)
                    else:
                        body = b""
                    return _Answer(resp.status_code, _media_type(resp), body)
        except httpx.HTTPError as exc:
            raise translate_transport_error(exc, self.settings.timeout) from exc
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


def _is_missing_resource(answer: _Answer) -> bool:
    """MLflow's answer for a resource that does not exist: 404 with that ``error_code``."""
    if answer.status != 404:
        return False
    try:
        return _json_object(answer).get("error_code") == "RESOURCE_DOES_NOT_EXIST"
    except HttpProbeError:
        return False


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
