"""OpenMetadata client for ML model services (async, httpx).

The API it relies on is summarised in the README ("Connecting to OpenMetadata"). Writes try
``PUT /v1/services/mlmodelServices/bulk`` once per process: no released server has that route
(it answers 500 "HTTP 405 Method Not Allowed", 405 or 404), and such an answer is final at
once, without retries; from then on every service is written by its own ``PUT``. How many
writes are in flight follows what the server shows (429/503, rising latency), within configured
bounds: ``self.limiter`` (see :mod:`._limiter`) is the one place that limits concurrent writes.

Every attempt has a total deadline (``openmetadata.timeout``: connecting, sending and reading
the whole answer) and a bounded answer (``max_response_bytes``); listings detect cursors that
repeat and cap their page count. An answer of a shape the agent cannot read raises
:class:`OpenMetadataBadAnswer` ("OpenMetadata answered something unexpected: <where>").

Retries: connection errors, timeouts, 429 and 503 (honouring ``Retry-After``) and 5xx are retried with
exponential backoff and full jitter; 400, 401, 403, 404 and 409 never are. Redirects are not
followed, so the token is only ever sent to the configured host.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from mlsvc_discover import __version__
from mlsvc_discover._errors import (
    OpenMetadataAuthError,
    OpenMetadataBadAnswer,
    OpenMetadataError,
    OpenMetadataRequestError,
    OpenMetadataUnavailable,
)
from mlsvc_discover.config import OpenMetadataConfig
from mlsvc_discover.openmetadata._limiter import UNPACED, AdaptiveLimit, ConcurrencyLimiter, Slot

__all__ = ["SERVICES_PATH", "OpenMetadataClient", "WriteResult", "WritesStopped", "is_no_route", "unexpected"]

log = logging.getLogger(__name__)

SERVICES_PATH = "/v1/services/mlmodelServices"
# Every optional field the agent must carry back in an update: the server clears
# ``ingestionRunner`` when a PUT lacks it, and lists none of these unless asked.
LIST_FIELDS = "owners,tags,domains,dataProducts,ingestionRunner"
VERSION_PATH = "/v1/system/version"
# What Jersey says when a path matches but the method does not (``PUT .../bulk`` is matched as
# ``/{id}``); OpenMetadata's catch-all mapper wraps it into a 500.
_ROUTING_TEXT = "Method Not Allowed"
_MAX_EMPTY_PAGES = 3
_UNKNOWN_FIELD = re.compile(r"Invalid field name (\w+)")
_DROPPABLE_FIELDS = frozenset({"ingestionRunner", "dataProducts"})
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


def unexpected(where: str) -> OpenMetadataBadAnswer:
    return OpenMetadataBadAnswer(f"OpenMetadata answered something unexpected: {where}")


def is_no_route(response: httpx.Response) -> bool:
    """Whether an answer to ``PUT .../bulk`` says the route does not exist (final, never retried)."""
    status = response.status_code
    if status in (404, 405):
        return True
    return status == 500 and _ROUTING_TEXT in _error_message(response)


def _json(response: httpx.Response, where: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise unexpected(f"{where}: the answer is not JSON") from exc


class _TooLarge(Exception):
    pass


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
        self._version: str | None = None
        # Optional fields asked for in listings; one the server does not know is dropped (see list_services).
        self._list_fields = LIST_FIELDS.split(",")
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

    async def _send(self, method: str, path: str, params: dict[str, Any] | None, json: Any) -> httpx.Response:
        """One attempt, bounded in time as a whole and in size; the answer fully read.

        httpx's timeouts apply to each network operation, so a server that trickles its answer
        would never hit them: the whole exchange runs under one ``asyncio.timeout``.
        """
        limit = self._config.max_response_bytes
        async with asyncio.timeout(self._config.timeout):
            async with self._http.stream(method, path, params=params, json=json) as response:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise _TooLarge
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _TooLarge
                    chunks.append(chunk)
                # The content is decoded already: drop the headers that describe the wire form.
                headers = [
                    (k, v)
                    for k, v in response.headers.multi_items()
                    if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
                ]
                return httpx.Response(
                    response.status_code, headers=headers, content=b"".join(chunks), request=response.request
                )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        retry: bool = True,
        ok_statuses: Sequence[int] = (),
        final: Callable[[httpx.Response], bool] | None = None,
        slot: Slot = UNPACED,
    ) -> httpx.Response:
        """Send with retries; ``final`` marks answers returned as they are (never retried)."""
        attempts = 1 + (self._config.retries if retry else 0)
        delay = self._config.backoff_initial
        last: str = ""
        for attempt in range(1, attempts + 1):
            wait: float | None = None
            try:
                self.requests_sent += 1
                slot.sent()
                response = await self._send(method, path, params, json)
            except _TooLarge:
                slot.answered(None)
                raise unexpected(
                    f"{method} {path}: an answer larger than openmetadata.max_response_bytes "
                    f"({self._config.max_response_bytes} bytes)"
                ) from None
            except (TimeoutError, httpx.TimeoutException) as exc:
                slot.answered(None, timed_out=True)
                last = (
                    f"timed out after {self._config.timeout:g}s, the whole answer not received ({type(exc).__name__})"
                )
            except httpx.TransportError as exc:
                slot.answered(None)
                last = f"connection failed ({type(exc).__name__})"
            else:
                slot.answered(response.status_code)
                status = response.status_code
                if status < 300 or status in ok_statuses or (final is not None and final(response)):
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

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        retry: bool = True,
    ) -> httpx.Response:
        """One request with this client's token, deadline, retries and error translation.

        For routes this class does not wrap (ingestion pipelines, :mod:`.pipelines`).
        """
        return await self._request(method, path, params=params, json=json, retry=retry)

    # --- reads ---------------------------------------------------------------------------

    async def server_version(self) -> str | None:
        """The server's version (``GET /v1/system/version``), asked once per process; None if unknown."""
        if self._version is not None:
            return self._version
        try:
            response = await self._request("GET", VERSION_PATH, retry=False)
            body = _json(response, f"GET {VERSION_PATH}")
        except OpenMetadataAuthError:
            raise
        except OpenMetadataError as exc:
            log.debug("cannot read the OpenMetadata version: %s", exc)
            return None
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, str) or not version:
            return None
        self._version = version[:64]
        return self._version

    async def list_services(self, *, include: str = "all") -> list[dict[str, Any]]:
        """Every ML model service, soft-deleted ones included, following ``paging.after``.

        Raises :class:`OpenMetadataBadAnswer` when a page cannot be read or the paging is
        broken (a cursor seen before, a service listed twice, empty pages that go on, more than
        ``max_pages`` pages): a listing that cannot be read is never taken for a smaller catalog.
        """
        while True:
            try:
                return await self._list_all(include)
            except OpenMetadataRequestError as exc:
                unknown = _UNKNOWN_FIELD.search(str(exc)) if exc.status == 400 else None
                field = unknown.group(1) if unknown is not None else None
                # A server that does not know ``ingestionRunner`` or ``dataProducts`` cannot clear
                # them either: list without them. ``owners``, ``tags`` and ``domains`` are needed.
                if field not in _DROPPABLE_FIELDS or field not in self._list_fields:
                    raise
                log.info("OpenMetadata does not know the field %s; listing without it", field)
                self._list_fields.remove(field)

    async def _list_all(self, include: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        names: set[str] = set()
        cursors: set[str] = set()
        empty = 0
        fields = ",".join(self._list_fields)
        params: dict[str, Any] = {"limit": self._config.page_size, "fields": fields, "include": include}
        where = f"GET {SERVICES_PATH}"
        for page in range(1, self._config.max_pages + 1):
            response = await self._request("GET", SERVICES_PATH, params=params)
            body = _json(response, where)
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise unexpected(f"{where} (page {page}): `data` is not a list")
            paging = body.get("paging")
            if paging is None:
                paging = {}
            if not isinstance(paging, dict):
                raise unexpected(f"{where} (page {page}): `paging` is not an object")
            after = paging.get("after")
            if after is not None and not isinstance(after, str):
                raise unexpected(f"{where} (page {page}): `paging.after` is not a string")
            for index, entry in enumerate(body["data"]):
                name = entry.get("name") if isinstance(entry, dict) else None
                if not isinstance(name, str):
                    raise unexpected(f"{where} (page {page}): data[{index}] is not a service with a name")
                if name in names:
                    raise unexpected(f"{where} (page {page}): service {name!r} listed twice; the paging is broken")
                names.add(name)
                out.append(entry)
            if not after:
                return out
            if after in cursors:
                raise unexpected(f"{where} (page {page}): the cursor `paging.after` repeats; the paging loops")
            cursors.add(after)
            empty = 0 if body["data"] else empty + 1
            if empty >= _MAX_EMPTY_PAGES:
                raise unexpected(f"{where} (page {page}): {empty} empty pages in a row, each with a new cursor")
            params = {**params, "after": after}
        raise unexpected(f"{where}: more than openmetadata.max_pages ({self._config.max_pages}) pages")

    async def exists(self, path: str) -> bool:
        """Whether ``GET path`` finds the entity (200) or not (404)."""
        response = await self._request("GET", path, ok_statuses=(404,))
        return response.status_code != 404

    async def classification_exists(self, name: str) -> bool:
        return await self.exists(f"/v1/classifications/name/{quote(name, safe='')}")

    async def tag_exists(self, fqn: str) -> bool:
        return await self.exists(f"/v1/tags/name/{quote(fqn, safe='')}")

    async def domain_exists(self, fqn: str) -> bool:
        return await self.exists(f"/v1/domains/name/{quote(fqn, safe='')}")

    async def owner_exists(self, kind: str, owner_id: str) -> bool:
        return await self.exists(f"/v1/{'teams' if kind == 'team' else 'users'}/{quote(owner_id, safe='')}")

    async def put_classification(self, name: str, description: str) -> None:
        await self._request("PUT", "/v1/classifications", json={"name": name, "description": description})

    async def put_tag(self, classification: str, name: str, description: str) -> None:
        body = {"classification": classification, "name": name, "description": description}
        await self._request("PUT", "/v1/tags", json=body)

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
        try:
            answer = _json(response, f"PUT {SERVICES_PATH}")
            if not isinstance(answer, dict) or answer.get("name") != name:
                raise unexpected(f"PUT {SERVICES_PATH} for {name!r}: the answer is not that service")
        except OpenMetadataBadAnswer as exc:
            return WriteResult(name, "failed", response.status_code, str(exc))
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
                    "PUT",
                    f"{SERVICES_PATH}/bulk",
                    json=bodies,
                    final=is_no_route if self._bulk_supported is None else None,
                    slot=slot,
                )
            except OpenMetadataAuthError:
                raise
            except OpenMetadataError as exc:
                return [WriteResult(str(b["name"]), "failed", exc.status, str(exc)) for b in bodies]
        if self._bulk_supported is not True and is_no_route(response):
            if self._bulk_supported is False:
                return None  # a concurrent batch has just learnt it
            self._bulk_supported = False
            version = await self.server_version()
            log.info(
                "OpenMetadata %s has no PUT %s/bulk route (%s); writing one PUT per service from now on",
                version or "(version unknown)",
                SERVICES_PATH,
                _error_message(response),
            )
            return None
        if self._bulk_supported is None:
            self._bulk_supported = True
            version = await self.server_version()
            log.info("OpenMetadata %s has the bulk route; writing in batches", version or "(version unknown)")
        try:
            succeeded, failed = _bulk_items(_json(response, f"PUT {SERVICES_PATH}/bulk"))
        except OpenMetadataBadAnswer as exc:
            return [WriteResult(str(b["name"]), "failed", response.status_code, str(exc)) for b in bodies]
        out: dict[str, WriteResult] = {}
        for item in failed:
            name = _item_name(item)
            if name is not None:
                message = item.get("message")
                out[name] = WriteResult(
                    name, "failed", _item_status(item), message[:500] if isinstance(message, str) else "failed"
                )
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
            singles = [
                await self.put_one(b, restored=expected.get(str(b["name"])) == "restored", stop=stop, halt=halt)
                for b in batch
            ]
            return [r for r in singles if r is not None]

        async def single_write(body: dict[str, Any]) -> list[WriteResult]:
            restored = expected.get(str(body["name"])) == "restored"
            r = await self.put_one(body, restored=restored, stop=stop, halt=halt)
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
        """Soft delete (``hardDelete=false``, never recursive): the server refuses (400 "... is not
        empty") a service that still holds ML models or ingestion pipelines, and the caller keeps it."""
        await self._request(
            "DELETE", f"{SERVICES_PATH}/{service_id}", params={"hardDelete": "false", "recursive": "false"}
        )


def _stopped(*events: asyncio.Event | None) -> bool:
    return any(e is not None and e.is_set() for e in events)


def _bulk_items(result: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``successRequest`` and ``failedRequest`` of a BulkOperationResult, checked for shape."""
    where = f"PUT {SERVICES_PATH}/bulk"
    if not isinstance(result, dict):
        raise unexpected(f"{where}: the answer is not a BulkOperationResult")
    lists: list[list[dict[str, Any]]] = []
    for key in ("successRequest", "failedRequest"):
        items = result.get(key)
        if items is None:
            items = []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise unexpected(f"{where}: `{key}` is not a list of results")
        lists.append(items)
    return lists[0], lists[1]


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
