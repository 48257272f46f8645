"""Adaptive write concurrency end to end: the real client against real loopback servers.

The servers (``bench/om_server.py``, shared with the benchmark) are per-item-PUT servers like
every real OpenMetadata: one throttles beyond 8 requests at once (429 with ``Retry-After: 1``),
one doubles its latency beyond 8 writes in flight, one is merely slow. Margins are generous:
the machine running the suite is shared; speed is measured by ``python -m bench.run``, not here.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bench.om_server import Behaviour, OmServerProcess
from mlsvc_discover.config import OpenMetadataConfig
from mlsvc_discover.openmetadata.client import OpenMetadataClient, WriteResult

TOKEN = "write-concurrency-token"
N = 300
LATENCY = 0.1


def bodies(n: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"svc-{i:04d}",
            "serviceType": "Mlflow",
            "connection": {"config": {"type": "Mlflow", "trackingUri": f"http://m{i}:5000", "registryUri": "x"}},
        }
        for i in range(n)
    ]


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[OmServerProcess]:
    # A process of its own, as a real server is: in this process it would share the GIL with
    # the client, and its answers would slow down with the client's work.
    srv = OmServerProcess(request.param, token=TOKEN)
    try:
        yield srv
    finally:
        srv.stop()


def write_all(server: OmServerProcess, **cfg: Any) -> tuple[list[WriteResult], OpenMetadataClient, list[float]]:
    """Upsert N services with per-item PUTs; sample the limit every 10 ms while it runs."""
    config = OpenMetadataConfig(host=server.base_url, token=SecretStr(TOKEN), use_bulk=False, **cfg)
    client = OpenMetadataClient(config)
    limits: list[float] = []

    async def main() -> list[WriteResult]:
        async def sample() -> None:
            while True:
                limits.append(client.limiter.limit.limit)
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        try:
            return await client.upsert(bodies(N))
        finally:
            sampler.cancel()
            await client.aclose()

    return asyncio.run(main()), client, limits


@pytest.mark.parametrize("server", [Behaviour(latency=LATENCY, capacity=8, over="throttle")], indirect=True)
def test_a_server_that_throttles_beyond_8_gets_every_write_and_a_limit_near_8(server: OmServerProcess) -> None:
    results, client, limits = write_all(server)
    stats = server.stats()
    assert [r for r in results if not r.ok] == []
    assert sum(r.outcome == "created" for r in results) == N
    assert stats["throttled"] > 0  # the limiter went past 8 at least once and learnt from it
    assert stats["throttled"] < N // 5  # but backed off instead of hammering
    late = limits[len(limits) // 2 :]
    assert 4 <= statistics.median(late) <= 12
    assert client.limiter.limit.decreases >= 1


@pytest.mark.parametrize("server", [Behaviour(latency=LATENCY, capacity=8, over="slow")], indirect=True)
def test_a_server_that_slows_down_beyond_8_writes_gets_a_limit_near_8(server: OmServerProcess) -> None:
    results, client, limits = write_all(server)
    assert [r for r in results if not r.ok] == []
    late = limits[len(limits) // 2 :]
    assert 4 <= statistics.median(late) <= 12
    assert client.limiter.limit.decreases >= 1


@pytest.mark.parametrize("server", [Behaviour(latency=LATENCY)], indirect=True)
def test_a_healthy_server_gets_the_configured_concurrency(server: OmServerProcess) -> None:
    results, _client, limits = write_all(server)
    stats = server.stats()
    assert [r for r in results if not r.ok] == []
    assert max(limits) == 16  # slow start reached max_concurrency
    assert stats["max_in_flight"] >= 10  # and the server saw most of it (a loaded client sends a little late)
    # Not pinned at 16: on a loaded 2-core machine the client's own CPU queue shows as latency.
    assert statistics.median(limits[len(limits) // 2 :]) >= 8


@pytest.mark.parametrize("server", [Behaviour(latency=LATENCY, capacity=2, over="slow")], indirect=True)
def test_equal_bounds_keep_a_fixed_concurrency_whatever_the_server_shows(server: OmServerProcess) -> None:
    results, _client, limits = write_all(server, min_concurrency=4, max_concurrency=4)
    assert [r for r in results if not r.ok] == []
    assert set(limits) == {4.0}
    assert server.stats()["slowed"] > 0


def test_a_503_retry_after_is_honoured_and_a_write_waiting_it_out_holds_no_slot() -> None:
    answers = iter([httpx.Response(503, json={"code": 503, "message": "busy"}, headers={"Retry-After": "3"})])
    slept: list[tuple[float, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        # The created entity: the client checks that a PUT's answer is the service it sent.
        created = {"id": "00000000-0000-0000-0000-000000000001", **json.loads(request.content)}
        return next(answers, httpx.Response(201, json=created))

    config = OpenMetadataConfig(host="http://om.test/api", token=SecretStr(TOKEN), use_bulk=False)
    client: OpenMetadataClient

    async def sleep(seconds: float) -> None:
        slept.append((seconds, client.limiter.in_flight))

    client = OpenMetadataClient(config, transport=httpx.MockTransport(handler), sleep=sleep)

    async def main() -> list[WriteResult]:
        try:
            return await client.upsert(bodies(1))
        finally:
            await client.aclose()

    results = asyncio.run(main())
    assert [r.outcome for r in results] == ["created"]
    assert slept == [(3.0, 0)]  # waited what the server asked, without holding a slot
    assert client.limiter.limit.decreases == 1
