"""Fleet-scale benchmark: ``python -m bench.run [--quick] [--runs N] [--json PATH]``.

Every scenario runs the agent and the naive approach in the same invocation, against the same
servers, and prints a table of medians and ratios. See ``bench/README.md`` for what each
scenario does, how the naive approach is measured, and the latest results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from bench.responders import FirstRequestClock, ResponderFleet, raise_nofile_limit, refused_ports
from bench.servers import (
    BIN,
    REPO_ROOT,
    MotoProcess,
    aws_env,
    child_env,
    start_mlflow_servers,
)

WORKER_TIMEOUT = 900.0
# Set from the command line: config overrides every worker gets.
OPTIONS: dict[str, Any] = {"mlflow_max_concurrency": None, "om_max_concurrency": None}
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")


@dataclass(frozen=True)
class Sizes:
    """Scenario sizes; ``--quick`` shrinks them for a smoke run of under a minute."""

    mlflow_real: int
    mlflow_responders: int
    mlflow_refused: int
    mlflow_blackholes: int
    naive_mlflow: tuple[int, int, int, int]  # real, responders, refused, black holes probed naively
    probe_timeout: float
    aws_accounts: int
    aws_regions: int
    naive_aws_accounts: int
    aws_latencies: tuple[float, ...]  # 0 = loopback moto as it is
    org_accounts: int
    catalog_services: int
    naive_catalog: int
    catalog_latency: float
    writes_services: int
    naive_writes: int
    writes_latency: float  # of the throttling and the slowing server
    writes_plain_latencies: tuple[float, ...]
    startup_runs: int
    cycles: int
    checkpoints: tuple[int, ...]
    long_static: int
    long_mlflow: int


FULL = Sizes(
    mlflow_real=2,
    mlflow_responders=898,
    mlflow_refused=50,
    mlflow_blackholes=50,
    naive_mlflow=(2, 88, 5, 5),
    probe_timeout=2.0,
    aws_accounts=50,
    aws_regions=4,
    naive_aws_accounts=10,
    aws_latencies=(0.0, 0.05),
    org_accounts=199,
    catalog_services=5000,
    naive_catalog=500,
    catalog_latency=0.02,
    writes_services=5000,
    naive_writes=100,
    writes_latency=0.1,
    writes_plain_latencies=(0.02, 0.1),
    startup_runs=5,
    cycles=100,
    checkpoints=(1, 10, 50, 100),
    long_static=200,
    long_mlflow=5,
)
QUICK = Sizes(
    mlflow_real=1,
    mlflow_responders=89,
    mlflow_refused=5,
    mlflow_blackholes=5,
    naive_mlflow=(1, 8, 1, 1),
    probe_timeout=2.0,
    aws_accounts=6,
    aws_regions=2,
    naive_aws_accounts=2,
    aws_latencies=(0.05,),
    org_accounts=9,
    catalog_services=500,
    naive_catalog=30,
    catalog_latency=0.02,
    writes_services=300,
    naive_writes=10,
    writes_latency=0.1,
    writes_plain_latencies=(0.02, 0.1),
    startup_runs=1,
    cycles=20,
    checkpoints=(1, 5, 10, 20),
    long_static=50,
    long_mlflow=3,
)


@dataclass
class Row:
    """One line of the final table; ``raw`` keeps everything measured for ``--json``."""

    scenario: str
    agent: float | None
    naive: float | None = None
    naive_how: str = ""
    requests: str = ""
    peak_rss_mb: float | None = None
    cpu_s: float | None = None
    target: str = ""
    passed: bool | None = None
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.agent is None or self.naive is None or self.agent <= 0:
            return None
        return self.naive / self.agent


# --- plumbing --------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a running process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_worker(
    task: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    on_line: Callable[[str, subprocess.Popen[str]], None] | None = None,
    watch: Sequence[int] = (),
) -> dict[str, Any]:
    """Run one :mod:`bench.worker` task in a fresh process and return its RESULT.

    ``watch`` lists server pids whose CPU seconds during the task are added as ``server_cpu``:
    they tell whether a server, not the agent, set the pace.
    """
    before = {pid: proc_cpu(pid) for pid in watch}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env or child_env(),
        cwd=REPO_ROOT,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    deadline = time.monotonic() + WORKER_TIMEOUT
    try:
        proc.stdin.write(json.dumps(task) + "\n")
        proc.stdin.flush()
        result: dict[str, Any] | None = None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
            elif on_line is not None:
                on_line(line.strip(), proc)
            if time.monotonic() > deadline:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if result is None:
        raise RuntimeError(f"worker task {task['task']!r} failed with exit code {proc.returncode}")
    result["server_cpu"] = {str(pid): proc_cpu(pid) - cpu for pid, cpu in before.items()}
    return result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


# --- MLflow fleet ----------------------------------------------------------------------------


def scenario_mlflow(sizes: Sizes, runs: int, workdir: Path) -> list[Row]:
    """1,000 candidate URIs: real servers, responders, refused ports and black holes."""
    import random

    t = sizes.probe_timeout
    log(f"mlflow: starting {sizes.mlflow_real} real mlflow server(s) and {sizes.mlflow_responders} responders")
    servers = start_mlflow_servers(sizes.mlflow_real, workdir)
    fleet = ResponderFleet(sizes.mlflow_responders, sizes.mlflow_blackholes).start()
    socks, refused = refused_ports(sizes.mlflow_refused)
    try:
        strata: dict[str, list[str]] = {
            "real": [s.url for s in servers],
            "responder": [f"http://127.0.0.1:{p}" for p in fleet.mlflow_ports],
            "refused": [f"http://127.0.0.1:{p}" for p in refused],
            "blackhole": [f"http://127.0.0.1:{p}" for p in fleet.blackhole_ports],
        }
        uris = [u for group in strata.values() for u in group]
        random.Random(7).shuffle(uris)  # black holes spread through the list, as in a real inventory
        live = len(strata["real"]) + len(strata["responder"])
        log(f"mlflow: agent over {len(uris)} URIs (T={t:g}s), {runs} run(s)")
        agent = run_worker(
            {
                "task": "mlflow-agent",
                "uris": uris,
                "timeout": t,
                "runs": runs,
                "max_concurrency": OPTIONS["mlflow_max_concurrency"],
            },
            watch=[fleet.pid],
        )
        sample_counts = dict(zip(strata, sizes.naive_mlflow, strict=True))
        targets = [(name, uri) for name, group in strata.items() for uri in group[: sample_counts[name]]]
        random.Random(7).shuffle(targets)
        log(f"mlflow: naive over a stratified sample of {len(targets)} URIs, {runs} run(s)")
        naive = run_worker({"task": "mlflow-naive", "targets": targets, "timeout": t, "runs": runs})
    finally:
        fleet.stop()
        for s in socks:
            s.close()
        for server in servers:
            server.stop()

    walls = [r["wall"] for r in agent["runs"]]
    found = [r["findings"] for r in agent["runs"]]
    # Scale the sample stratum by stratum: mean time of one URI of a kind x how many there are.
    scaled = []
    for r in naive["runs"]:
        total = 0.0
        for name, group in strata.items():
            per = r["per_stratum"].get(name) or []
            total += (sum(per) / len(per)) * len(group) if per else 0.0
        scaled.append(total)
    row = Row(
        scenario=f"MLflow fleet: {len(uris)} URIs",
        agent=median(walls),
        naive=median(scaled),
        naive_how=f"measured on {len(targets)}, scaled per stratum",
        requests="OM 0 (dry run)",
        peak_rss_mb=agent["peak_rss_mb"],
        cpu_s=median([r["cpu"] for r in agent["runs"]]),
        target=f"<= {1.5 * t:g} s (1.5 x T) and >= 50x",
        notes=[
            f"{agent['setting']}; found {min(found)}/{live} live, failures {agent['runs'][0]['failure_kinds']}",
            f"naive sample wall {fmt_s(median([r['wall'] for r in naive['runs']]))}",
            f"responder process CPU {sum(agent['server_cpu'].values()):.1f} s over {runs} run(s)",
        ],
        raw={"agent": agent, "naive": naive, "naive_scaled": scaled, "strata": {k: len(v) for k, v in strata.items()}},
    )
    ratio = row.ratio or 0.0
    row.passed = row.agent is not None and row.agent <= 1.5 * t and ratio >= 50 and min(found) == live
    return [row]


# --- AWS fleet -------------------------------------------------------------------------------


def scenario_aws(sizes: Sizes, runs: int, workdir: Path) -> list[Row]:
    """Accounts x regions through assumed roles in moto; models in a third of the pairs."""
    env = aws_env(workdir)
    accounts = [f"{100000000000 + 7919 * i:012d}" for i in range(sizes.aws_accounts)]
    regions = list(REGIONS[: sizes.aws_regions])
    pairs = [(a, r) for a in accounts for r in regions]
    seeded = [(a, r, 1 + i % 3) for i, (a, r) in enumerate(pairs) if i % 3 == 0]
    moto = MotoProcess(env=env).start(workdir / "moto.log")
    rows = []
    try:
        log(f"aws: seeding {len(seeded)} of {len(pairs)} (account, region) pairs in moto")
        run_worker({"task": "aws-seed", "endpoint": moto.url, "pairs": seeded}, env=env)
        for latency in sizes.aws_latencies:
            moto.set_latency(latency)
            label = "loopback moto" if latency == 0 else f"moto + {latency * 1000:.0f} ms per call"
            log(f"aws: agent, {label}, {runs} run(s)")
            agent = run_worker(
                {"task": "aws-agent", "endpoint": moto.url, "accounts": accounts, "regions": regions, "runs": runs},
                env=env,
                watch=[moto.pid],
            )
            sample = accounts[: sizes.naive_aws_accounts]
            log(f"aws: naive on {len(sample)} accounts x {len(regions)} regions, {label}, {runs} run(s)")
            naive = run_worker(
                {"task": "aws-naive", "endpoint": moto.url, "accounts": sample, "regions": regions, "runs": runs},
                env=env,
                watch=[moto.pid],
            )
            scaled = [sum(r["per_stratum"]["pair"]) / len(r["per_stratum"]["pair"]) * len(pairs) for r in naive["runs"]]
            moto_cpu = sum(agent["server_cpu"].values()) / (2 * runs + 1)
            common = {
                "naive": median(scaled),
                "naive_how": f"measured on {len(sample) * len(regions)} pairs, scaled",
                "requests": "OM 0 (dry run)",
                "peak_rss_mb": agent["peak_rss_mb"],
            }
            naive_note = f"naive sample wall {fmt_s(median([r['wall'] for r in naive['runs']]))}"
            for kind, measured in (("cold: fresh agent per cycle", agent["runs"]), ("long-running", agent["warm"])):
                walls = [r["wall"] for r in measured]
                found = [r["findings"] for r in measured]
                cpus = [r["cpu"] for r in measured]
                warm = kind == "long-running"
                row = Row(
                    scenario=f"AWS fleet: {len(accounts)} acc x {len(regions)} reg, {label}, {kind}",
                    agent=median(walls),
                    cpu_s=median(cpus),
                    target=">= 10x" if warm else "(reported)",
                    notes=[
                        f"{agent['setting']}; found {min(found)}/{len(seeded)} pairs in use",
                        f"agent CPU {median(cpus):.1f} s of {median(walls):.1f} s wall; "
                        f"moto CPU {moto_cpu:.1f} s per agent cycle",
                        naive_note,
                    ],
                    raw={"agent": agent, "naive": naive, "naive_scaled": scaled, "latency": latency},
                    **common,
                )
                if warm:
                    row.notes.append(f"first cycle of the long-running agent {fmt_s(agent['warm_first']['wall'])}")
                ok = min(found) == len(seeded) and not measured[0]["failures"]
                row.passed = ((row.ratio or 0) >= 10 and ok) if warm else (None if ok else False)
                rows.append(row)
    finally:
        moto.stop()
    return rows


def scenario_aws_org(sizes: Sizes, runs: int, workdir: Path) -> list[Row]:
    """A whole organization through AWS Organizations, managed MLflow included, 50 ms per call."""
    env = aws_env(workdir)
    regions = list(REGIONS[: sizes.aws_regions])
    moto = MotoProcess(env=env).start(workdir / "moto-org.log")
    try:
        log(f"aws-org: seeding an organization of {sizes.org_accounts} accounts")
        seeded = run_worker(
            {"task": "aws-org-seed", "endpoint": moto.url, "n": sizes.org_accounts, "regions": regions}, env=env
        )
        moto.set_latency(0.05)
        log(f"aws-org: long-running agent, first cycle and {runs} more")
        agent = run_worker(
            {"task": "aws-org-agent", "endpoint": moto.url, "regions": regions, "runs": runs},
            env=env,
            watch=[moto.pid],
        )
    finally:
        moto.stop()
    accounts = sizes.org_accounts + 1  # the management account is a member too
    expected = seeded["servers"] + seeded["apps"] + seeded["usage"]
    rows = []
    for kind, measured in (("first cycle", [agent["first"]]), ("next cycles", agent["runs"])):
        walls = [r["wall"] for r in measured]
        found = [r["findings"] for r in measured]
        row = Row(
            scenario=f"AWS organization: {accounts} acc x {len(regions)} reg, +50 ms/call, {kind}",
            agent=median(walls),
            requests="OM 0 (dry run)",
            peak_rss_mb=agent["peak_rss_mb"],
            cpu_s=median([r["cpu"] for r in measured]),
            target="peak RSS < 300 MB",
            notes=[
                f"accounts listed through Organizations; found {min(found)}/{expected} "
                f"({seeded['servers']} tracking servers, {seeded['apps']} MLflow Apps, {seeded['usage']} usage pairs)",
                f"failures {measured[0]['failures']} {measured[0]['reasons']}",
            ],
            raw={"agent": agent, "seeded": {k: v for k, v in seeded.items() if k != "accounts"}},
        )
        row.passed = agent["peak_rss_mb"] < 300 and min(found) == expected and not measured[0]["failures"]
        rows.append(row)
    return rows


# --- catalog ---------------------------------------------------------------------------------


def scenario_catalog(sizes: Sizes, runs: int) -> list[Row]:
    """n services into the stand-in with added latency, with and without bulk; then an unchanged cycle."""
    n, lat = sizes.catalog_services, sizes.catalog_latency
    log(f"catalog: naive, {sizes.naive_catalog} sequential PUTs, {runs} run(s)")
    naive = run_worker({"task": "catalog-naive", "sample": sizes.naive_catalog, "latency": lat, "runs": runs})
    scaled = [sum(r["per_stratum"]["put"]) / len(r["per_stratum"]["put"]) * n for r in naive["runs"]]
    naive_median = median(scaled)
    naive_how = f"{sizes.naive_catalog} PUTs measured, scaled to {n}"
    rows = []
    for bulk in (True, False):
        log(f"catalog: agent, {n} services, bulk={'on' if bulk else 'off'}, {runs} run(s)")
        agent = run_worker(
            {
                "task": "catalog-agent",
                "n": n,
                "latency": lat,
                "bulk": bulk,
                "runs": runs,
                "max_concurrency": OPTIONS["om_max_concurrency"],
            }
        )
        first = agent["runs"]
        walls = [r["wall"] for r in first]
        writes = max(r["standin"]["writes"] for r in first)
        lists = max(r["standin"]["list"] for r in first)
        created = min(r["outcomes"].get("created", 0) for r in first)
        server_cpu = median([r["standin"]["server_cpu"] for r in first])
        batch, page = 100, 1000  # the agent's defaults, reported by the worker in `setting`
        name = "bulk" if bulk else "no bulk route"
        row = Row(
            scenario=f"Catalog: {n} new services, {name}, +{lat * 1000:.0f} ms/request",
            agent=median(walls),
            naive=naive_median,
            naive_how=naive_how,
            requests=f"{writes} writes + {lists} list",
            peak_rss_mb=agent["peak_rss_mb"],
            cpu_s=median([r["cpu"] for r in first]),
            notes=[
                f"{agent['setting']}; created {created}/{n}",
                f"stand-in process CPU {server_cpu:.1f} s per cycle",
            ],
            raw={"agent": agent, "naive": naive, "naive_scaled": scaled},
        )
        if bulk:
            limit = math.ceil(n / batch)
            row.target = f"<= {limit} writes and >= 20x"
            row.passed = writes <= limit and (row.ratio or 0) >= 20 and created == n
        else:
            row.target = ">= 8x"
            row.passed = (row.ratio or 0) >= 8 and created == n
            row.notes.append("writes = 1 bulk probe (500, routing error, not retried) + one PUT per service")
        rows.append(row)

        second = [r["second"] for r in first]
        rows.append(
            _unchanged_row(
                f"Catalog: unchanged 2nd cycle ({name})", second, "standin", n, page, naive_median, agent["peak_rss_mb"]
            )
        )
    return rows


def _unchanged_row(
    scenario: str, second: list[dict[str, Any]], stats_key: str, n: int, page: int, naive: float, rss: float
) -> Row:
    """The unchanged second cycle: no write, and ceil(n / page) list calls."""
    s_writes = max(r[stats_key]["writes"] for r in second)
    s_lists = max(r[stats_key]["list"] for r in second)
    expected_lists = math.ceil(n / page)
    row = Row(
        scenario=scenario,
        agent=median([r["wall"] for r in second]),
        naive=naive,
        naive_how="naive re-PUTs every service each cycle",
        requests=f"{s_writes} writes + {s_lists} list",
        peak_rss_mb=rss,
        cpu_s=median([r["cpu"] for r in second]),
        target=f"0 writes, {expected_lists} list calls",
        notes=[f"unchanged {min(r['outcomes'].get('unchanged', 0) for r in second)}/{n}"],
    )
    row.passed = s_writes == 0 and s_lists == expected_lists
    return row


# --- writes under load: a per-item-PUT server that throttles or slows down --------------------

# What bench.om_server answers to PUT .../bulk: as every real server, 500 with the routing message
# ("HTTP 405 Method Not Allowed"); the client learns that from one request, without retries.
BULK_STATUS = 500


def scenario_writes(sizes: Sizes, runs: int) -> list[Row]:
    """n new services through per-item PUTs against servers that throttle, slow down, or are just slow."""
    n, lat = sizes.writes_services, sizes.writes_latency
    cases = [
        ("429 beyond 8 at once", "throttle", {"latency": lat, "capacity": 8, "over": "throttle"}),
        ("latency x2 beyond 8 in flight", "slow", {"latency": lat, "capacity": 8, "over": "slow"}),
    ]
    cases += [(f"+{p * 1000:.0f} ms/request", "plain", {"latency": p}) for p in sizes.writes_plain_latencies]
    rows = []
    for label, kind, how in cases:
        behaviour = {**how, "bulk_status": BULK_STATUS}
        latency = float(cast("float", behaviour["latency"]))
        log(f"writes: naive, {sizes.naive_writes} sequential PUTs, {label}, {runs} run(s)")
        naive = run_worker({"task": "writes-naive", "sample": sizes.naive_writes, "behaviour": behaviour, "runs": runs})
        scaled = [sum(r["per_stratum"]["put"]) / len(r["per_stratum"]["put"]) * n for r in naive["runs"]]
        log(f"writes: agent, {n} services, {label}, {runs} run(s)")
        agent = run_worker(
            {
                "task": "writes-agent",
                "n": n,
                "behaviour": behaviour,
                "runs": runs,
                "max_concurrency": OPTIONS["om_max_concurrency"],
            }
        )
        first = agent["runs"]
        walls = [r["wall"] for r in first]
        wall = median(walls)
        created = min(r["outcomes"].get("created", 0) for r in first)
        failures = max(r["failures"] for r in first)
        writes = max(r["server"]["writes"] for r in first)
        requests = max(r["server"]["requests"] for r in first)
        throttled = max(r["server"]["throttled"] for r in first)
        limit_med = median([r["limit_late_median"] for r in first])
        lo = min(r["limit_late_range"][0] for r in first)
        hi = max(r["limit_late_range"][1] for r in first)
        max_conc = int(agent["setting"].split("max_concurrency=")[1].split(",")[0])
        floor8 = n * latency / 8
        floor_max = n * latency / max_conc
        row = Row(
            scenario=f"Writes: {n} new services, per-item PUT, {label}",
            agent=wall,
            naive=median(scaled),
            naive_how=f"{sizes.naive_writes} PUTs measured, scaled to {n}",
            requests=f"{writes} writes + {requests - writes} other"
            + (f" ({throttled} x 429)" if kind == "throttle" else ""),
            peak_rss_mb=agent["peak_rss_mb"],
            cpu_s=median([r["cpu"] for r in first]),
            notes=[
                f"{agent['setting']}; created {created}/{n}; failed writes {failures}"
                + (f" ({first[0]['failure_reasons']})" if failures else ""),
                f"write limit in the 2nd half of the cycle: median {limit_med:.1f} (range {lo:.1f}-{hi:.1f}); "
                f"decreases per cycle {[r['decreases'] for r in first]}",
                f"server: mean in flight {median([r['server']['mean_in_flight'] for r in first]):.1f}, "
                f"max {max(r['server']['max_in_flight'] for r in first)}, "
                f"slowed {max(r['server']['slowed'] for r in first)}; "
                f"server CPU {median([r['server']['server_cpu'] for r in first]):.1f} s per cycle",
            ],
            raw={"agent": agent, "naive": naive, "naive_scaled": scaled, "behaviour": behaviour},
        )
        ok = failures == 0 and created == n
        if kind == "throttle":
            row.target = f"0 failed, <= 1.25 x floor(8) = {fmt_s(1.25 * floor8)}"
            row.passed = ok and wall <= 1.25 * floor8
            row.notes.append(f"floor of 8-way {fmt_s(floor8)}: wall = {wall / floor8:.2f} x floor")
        elif kind == "slow":
            row.target = "0 failed, limit settles at 6-11"
            row.passed = ok and 6 <= limit_med <= 11
            row.notes.append(f"floor of 8-way {fmt_s(floor8)}: wall = {wall / floor8:.2f} x floor")
        else:
            row.target = f">= 90% of floor({max_conc}) = {fmt_s(floor_max)}"
            row.passed = ok and floor_max / wall >= 0.9
            row.notes.append(f"floor of {max_conc}-way {fmt_s(floor_max)}: {floor_max / wall:.0%} of floor reached")
        rows.append(row)

        second = [r["second"] for r in first]
        rows.append(
            _unchanged_row(
                f"Writes: unchanged 2nd cycle ({label})",
                second,
                "server",
                n,
                1000,
                median(scaled),
                agent["peak_rss_mb"],
            )
        )
    return rows


# --- whole agent -----------------------------------------------------------------------------


def scenario_startup(sizes: Sizes, workdir: Path) -> list[Row]:
    """Process start to the first probe of ``mlsvc-discover discover --once --dry-run``."""
    clock = FirstRequestClock().start()
    config = workdir / "startup.yaml"
    config.write_text(
        "discoverers:\n"
        "  - type: mlflow\n"
        "    name: one\n"
        f"    tracking_uris: [http://127.0.0.1:{clock.port}]\n"
        "    timeout: 2s\n"
    )
    script = BIN / "mlsvc-discover"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "mlsvc_discover.cli"]
    cmd += ["discover", "--once", "--dry-run", "--config", str(config)]
    env = child_env()
    for name in ("OPENMETADATA_HOST", "OPENMETADATA_JWT_TOKEN", "MLSVC_DISCOVER_CONFIG"):
        env.pop(name, None)
    delays, rss, cpu, codes = [], [], [], []
    warmup = 0.0
    try:
        # One unmeasured run first: a fresh checkout's first start compiles every .pyc, a cost
        # paid once per install (an image build), not at each start.
        for i in range(max(1, sizes.startup_runs) + 1):
            clock.reset()
            before = time.monotonic()
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            codes.append(proc.returncode)
            if clock.first_monotonic is None:
                raise RuntimeError(f"the agent never probed the responder (exit code {proc.returncode})")
            if i == 0:
                warmup = clock.first_monotonic - before
                continue
            delays.append(clock.first_monotonic - before)
            rss.append(usage.ru_maxrss / 1024)
            cpu.append(usage.ru_utime + usage.ru_stime)
    finally:
        clock.stop()
    row = Row(
        scenario="Agent: process start -> first probe",
        agent=median(delays),
        naive_how="-",
        requests="OM 0 (dry run)",
        peak_rss_mb=max(rss),
        cpu_s=median(cpu),
        target="<= 1 s",
        notes=[
            f"{len(delays)} run(s): {', '.join(f'{d:.2f}' for d in delays)} s after one unmeasured warm-up "
            f"({warmup:.2f} s); exit codes {sorted(set(codes))}"
        ],
        raw={"delays": delays, "rss_mb": rss, "cpu": cpu, "command": cmd[:3]},
    )
    row.passed = row.agent is not None and row.agent <= 1.0 and set(codes) == {0}
    return [row]


def scenario_long_running(sizes: Sizes) -> list[Row]:
    """RSS of one Agent over many short cycles, sampled from /proc between cycles."""
    fleet = ResponderFleet(sizes.long_mlflow).start()
    samples: dict[int, float] = {}

    def on_line(line: str, proc: subprocess.Popen[str]) -> None:
        if line.startswith("CYCLE "):
            samples[int(line.split()[1])] = proc_rss_mb(proc.pid)
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

    try:
        what = f"{sizes.long_mlflow} MLflow + {sizes.long_static} static"
        log(f"long-running: {sizes.cycles} cycles of one agent ({what})")
        uris = [f"http://127.0.0.1:{p}" for p in fleet.mlflow_ports]
        result = run_worker(
            {
                "task": "long-running",
                "uris": uris,
                "n_static": sizes.long_static,
                "cycles": sizes.cycles,
                "checkpoints": list(sizes.checkpoints),
            },
            on_line=on_line,
        )
    finally:
        fleet.stop()
    cps = sorted(samples)
    base, last = samples[cps[1]], samples[cps[-1]]
    growth = (last - base) / base * 100
    walls = result["cycle_walls"]
    row = Row(
        scenario=f"Agent: RSS over {sizes.cycles} cycles",
        agent=median(walls),
        naive_how="-",
        requests=f"OM {result['om_requests']['total']} total",
        peak_rss_mb=max(samples.values()),
        target=f"<= 150 MB, < 5% growth cycle {cps[1]}->{cps[-1]}",
        notes=[
            "RSS " + ", ".join(f"c{c}: {samples[c]:.1f} MB" for c in cps) + f"; growth {growth:+.1f}%",
            f"median cycle wall shown as agent; writes per cycle {result['written_per_cycle']}",
        ],
        raw={"samples": samples, "result": result},
    )
    row.passed = max(samples.values()) <= 150 and growth < 5 and result["failures"] == 0
    return [row]


# --- report ----------------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    header = ["scenario", "agent", "naive (how)", "ratio", "OM requests", "peak RSS", "CPU s", "target", "result"]
    lines = []
    for r in rows:
        naive = f"{fmt_s(r.naive)} ({r.naive_how})" if r.naive is not None else r.naive_how or "-"
        ratio = f"{r.ratio:.1f}x" if r.ratio is not None else "-"
        rss = f"{r.peak_rss_mb:.0f} MB" if r.peak_rss_mb is not None else "-"
        cpu = f"{r.cpu_s:.2f}" if r.cpu_s is not None else "-"
        verdict = "-" if r.passed is None else "PASS" if r.passed else "MISS"
        lines.append([r.scenario, fmt_s(r.agent), naive, ratio, r.requests, rss, cpu, r.target, verdict])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    out.append("")
    for r in rows:
        for note in r.notes:
            out.append(f"- {r.scenario}: {note}")
    return "\n".join(out)


def environment() -> dict[str, str]:
    """Versions that change the numbers: the HTTP stack, and whether sniffio is importable."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("httpx", "httpcore", "anyio", "sniffio", "botocore", "moto"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run, small sizes: a smoke test of under a minute")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement (median taken; default 3)")
    parser.add_argument("--json", type=Path, default=None, help="also write every raw number to this file")
    parser.add_argument(
        "--only",
        default="mlflow,aws,aws-org,catalog,writes,startup,rss",
        help="comma-separated scenarios to run (mlflow, aws, aws-org, catalog, writes, startup, rss); default all",
    )
    parser.add_argument("--mlflow-max-concurrency", type=int, help="override the mlflow discoverer's max_concurrency")
    parser.add_argument("--om-max-concurrency", type=int, help="override openmetadata.max_concurrency")
    args = parser.parse_args(argv)
    OPTIONS.update(
        mlflow_max_concurrency=args.mlflow_max_concurrency,
        om_max_concurrency=args.om_max_concurrency,
    )
    sizes = QUICK if args.quick else FULL
    runs = args.runs or (1 if args.quick else 3)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    raise_nofile_limit()
    started = time.monotonic()
    load_before = os.getloadavg()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mlsvc-bench-") as tmp:
        workdir = Path(tmp)
        if "startup" in only:
            rows += scenario_startup(sizes, workdir)
        if "mlflow" in only:
            rows += scenario_mlflow(sizes, runs, workdir)
        if "aws" in only:
            rows += scenario_aws(sizes, runs, workdir)
        if "aws-org" in only:
            rows += scenario_aws_org(sizes, runs, workdir)
        if "catalog" in only:
            rows += scenario_catalog(sizes, runs)
        if "writes" in only:
            rows += scenario_writes(sizes, runs)
        if "rss" in only:
            rows += scenario_long_running(sizes)
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()
    print(render(rows))
    print(
        f"\n{runs} run(s) per measurement, medians shown; {'quick' if args.quick else 'full'} sizes; "
        f"{os.cpu_count()} CPUs; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
        f"took {elapsed:.0f} s"
    )
    print("packages: " + ", ".join(f"{k} {v}" for k, v in environment().items()))
    changed = [f"--{k.replace('_', '-')} {v}" for k, v in OPTIONS.items() if v]
    if changed:
        print("NOT the agent as committed: measured with " + " ".join(changed))
    if args.json is not None:
        payload = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "load_average": {"before": load_before, "after": load_after},
            "runs": runs,
            "quick": args.quick,
            "sizes": asdict(sizes),
            "elapsed_seconds": elapsed,
            "options": OPTIONS,
            "packages": environment(),
            "rows": [{**asdict(r), "ratio": r.ratio} for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
