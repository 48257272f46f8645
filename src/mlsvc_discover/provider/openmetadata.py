"""OpenMetadata client for ML model services (async, httpx).

What it relies on is in ``shared/openmetadata/README.md``. Writes go through
``PUT /v1/services/mlmodelServices/bulk`` in batches; a server without that route answers 404
or 405, after which the client writes one ``PUT`` per service with bounded concurrency and
remembers the answer for the life of the process. How many writes are in flight follows what the
server shows (429/503, rising latency), within configured bounds: see ``_limiter``.

Retries: connection errors, timeouts, 429 and 503 (honouring ``Retry-After``) and 5xx are retried with
exponential backoff and full jitter; 400, 401, 403, 404 and 409 never are. Redirects are not
followed, so the token is only ever sent to the configured host.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from mlsvc_discover import __version__
from mlsvc_discover._errors import (
    OpenMetadataAuthError,
    OpenMetadataError,
    OpenMetadataRequestError,
    OpenMetadataUnavailable,
)
from mlsvc_discover.config import OpenMetadataConfig
from mlsvc_discover.provider._limiter import UNPACED, AdaptiveLimit, ConcurrencyLimiter, Slot

__all__ = ["SERVICES_PATH", "OpenMetadataClient", "WriteResult", "WritesStopped"]

log = logging.getLogger(__name__)

SERVICES_PATH = "/v1/services/mlmodelServices"
LIST_FIELDS = "owners,tags,domains"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

Outcome = Literal["created", "updated", "unchanged", "restored", "deleted", "failed"]


@dataclass(frozen=True)
class WriteResult:
    """The outcome of one service write; ``message`` explains a failure."""

    name: str
    outcome: Outcome
    status: int | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


class WritesStopped(OpenMetadataAuthError):
    """OpenMetadata refused the agent (401/403) part-way through :meth:`OpenMetadataClient.upsert`.

    ``results`` are the writes it confirmed before the refusal: applied, whatever happens next.
    """

    def __init__(self, cause: OpenMetadataAuthError, results: list[WriteResult]) -> None:
        super().__init__(str(cause), status=cause.status)
        self.results = results


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return f"HTTP {response.status_code}: {body['message'][:500]}"
    return f"HTTP {response.status_code}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenMetadataClient:
    """A small client for the ML model service endpoints.

    ``transport`` lets tests plug an ``httpx.MockTransport``; ``stop`` is checked between
    writes so that a shutdown stops after the write in flight.
    """

    def __init__(
        self,
        config: OpenMetadataConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not config.host:
            raise OpenMetadataError("openmetadata.host is not set")
        self._config = config
        self._sleep = sleep
        self._bulk_supported: bool | None = None if config.use_bulk else False
        headers = {"Accept": "application/json", "User-Agent": f"mlsvc-discover/{__version__}"}
        if config.token is not None:
            headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
        verify: Any = str(config.ca_bundle) if config.ca_bundle else config.verify_tls
        # As many connections as concurrent writes and no more: httpcore's pool bookkeeping grows
        # with its size (measured ~2.5 ms CPU per PUT with twice the connections, bench/README.md).
        limits = httpx.Limits(max_connections=config.max_concurrency, max_keepalive_connections=config.max_concurrency)
        self._http = httpx.AsyncClient(
            base_url=config.host,
            headers=headers,
            timeout=httpx.Timeout(config.timeout),
            follow_redirects=False,
            verify=verify,
            limits=limits,
            transport=transport,
        )
        self.limiter = ConcurrencyLimiter(
            AdaptiveLimit(
                minimum=config.min_concurrency, maximum=config.max_concurrency, initial=config.initial_concurrency
            )
        )
        self.requests_sent = 0

    @property
    def bulk_supported(self) -> bool | None:
        """None until the first bulk write tells; then whether the server has the bulk route."""
        return self._bulk_supported

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> OpenMetadataClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- transport with retries ----------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        retry: bool = True,
        ok_statuses: Sequence[int] = (),
        slot: Slot = UNPACED,
    ) -> httpx.Response:
        attempts = 1 + (self._config.retries if retry else 0)
        delay = self._config.backoff_initial
        last: str = ""
        for attempt in range(1, attempts + 1):
            wait: float | None = None
            try:
                self.requests_sent += 1
                slot.sent()
                response = await self._http.request(method, path, params=params, json=json)
            except httpx.TimeoutException as exc:
                slot.answered(None, timed_out=True)
                last = f"timed out after {self._config.timeout:g}s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                slot.answered(None)
                last = f"connection failed ({type(exc).__name__})"
            else:
                slot.answered(response.status_code)
                status = response.status_code
                if status < 300 or status in ok_statuses:
                    return response
                if 300 <= status < 400:
                    where = response.headers.get("Location", "?")
                    raise OpenMetadataRequestError(
                        f"{method} {path}: unexpected redirect (HTTP {status}) to {where!r}; redirects are not "
                        "followed so the token never leaves the configured host: set openmetadata.host to the "
                        "final URL",
                        status=status,
                    )
                if status == 401:
                    raise OpenMetadataAuthError(
                        f"{method} {path}: {_error_message(response)}; the token was rejected: check "
                        "openmetadata.token / OPENMETADATA_JWT_TOKEN (expired?)",
                        status=status,
                    )
                if status == 403:
                    raise OpenMetadataAuthError(
                        f"{method} {path}: {_error_message(response)}; give the bot permission to create and "
                        "edit ML model services",
                        status=status,
                    )
                if status not in _RETRY_STATUSES:
                    raise OpenMetadataRequestError(f"{method} {path}: {_error_message(response)}", status=status)
                last = _error_message(response)
                if status in (429, 503):
                    wait = _retry_after(response)
            if attempt == attempts:
                break
            pause = min(self._config.backoff_max, wait if wait is not None else random.uniform(0, delay))
            log.debug("retrying %s %s in %.2fs after %s (attempt %d/%d)", method, path, pause, last, attempt, attempts)
            await slot.outside(self._sleep(pause))
            delay = min(self._config.backoff_max, delay * 2)
        raise OpenMetadataUnavailable(f"{method} {path}: {last} (after {attempts} attempts)")

    # --- reads ---------------------------------------------------------------------------

    async def server_version(self) -> str | None:
        response = await self._request("GET", "/v1/system/version")
        body = response.json()
        return str(body.get("version")) if isinstance(body, dict) else None

    async def list_services(self, *, include: str = "all") -> list[dict[str, Any]]:
        """Every ML model service, soft-deleted ones included, following ``paging.after``."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": self._config.page_size, "fields": LIST_FIELDS, "include": include}
        while True:
            response = await self._request("GET", SERVICES_PATH, params=params)
            try:
                body = response.json()
                data = body["data"]
                after = (body.get("paging") or {}).get("after")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise OpenMetadataUnavailable(f"GET {SERVICES_PATH}: unexpected response body ({exc})") from exc
            out.extend(d for d in data if isinstance(d, dict))
            if not after:
                return out
            params = {**params, "after": after}

    # --- writes --------------------------------------------------------------------------

    async def put_one(
        self,
        body: dict[str, Any],
        *,
        restored: bool = False,
        stop: asyncio.Event | None = None,
        halt: asyncio.Event | None = None,
    ) -> WriteResult | None:
        """One PUT; None when ``stop`` (or ``halt``) was set before its turn came (nothing sent)."""
        name = str(body.get("name"))
        try:
            async with self.limiter.slot() as slot:
                # Checked once a slot is held: gather() starts every write at once, so a check
                # before the limiter would let every queued write through after a stop.
                if _stopped(stop, halt):
                    return None
                response = await self._request("PUT", SERVICES_PATH, json=body, slot=slot)
        except OpenMetadataAuthError:
            raise
        except OpenMetadataError as exc:
            return WriteResult(name, "failed", exc.status, str(exc))
        change = response.headers.get("X-OpenMetadata-Change", "")
        if restored:
            outcome: Outcome = "restored"
        elif response.status_code == 201 or change == "entityCreated":
            outcome = "created"
        elif change == "entityNoChange":
            outcome = "unchanged"
        else:
            outcome = "updated"
        return WriteResult(name, outcome, response.status_code)

    async def _put_bulk(
        self,
        bodies: list[dict[str, Any]],
        expected: dict[str, Outcome],
        stop: asyncio.Event | None = None,
        halt: asyncio.Event | None = None,
    ) -> list[WriteResult] | None:
        """One bulk request; None when the server has no bulk route; [] when stopped before it.

        Only an answer from the server settles whether it has the route: a bulk request that
        failed (5xx, reset, timeout) says nothing about it, so it leaves the question open
        instead of sending a bulk request per batch for the rest of the process.
        """
        async with self.limiter.slot() as slot:
            if _stopped(stop, halt):
                return []
            try:
                response = await self._request(
                    "PUT", f"{SERVICES_PATH}/bulk", json=bodies, ok_statuses=(404, 405), slot=slot
                )
            except OpenMetadataAuthError:
                raise
            except OpenMetadataError as exc:
                return [WriteResult(str(b["name"]), "failed", exc.status, str(exc)) for b in bodies]
        if response.status_code in (404, 405):
            if self._bulk_supported is not False:
                log.info("OpenMetadata has no bulk route for ML model services; writing one PUT per service")
            self._bulk_supported = False
            return None
        self._bulk_supported = True
        try:
            result = response.json()
            succeeded = result.get("successRequest") or []
            failed = result.get("failedRequest") or []
        except (ValueError, AttributeError) as exc:
            msg = f"bulk response is not a BulkOperationResult ({exc})"
            return [WriteResult(str(b["name"]), "failed", response.status_code, msg) for b in bodies]
        out: dict[str, WriteResult] = {}
        for item in failed:
            name = _item_name(item)
            if name is not None:
                message = str(item.get("message") or "failed")
                out[name] = WriteResult(name, "failed", _item_status(item), message)
        for item in succeeded:
            name = _item_name(item)
            if name is not None and name not in out:
                out[name] = WriteResult(name, expected.get(name, "updated"), response.status_code)
        results = []
        for b in bodies:
            name = str(b["name"])
            results.append(
                out.get(name)
                or WriteResult(
                    name, "failed", response.status_code, "not reported in the bulk result; retried next cycle"
                )
            )
        return results

    async def upsert(
        self,
        bodies: Sequence[dict[str, Any]],
        *,
        expected: dict[str, Outcome] | None = None,
        stop: asyncio.Event | None = None,
    ) -> list[WriteResult]:
        """Create or update every body; bulk where the server has it, else one PUT each.

        An auth error (401/403) stops every write not yet sent and propagates as
        :class:`WritesStopped`, which carries the writes confirmed before it: the caller stops
        writing for the cycle and can still tell what was applied. Services not written because
        ``stop`` was set are absent from the result.
        """
        expected = expected or {}
        if not bodies:
            return []
        results: list[WriteResult] = []
        refused: list[OpenMetadataAuthError] = []
        # Set at the first 401/403. Writes run concurrently (gather), and gather does not cancel
        # the others when one raises: without this, every queued write would still be sent to a
        # server that has just refused the token, and keep going after the cycle ended.
        halt = asyncio.Event()

        async def guarded(write: Awaitable[list[WriteResult]]) -> list[WriteResult]:
            try:
                return await write
            except OpenMetadataAuthError as exc:
                refused.append(exc)
                halt.set()
                return []

        async def batch_write(batch: list[dict[str, Any]]) -> list[WriteResult]:
            got = await self._put_bulk(batch, expected, stop, halt)
            if got is not None:
                return got
            singles = [await self.put_one(b, stop=stop, halt=halt) for b in batch]
            return [r for r in singles if r is not None]

        async def single_write(body: dict[str, Any]) -> list[WriteResult]:
            r = await self.put_one(body, stop=stop, halt=halt)
            return [r] if r is not None else []

        pending = list(bodies)
        if self._bulk_supported is not False:
            size = self._config.batch_size
            batches = [pending[i : i + size] for i in range(0, len(pending), size)]
            if self._bulk_supported is None:
                # Probe with the first batch alone, so a server without the route costs one request.
                try:
                    first = await self._put_bulk(batches[0], expected, stop, halt)
                except OpenMetadataAuthError as exc:
                    refused.append(exc)
                    first = []
                if first is not None:
                    results.extend(first)
                    batches = batches[1:]
                    pending = [b for batch in batches for b in batch]
            # True, or still unknown after a probe that failed: each batch settles it or falls back.
            if not refused and self.bulk_supported is not False:
                for chunk in await asyncio.gather(*(guarded(batch_write(b)) for b in batches)):
                    results.extend(chunk)
                pending = []
        if not refused and pending:
            for chunk in await asyncio.gather(*(guarded(single_write(b)) for b in pending)):
                results.extend(chunk)
        if refused:
            raise WritesStopped(refused[0], results)
        return results

    async def restore(self, service_id: str) -> None:
        await self._request("PUT", f"{SERVICES_PATH}/restore", json={"id": service_id})

    async def delete(self, service_id: str) -> None:
        """Soft delete (``hardDelete=false``); a service holding models is refused by the server."""
        await self._request(
            "DELETE", f"{SERVICES_PATH}/{service_id}", params={"hardDelete": "false", "recursive": "false"}
        )


def _stopped(*events: asyncio.Event | None) -> bool:
    return any(e is not None and e.is_set() for e in events)


def _item_name(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    request = item.get("request")
    if isinstance(request, dict):
        name = request.get("name")
        return str(name) if name is not None else None
    if isinstance(request, str):
        # Past validation the server reports the FQN, quoted when the name has a dot.
        if len(request) >= 2 and request.startswith('"') and request.endswith('"'):
            return request[1:-1]
        return request
    return None


def _item_status(item: dict[str, Any]) -> int | None:
    status = item.get("status")
    if isinstance(status, int):
        return status
    if isinstance(status, str) and status.isdigit():
        return int(status)
    return None
