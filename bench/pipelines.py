"""Ingestion pipeline cost: ``python -m bench.pipelines [--services N] [--runs R]``.

The stand-in runs as a child process (``python -m testing.openmetadata``), the agent in this
one. For N static services with ingestion enabled it measures, per cycle: wall time, requests
sent to OpenMetadata and pipeline writes (PUT, POST, DELETE) plus deploys. Steady-state cycles
(nothing changed) are compared with a naive reconciler that PUTs and deploys every pipeline
every cycle, as a script without a diff would (and must: each PUT resets ``deployed``).
Medians of R runs; the naive approach runs against the same server in the same invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.servers import REPO_ROOT
from mlsvc_discover.agent import Agent
from mlsvc_discover.config import load_config
from mlsvc_discover.ingestion import ResolvedIngestion
from mlsvc_discover.pipelines import desired_body, pipeline_name

TOKEN = "bench-pipelines-token"  # a fake token only the child stand-in knows


def _start_standin() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "testing.openmetadata", "--port", "0", "--token", TOKEN, "--no-bulk"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError(f"stand-in did not start: {url!r}")
    return proc, url


async def _agent_cycle(path: Path) -> tuple[float, int, dict[str, int]]:
    async with Agent(load_config(path)) as agent:
        started = time.perf_counter()
        report = await agent.run_once()
        took = time.perf_counter() - started
        if report.fatal is not None or report.failures:
            raise RuntimeError(f"benchmark cycle failed: {report.to_json()}")
        sent = agent.client.requests_sent if agent.client is not None else 0
        return took, sent, dict(report.pipeline_outcomes)


async def _naive_cycle(base_url: str, n: int) -> tuple[float, int]:
    """PUT and deploy every pipeline (service ids read once per cycle, as any script must)."""
    name = pipeline_name("mlsvc-discover", "bench")
    settings = ResolvedIngestion(enabled=True)
    sent = 0
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, limits=limits, timeout=30
    ) as http:
        services = (await http.get("/v1/services/mlmodelServices", params={"limit": n + 10})).json()["data"]
        sent += 1
        sem = asyncio.Semaphore(16)

        async def one(svc: dict[str, Any]) -> int:
            async with sem:
                body = desired_body(svc["name"], svc["id"], settings, name=name, owner="mlsvc-discover.bench")
                put = await http.put("/v1/services/ingestionPipelines", json=body)
                put.raise_for_status()
                deploy = await http.post(f"/v1/services/ingestionPipelines/deploy/{put.json()['id']}")
                deploy.raise_for_status()
                return 2

        sent += sum(await asyncio.gather(*(one(s) for s in services)))
    return time.perf_counter() - started, sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    proc, url = _start_standin()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            config = {
                "owner_id": "bench",
                "openmetadata": {"host": url, "token": TOKEN, "use_bulk": False},
                "ingestion": {"enabled": True},
                "discoverers": [
                    {
                        "type": "static",
                        "name": "decl",
                        "services": [{"name": f"svc-{i:05d}", "service_type": "Sklearn"} for i in range(args.services)],
                    }
                ],
            }
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            first = asyncio.run(_agent_cycle(path))
            steady = [asyncio.run(_agent_cycle(path)) for _ in range(args.runs)]
            naive = [asyncio.run(_naive_cycle(url, args.services)) for _ in range(args.runs)]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    agent_time = statistics.median(s[0] for s in steady)
    naive_time = statistics.median(n[0] for n in naive)
    agent_req = statistics.median(s[1] for s in steady)
    naive_req = statistics.median(n[1] for n in naive)
    print(f"services: {args.services}, runs: {args.runs} (medians)")
    print(f"first cycle (agent): {first[0]:.2f}s, {first[1]} requests, pipelines {first[2]}")
    print(f"steady cycle, agent: {agent_time:.3f}s, {agent_req:.0f} requests, pipeline writes+deploys 0")
    print(
        f"steady cycle, naive: {naive_time:.3f}s, {naive_req:.0f} requests, pipeline writes+deploys {naive_req - 1:.0f}"
    )
    print(f"ratio naive/agent: time {naive_time / agent_time:.1f}x, requests {naive_req / agent_req:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
