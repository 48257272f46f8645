"""Kubernetes discovery benchmark: ``python -m bench.k8s [--services N] [--runs N] [--latency MS]``.

One fake API server (``testing/fake_k8s.py``) with N Services in 100 namespaces, of which
50 carry the community chart's labels and point at loopback responders answering MLflow's
endpoints after ``--latency`` ms each; 50 Ingresses. Measured, medians of ``--runs`` runs:

- the ``kubernetes`` discoverer with ``opt_in_annotation: true`` (every Service listed in pages
  of 500 and filtered locally, the default);
- the same with ``opt_in_annotation: false`` (the selector sent to the API server);
- naive: one unpaged list of every Service and Ingress with a synchronous httpx client, the same
  local selection, then each candidate probed one after another with the same prober.

Wall time and the peak of Python allocations during the run (``tracemalloc``) are printed with
the ratio naive / agent. The fake API server and the responders run in a child process, so only
the measured approach's own work is in this one; everything is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import yaml

import mlsvc_discover.k8s.api  # noqa: F401  (imports before the timers, for every approach)
from mlsvc_discover.discoverers.kubernetes import KubernetesDiscoverer, KubernetesDiscovererConfig
from mlsvc_discover.k8s.endpoints import choose_endpoint, ingress_routes
from mlsvc_discover.k8s.selectors import parse_selector
from mlsvc_discover.mlflow_probe import MlflowProber, ProbeSettings, ProbeTarget
from testing.fake_k8s import FakeCluster, ingress, service
from testing.mlflow_fixtures import FakeServer, mlflow_like

CANDIDATES = 50
NAMESPACES = 100


def slow(handler: Callable[[BaseHTTPRequestHandler], None], seconds: float) -> Callable[[BaseHTTPRequestHandler], None]:
    def handle(req: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        handler(req)

    return handle


def build(services: int, latency: float) -> tuple[FakeCluster, list[FakeServer]]:
    responders = [FakeServer(slow(mlflow_like(), latency)) for _ in range(CANDIDATES)]
    objs: list[dict[str, Any]] = []
    ings: list[dict[str, Any]] = []
    for i in range(services):
        ns = f"ns-{i % NAMESPACES:03d}"
        if i < CANDIDATES:
            port = responders[i].port
            labels = {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": f"r{i}"}
            objs.append(service(f"mlflow-{i}", ns, labels=labels, ports=[{"name": "http", "port": port}]))
            ings.append(ingress(f"mlflow-{i}", ns, host=f"mlflow-{i}.example.com", service_name=f"mlflow-{i}"))
        else:
            labels = {"app.kubernetes.io/name": f"app-{i % 37}", "team": f"t{i % 11}"}
            objs.append(service(f"svc-{i}", ns, labels=labels, ports=[{"name": "http", "port": 8080}]))
    return FakeCluster(token="bench-token", services=objs, ingresses=ings).start(), responders


def serve(conn: Connection, services: int, latency: float) -> None:
    """Child process: the fake API server and the responders, so their CPU is not measured."""
    cluster, responders = build(services, latency)
    conn.send((cluster.url, cluster.token))
    conn.recv()  # until the parent says stop
    cluster.stop()
    for r in responders:
        r.close()


def run_agent(kubeconfig: Path, opt_in: bool) -> tuple[float, int, int]:
    config = KubernetesDiscovererConfig.model_validate(
        {
            "type": "kubernetes",
            "name": "bench",
            "clusters": [{"name": "c", "kubeconfig": str(kubeconfig)}],
            "opt_in_annotation": opt_in,
            "timeout": 10,
            "api_timeout": 60,
        }
    )
    disc = KubernetesDiscoverer(config)
    tracemalloc.start()
    started = time.perf_counter()
    result = asyncio.run(disc.discover())
    took = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return took, peak, len(result.findings)


def run_naive(url: str, token: str) -> tuple[float, int, int]:
    selector = parse_selector("app.kubernetes.io/name=mlflow")
    prober = MlflowProber(ProbeSettings(timeout=10))
    tracemalloc.start()
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        services = client.get("/api/v1/services").json()["items"]
        ingresses = client.get("/apis/networking.k8s.io/v1/ingresses").json()["items"]
    routes = ingress_routes(ingresses)
    found = 0
    for svc in services:
        if not selector.matches(svc["metadata"].get("labels") or {}):
            continue
        endpoint = choose_endpoint(svc, routes, probe_via="service", cluster_domain="cluster.local")
        asyncio.run(prober.probe(ProbeTarget.from_uri(endpoint.probe)))
        found += 1
    took = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return took, peak, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency", type=float, default=50.0, help="ms each MLflow responder waits")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("fork").Process(target=serve, args=(child, args.services, args.latency / 1000))
    proc.start()
    rows: dict[str, list[tuple[float, int, int]]] = {"list all + local filter": [], "server-side selector": []}
    rows["naive"] = []
    try:
        url, token = parent.recv()
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = Path(tmp) / "kubeconfig"
            kubeconfig.write_text(yaml.safe_dump(FakeCluster(token=token, url=url).kubeconfig()))
            # One unmeasured round first: lazy imports inside the libraries, first TLS contexts.
            run_agent(kubeconfig, opt_in=True)
            run_naive(url, token)
            for _ in range(args.runs):
                rows["list all + local filter"].append(run_agent(kubeconfig, opt_in=True))
                rows["server-side selector"].append(run_agent(kubeconfig, opt_in=False))
                rows["naive"].append(run_naive(url, token))
    finally:
        parent.send("stop")
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    naive = statistics.median(t for t, _, _ in rows["naive"])
    print(
        f"{args.services} Services in {NAMESPACES} namespaces, {CANDIDATES} MLflow candidates answering after "
        f"{args.latency:g} ms; medians of {args.runs} runs; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'approach':<26} {'wall':>9} {'py peak':>9} {'found':>6} {'naive/this':>10}")
    out = {}
    for name, results in rows.items():
        wall = statistics.median(t for t, _, _ in results)
        peak = statistics.median(p for _, p, _ in results)
        found = results[0][2]
        out[name] = {"wall_s": wall, "py_peak_bytes": peak, "found": found, "runs": results}
        print(f"{name:<26} {wall:>8.2f}s {peak / 2**20:>7.1f}MB {found:>6} {naive / wall:>9.1f}x")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
