"""OpenMetadataClient retry policy, driven through httpx.MockTransport (a fake that is real code).

The stand-in server covers the same behaviour end to end; these tests pin the exact counts:
how often each status is tried, how long Retry-After makes it wait, and that no redirect is
ever followed with the token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from mlsvc_discover._errors import OpenMetadataAuthError, OpenMetadataRequestError, OpenMetadataUnavailable
from mlsvc_discover.config import OpenMetadataConfig
from mlsvc_discover.openmetadata.client import OpenMetadataClient

TOKEN = "test-token-value"


def make_client(
    handler: Callable[[httpx.Request], httpx.Response], **cfg: object
) -> tuple[OpenMetadataClient, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    def serve(request: httpx.Request) -> httpx.Response:
        # The client asks the version once, to log it with the bulk decision.
        if request.url.path == "/api/v1/system/version":
            return httpx.Response(200, json={"version": "2.0.7"})
        return handler(request)

    config = OpenMetadataConfig(host="http://om.test/api", token=SecretStr(TOKEN), retries=3, **cfg)
    return OpenMetadataClient(config, transport=httpx.MockTransport(serve), sleep=sleep), slept


def error(status: int, message: str = "boom", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"code": status, "message": message}, headers=headers)


def body(name: str = "svc") -> dict[str, object]:
    return {"name": name, "serviceType": "Sklearn", "connection": {"config": {"type": "Sklearn"}}}


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_retryable_status_is_retried_then_reported_unavailable(status: int) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return error(status)

    client, slept = make_client(handler)
    with pytest.raises(OpenMetadataUnavailable, match=f"HTTP {status}.*after 4 attempts"):
        asyncio.run(client.list_services())
    assert len(calls) == 4
    assert len(slept) == 3


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (400, OpenMetadataRequestError),
        (404, OpenMetadataRequestError),
        (409, OpenMetadataRequestError),
        (401, OpenMetadataAuthError),
        (403, OpenMetadataAuthError),
    ],
)
def test_client_errors_are_never_retried(status: int, exc: type[Exception]) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return error(status, "nope")

    client, slept = make_client(handler)
    with pytest.raises(exc, match=f"HTTP {status}: nope"):
        asyncio.run(client.list_services())
    assert len(calls) == 1
    assert slept == []


def test_retry_after_is_honoured_and_capped_by_backoff_max() -> None:
    answers = iter([error(429, headers={"Retry-After": "7"}), error(429, headers={"Retry-After": "999"})])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, httpx.Response(200, json={"data": [], "paging": {"total": 0}}))

    client, slept = make_client(handler, backoff_max=60)
    assert asyncio.run(client.list_services()) == []
    assert slept == [7.0, 60.0]


def test_backoff_grows_exponentially_with_jitter_below_the_cap() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client, slept = make_client(handler, backoff_initial=1, backoff_max=3)
    with pytest.raises(OpenMetadataUnavailable, match="connection failed"):
        asyncio.run(client.list_services())
    assert len(slept) == 3
    assert all(0 <= s <= cap for s, cap in zip(slept, [1, 2, 3], strict=True))


def test_redirect_is_not_followed_and_the_token_is_not_sent_elsewhere() -> None:
    seen_hosts = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_hosts.append(request.url.host)
        return httpx.Response(307, headers={"Location": "http://evil.test/api/v1/services/mlmodelServices"})

    client, _ = make_client(handler)
    with pytest.raises(OpenMetadataRequestError, match="redirect"):
        asyncio.run(client.list_services())
    assert seen_hosts == ["om.test"]


def test_list_follows_paging_after_until_absent() -> None:
    pages = {None: (["a", "b"], "c1"), "c1": (["c"], None)}
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        seen.append(dict(request.url.params))
        names, nxt = pages[after]
        paging = {"total": 3, **({"after": nxt} if nxt else {})}
        return httpx.Response(200, json={"data": [{"id": n, "name": n} for n in names], "paging": paging})

    client, _ = make_client(handler, page_size=2)
    assert [s["name"] for s in asyncio.run(client.list_services())] == ["a", "b", "c"]
    assert seen[0]["limit"] == "2"
    # ingestionRunner and dataProducts too: an update must carry them back (the server clears the runner).
    assert seen[0]["fields"] == "owners,tags,domains,dataProducts,ingestionRunner"
    assert seen[0]["include"] == "all"


def test_bulk_route_missing_falls_back_to_single_puts_and_is_remembered() -> None:
    paths = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/bulk"):
            return error(405, "HTTP 405 Method Not Allowed")
        sent = json.loads(request.content)
        return httpx.Response(201, json={"id": "x", **sent}, headers={"X-OpenMetadata-Change": "entityCreated"})

    client, _ = make_client(handler, batch_size=2)
    results = asyncio.run(client.upsert([body(f"s{i}") for i in range(5)]))
    assert [r.outcome for r in results] == ["created"] * 5
    assert paths.count("/api/v1/services/mlmodelServices/bulk") == 1
    assert client.bulk_supported is False
    asyncio.run(client.upsert([body("again")]))
    assert paths.count("/api/v1/services/mlmodelServices/bulk") == 1


def test_bulk_result_is_read_item_by_item() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)
        ok = [{"request": i["name"], "status": 200} for i in items if i["name"] != "bad"]
        failed = [{"request": i, "status": 400, "message": "invalid"} for i in items if i["name"] == "bad"]
        return httpx.Response(200, json={"status": "partialSuccess", "successRequest": ok, "failedRequest": failed})

    client, _ = make_client(handler)
    results = {r.name: r for r in asyncio.run(client.upsert([body("good"), body("bad")], expected={"good": "created"}))}
    assert results["good"].outcome == "created"
    assert results["bad"].outcome == "failed"
    assert results["bad"].message == "invalid"
    assert results["bad"].status == 400


def test_token_is_sent_as_bearer_header() -> None:
    auth = []

    def handler(request: httpx.Request) -> httpx.Response:
        auth.append(request.headers.get("Authorization"))
        return httpx.Response(200, json={"data": [], "paging": {"total": 0}})

    client, _ = make_client(handler)
    asyncio.run(client.list_services())
    assert auth == [f"Bearer {TOKEN}"]


@pytest.mark.parametrize("use_bulk", [True, False])
def test_stop_prevents_queued_writes_from_being_sent(use_bulk: bool) -> None:
    stop = asyncio.Event()
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        stop.set()  # a shutdown arrives while the first write is in flight
        items = json.loads(request.content)
        if isinstance(items, list):
            ok = [{"request": i["name"], "status": 200} for i in items]
            return httpx.Response(200, json={"status": "success", "successRequest": ok})
        return httpx.Response(201, json={"id": "x", **items})

    client, _ = make_client(handler, max_concurrency=1, batch_size=2, use_bulk=use_bulk)
    results = asyncio.run(client.upsert([body(f"s{i}") for i in range(6)], stop=stop))
    assert len(sent) == 1
    assert len(results) == (2 if use_bulk else 1)
