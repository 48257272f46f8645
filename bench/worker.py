"""One measured unit of the benchmark, run in a process of its own.

``python -m bench.worker`` reads one JSON task from stdin and prints one line
``RESULT {json}``: per-run wall and CPU seconds, what was found, and the peak RSS of the
process. A separate process per (scenario, approach) keeps the numbers clean: ``ru_maxrss``
is a high-water mark that never goes down, and CPU seconds include every thread (the
SageMaker discoverer's pool) but none of the servers', which all run in processes of their own.
Imports of the code under test happen before the first timer starts, in both the agent and
the naive worker, so neither is charged for Python loading modules.
"""

from __future__ import annotations

import asyncio
import functools
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["TOKEN", "main", "static_services"]

TOKEN = "bench-token-not-a-secret"
ROLE_NAME = "x"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def static_services(n: int) -> list[dict[str, Any]]:
    """``n`` declared MLflow services: what a static discoverer of a big estate would list."""
    return [
        {
            "name": f"bench-mlflow-{i:05d}",
            "service_type": "Mlflow",
            "connection": {
                "trackingUri": f"http://mlflow-{i:05d}.bench.example:5000",
                "registryUri": f"http://mlflow-{i:05d}.bench.example:5000",
            },
        }
        for i in range(n)
    ]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    cpu0, t0 = _cpu(), time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0, _cpu() - cpu0


def _warm_cycles(config: Any, runs: int) -> list[tuple[Any, float, float]]:
    """One Agent, as the long-running daemon: its first cycle, then ``runs`` more; (report, wall, cpu)."""
    from mlsvc_discover.agent import Agent

    async def all_cycles() -> list[tuple[Any, float, float]]:
        out = []
        async with Agent(config) as agent:
            for _ in range(runs + 1):
                cpu0, t0 = _cpu(), time.perf_counter()
                report = await agent.run_once(dry_run=True)
                out.append((report, time.perf_counter() - t0, _cpu() - cpu0))
        return out

    return asyncio.run(all_cycles())


def _dry_cycles(config: Any, runs: int) -> list[tuple[Any, float, float]]:
    """``runs`` dry-run cycles, each by a fresh Agent (as a cold ``--once`` run): (report, wall, cpu)."""
    from mlsvc_discover.agent import Agent

    async def cycle(agent: Agent) -> Any:
        async with agent:
            return await agent.run_once(dry_run=True)

    out = []
    for _ in range(runs):
        agent = Agent(config)  # built before the timer starts, as a process would before its cycle

        def one_cycle(agent: Agent = agent) -> Any:
            return asyncio.run(cycle(agent))

        out.append(_timed(one_cycle))
    return out


# --- MLflow fleet ----------------------------------------------------------------------------


def mlflow_agent(task: dict[str, Any]) -> dict[str, Any]:
    from bench.responders import raise_nofile_limit
    from mlsvc_discover.config import parse_config

    raise_nofile_limit()
    raw = {
        "discoverers": [
            {
                "type": "mlflow",
                "name": "fleet",
                "tracking_uris": task["uris"],
                "timeout": task["timeout"],
                **({"max_concurrency": task["max_concurrency"]} if task.get("max_concurrency") else {}),
            }
        ]
    }
    config = parse_config(raw, env={})
    concurrency = config.discoverers[0].max_concurrency  # type: ignore[attr-defined]
    runs = []
    for report, wall, cpu in _dry_cycles(config, task["runs"]):
        stats = report.discoverers["fleet"]
        kinds: dict[str, int] = {}
        for f in report.failures:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        runs.append(
            {
                "wall": wall,
                "cpu": cpu,
                "discover_seconds": stats.duration,
                "findings": stats.findings,
                "failures": stats.failures,
                "failure_kinds": kinds,
            }
        )
    return {"runs": runs, "setting": f"max_concurrency={concurrency}, timeout={task['timeout']}s"}


def mlflow_naive(task: dict[str, Any]) -> dict[str, Any]:
    from bench.naive import naive_mlflow

    targets = [(s, u) for s, u in task["targets"]]
    runs = []
    for _ in range(task["runs"]):
        timing, wall, cpu = _timed(lambda: naive_mlflow(targets, float(task["timeout"])))
        runs.append(
            {
                "wall": wall,
                "cpu": cpu,
                "per_stratum": timing.seconds,
                "findings": timing.found,
                "failures": timing.failed,
                "requests": timing.requests,
            }
        )
    return {"runs": runs}


# --- AWS fleet -------------------------------------------------------------------------------


def aws_seed(task: dict[str, Any]) -> dict[str, Any]:
    """Create models (and a few package groups and endpoints) in the chosen (account, region) pairs."""
    import boto3

    endpoint = task["endpoint"]
    base = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    sts = base.client("sts", endpoint_url=endpoint)
    seeded = 0
    for account, region, n_models in task["pairs"]:
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{ROLE_NAME}", RoleSessionName="seed")[
            "Credentials"
        ]
        sm = boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        ).client("sagemaker", region_name=region, endpoint_url=endpoint)
        for m in range(n_models):
            sm.create_model(
                ModelName=f"model-{m}",
                ExecutionRoleArn=f"arn:aws:iam::{account}:role/sagemaker-execution",
                PrimaryContainer={"Image": f"{account}.dkr.ecr.{region}.amazonaws.com/model:{m}"},
            )
        if seeded % 5 == 0:
            sm.create_model_package_group(ModelPackageGroupName="bench-group")
        seeded += 1
    return {"runs": [], "seeded_pairs": seeded}


def _aws_run(report: Any, wall: float, cpu: float, name: str) -> dict[str, Any]:
    stats = report.discoverers[name]
    return {
        "wall": wall,
        "cpu": cpu,
        "discover_seconds": stats.duration,
        "findings": stats.findings,
        "failures": stats.failures,
        "reasons": sorted({f.reason for f in report.failures})[:5],
    }


def aws_agent(task: dict[str, Any]) -> dict[str, Any]:
    """The sagemaker discoverer over explicit accounts, doing the naive script's work (no managed MLflow).

    ``runs`` cold cycles (a fresh Agent each, as ``--once``), then one long-running Agent: its
    first cycle and ``runs`` more, the daemon's steady state (clients and credentials reused).
    """
    import botocore.session  # noqa: F401 - loaded before the timers, as in a running agent

    from mlsvc_discover.config import parse_config

    settings = {k: task[k] for k in ("max_concurrency_per_account", "max_accounts_concurrency") if task.get(k)}
    raw = {
        "discoverers": [
            {
                "type": "sagemaker",
                "name": "aws",
                "endpoint_url": task["endpoint"],
                "regions": task["regions"],
                "accounts": [{"role_arn": f"arn:aws:iam::{a}:role/{ROLE_NAME}"} for a in task["accounts"]],
                # The naive script lists models, package groups and endpoints only: same work.
                "managed_mlflow": {"enabled": False},
                **settings,
            }
        ]
    }
    config = parse_config(raw, env={})
    d = config.discoverers[0]
    setting = (
        f"max_concurrency_per_account={d.max_concurrency_per_account}, "  # type: ignore[attr-defined]
        f"max_accounts_concurrency={d.max_accounts_concurrency}"  # type: ignore[attr-defined]
    )
    cold = [_aws_run(*c, "aws") for c in _dry_cycles(config, task["runs"])]
    warm = [_aws_run(*c, "aws") for c in _warm_cycles(config, task["runs"])]
    return {"runs": cold, "warm_first": warm[0], "warm": warm[1:], "setting": setting}


def aws_org_seed(task: dict[str, Any]) -> dict[str, Any]:
    """An organization of ``n`` member accounts in moto, with models and managed MLflow in some pairs."""
    import boto3

    from testing.aws_fake import control

    endpoint = task["endpoint"]
    base = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    orgs = base.client("organizations", endpoint_url=endpoint)
    orgs.create_organization(FeatureSet="ALL")
    accounts = []
    for i in range(task["n"]):
        status = orgs.create_account(Email=f"member-{i}@example.com", AccountName=f"member-{i}")
        accounts.append(status["CreateAccountStatus"]["AccountId"])
    servers = apps = 0
    for i, account in enumerate(accounts):
        for j, region in enumerate(task["regions"]):
            if (i + j) % 4 == 0:
                control(endpoint, "tracking-server", {"account": account, "region": region, "name": f"team-{i}"})
                servers += 1
            if (i + j) % 9 == 0:
                control(endpoint, "app", {"account": account, "region": region, "name": f"app-{i}"})
                apps += 1
    seeded = aws_seed(
        {"endpoint": endpoint, "pairs": [(a, task["regions"][0], 1) for i, a in enumerate(accounts) if i % 5 == 0]}
    )
    return {"runs": [], "accounts": accounts, "servers": servers, "apps": apps, "usage": seeded["seeded_pairs"]}


def aws_org_agent(task: dict[str, Any]) -> dict[str, Any]:
    """The sagemaker discoverer over a whole organization, managed MLflow included; long-running."""
    import botocore.session  # noqa: F401 - loaded before the timers, as in a running agent

    from mlsvc_discover.config import parse_config

    raw = {
        "discoverers": [
            {
                "type": "sagemaker",
                "name": "org",
                "endpoint_url": task["endpoint"],
                "regions": task["regions"],
                "organization": {"member_role_name": ROLE_NAME},
            }
        ]
    }
    config = parse_config(raw, env={})
    cycles = [_aws_run(*c, "org") for c in _warm_cycles(config, task["runs"])]
    return {"first": cycles[0], "runs": cycles[1:]}


def aws_naive(task: dict[str, Any]) -> dict[str, Any]:
    import boto3  # noqa: F401 - loaded before the timers, as for the agent

    from bench.naive import naive_aws

    runs = []
    for _ in range(task["runs"]):
        timing, wall, cpu = _timed(lambda: naive_aws(task["endpoint"], task["accounts"], task["regions"]))
        runs.append(
            {
                "wall": wall,
                "cpu": cpu,
                "per_stratum": timing.seconds,
                "findings": timing.found,
                "requests": timing.requests,
            }
        )
    return {"runs": runs}


# --- catalog ---------------------------------------------------------------------------------


def _catalog_config(task: dict[str, Any], host: str) -> dict[str, Any]:
    om: dict[str, Any] = {"host": host, "token": TOKEN, "use_bulk": True}
    for key in ("batch_size", "page_size", "max_concurrency"):
        if task.get(key):
            om[key] = task[key]
    return {
        "openmetadata": om,
        "discoverers": [{"type": "static", "name": "estate", "services": static_services(task["n"])}],
    }


def catalog_agent(task: dict[str, Any]) -> dict[str, Any]:
    """Cycle 1 writes n new services into an empty stand-in; cycle 2 (same agent) changes nothing."""
    from bench.servers import StandInProcess
    from mlsvc_discover.agent import Agent
    from mlsvc_discover.config import parse_config

    standin = StandInProcess(bulk=task["bulk"], latency=task["latency"], token=TOKEN)
    runs = []
    try:
        base = parse_config(_catalog_config(task, standin.base_url), env={})
        om = base.openmetadata
        setting = f"batch_size={om.batch_size}, page_size={om.page_size}, max_concurrency={om.max_concurrency}"
        for _ in range(task["runs"]):
            url = standin.fresh()
            config = base.model_copy(update={"openmetadata": om.model_copy(update={"host": url})})
            agent = Agent(config)

            async def both(agent: Agent = agent) -> list[dict[str, Any]]:
                out = []
                try:
                    for _cycle in (1, 2):
                        standin.reset()
                        server0 = standin.stats()["server_cpu"]
                        cpu0, t0 = _cpu(), time.perf_counter()
                        report = await agent.run_once()
                        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
                        seen = standin.stats()
                        seen["server_cpu"] -= server0
                        out.append(
                            {
                                "wall": wall,
                                "cpu": cpu,
                                "outcomes": dict(report.outcomes),
                                "failures": len(report.failures),
                                "fatal": report.fatal,
                                "client_requests": agent.client.requests_sent if agent.client else None,
                                "standin": seen,
                            }
                        )
                finally:
                    await agent.aclose()
                return out

            first, second = asyncio.run(both())
            runs.append({**first, "second": second})
    finally:
        standin.stop()
    return {"runs": runs, "setting": setting}


def catalog_bodies(n: int) -> list[dict[str, Any]]:
    """The exact create bodies the agent sends for the static estate (same mapper, same tag)."""
    from mlsvc_discover.config import parse_config
    from mlsvc_discover.discoverers.static import StaticDiscoverer, StaticDiscovererConfig
    from mlsvc_discover.mapper import map_findings, owner_tag_fqn

    config = parse_config(_catalog_config({"n": n}, "http://127.0.0.1:1/api"), env={})
    d = config.discoverers[0]
    assert isinstance(d, StaticDiscovererConfig)
    result = asyncio.run(StaticDiscoverer(d).discover())
    mapped = map_findings(result.findings, owner_tag=owner_tag_fqn(config.ownership_classification, config.owner_id))
    return [mapped.desired[name].body() for name in sorted(mapped.desired)]


def catalog_naive(task: dict[str, Any]) -> dict[str, Any]:
    from bench.servers import StandInProcess

    standin = StandInProcess(bulk=True, latency=task["latency"], token=TOKEN)
    return _naive_put_runs(standin, catalog_bodies(task["sample"]), task["runs"], stats_key="standin")


# --- writes against a per-item-PUT server under load -----------------------------------------


def writes_agent(task: dict[str, Any]) -> dict[str, Any]:
    """Cycle 1 writes n new services into an empty ``bench.om_server``; cycle 2 changes nothing.

    The write limit is sampled every 20 ms from the agent's client while cycle 1 runs.
    """
    from bench.om_server import Behaviour, OmServerProcess
    from mlsvc_discover.agent import Agent
    from mlsvc_discover.config import parse_config

    server = OmServerProcess(Behaviour(**task["behaviour"]), token=TOKEN)
    runs = []
    try:
        base = parse_config(_catalog_config(task, server.base_url), env={})
        om = base.openmetadata
        setting = (
            f"max_concurrency={om.max_concurrency}, min_concurrency={om.min_concurrency}, "
            f"initial_concurrency={om.initial_concurrency or 'default'}, retries={om.retries}"
        )
        for _ in range(task["runs"]):
            url = server.fresh()
            config = base.model_copy(update={"openmetadata": om.model_copy(update={"host": url})})
            agent = Agent(config)

            async def both(agent: Agent = agent) -> list[dict[str, Any]]:
                out = []
                client = agent.client
                assert client is not None
                limits: list[float] = []

                async def sample() -> None:
                    while True:
                        limits.append(client.limiter.limit.limit)
                        await asyncio.sleep(0.02)

                try:
                    for cycle in (1, 2):
                        server.reset()
                        server0 = server.stats()["server_cpu"]
                        sampler = asyncio.create_task(sample()) if cycle == 1 else None
                        cpu0, t0 = _cpu(), time.perf_counter()
                        report = await agent.run_once()
                        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
                        if sampler is not None:
                            sampler.cancel()
                        seen = server.stats()
                        seen["server_cpu"] -= server0
                        late = sorted(limits[len(limits) // 2 :]) or [0.0]
                        out.append(
                            {
                                "wall": wall,
                                "cpu": cpu,
                                "outcomes": dict(report.outcomes),
                                "failures": len(report.failures),
                                "failure_reasons": sorted({f.reason for f in report.failures})[:3],
                                "fatal": report.fatal,
                                "server": seen,
                                "limit_late_median": late[len(late) // 2] if cycle == 1 else None,
                                "limit_late_range": [late[0], late[-1]] if cycle == 1 else None,
                                "decreases": client.limiter.limit.decreases,
                            }
                        )
                finally:
                    await agent.aclose()
                return out

            first, second = asyncio.run(both())
            runs.append({**first, "second": second})
    finally:
        server.stop()
    return {"runs": runs, "setting": setting}


def writes_naive(task: dict[str, Any]) -> dict[str, Any]:
    """The naive script (one PUT after another) against the same kind of server."""
    from bench.om_server import Behaviour, OmServerProcess

    server = OmServerProcess(Behaviour(**task["behaviour"]), token=TOKEN)
    return _naive_put_runs(server, catalog_bodies(task["sample"]), task["runs"], stats_key="server")


class _PutServer(Protocol):
    def fresh(self) -> str: ...
    def stats(self) -> dict[str, Any]: ...
    def stop(self) -> None: ...


def _naive_put_runs(server: _PutServer, bodies: list[dict[str, Any]], runs: int, *, stats_key: str) -> dict[str, Any]:
    """The naive script ``runs`` times, each against a fresh catalog on ``server``, which it stops."""
    from bench.naive import naive_put

    out = []
    try:
        for _ in range(runs):
            url = server.fresh()
            timing, wall, cpu = _timed(functools.partial(naive_put, url, TOKEN, bodies))
            out.append(
                {
                    "wall": wall,
                    "cpu": cpu,
                    "per_stratum": timing.seconds,
                    "findings": timing.found,
                    "failures": timing.failed,
                    stats_key: server.stats(),
                }
            )
    finally:
        server.stop()
    return {"runs": out}


# --- a long-running agent --------------------------------------------------------------------


def long_running(task: dict[str, Any]) -> dict[str, Any]:
    """Run ``cycles`` cycles in one Agent; after each checkpoint print ``CYCLE n`` and wait for ``go``.

    The parent reads this process's VmRSS from /proc while it waits, so sampling never runs
    inside a cycle and the sample is taken from outside, as a container runtime would.
    """
    from bench.servers import StandInProcess
    from mlsvc_discover.agent import Agent
    from mlsvc_discover.config import parse_config

    standin = StandInProcess(bulk=True, latency=0.0, token=TOKEN)
    checkpoints = set(task["checkpoints"])
    raw = {
        "openmetadata": {"host": standin.base_url, "token": TOKEN},
        "discoverers": [
            {"type": "mlflow", "name": "fleet", "tracking_uris": task["uris"], "timeout": "2s"},
            {"type": "static", "name": "estate", "services": static_services(task["n_static"])},
        ],
    }
    config = parse_config(raw, env={})
    walls: list[float] = []
    written: list[int] = []
    failures = 0
    try:

        async def run() -> None:
            nonlocal failures
            agent = Agent(config)
            loop = asyncio.get_running_loop()
            try:
                for n in range(1, task["cycles"] + 1):
                    t0 = time.perf_counter()
                    report = await agent.run_once()
                    walls.append(time.perf_counter() - t0)
                    written.append(sum(report.outcomes[k] for k in ("created", "updated", "restored")))
                    failures += len(report.failures)
                    if n in checkpoints:
                        print(f"CYCLE {n}", flush=True)
                        await loop.run_in_executor(None, sys.stdin.readline)
            finally:
                await agent.aclose()

        asyncio.run(run())
        om_requests = standin.stats()
    finally:
        standin.stop()
    return {
        "runs": [],
        "cycle_walls": walls,
        "written_per_cycle": written[:3] + written[-1:],
        "failures": failures,
        "om_requests": om_requests,
    }


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "mlflow-agent": mlflow_agent,
    "mlflow-naive": mlflow_naive,
    "aws-seed": aws_seed,
    "aws-agent": aws_agent,
    "aws-naive": aws_naive,
    "aws-org-seed": aws_org_seed,
    "aws-org-agent": aws_org_agent,
    "catalog-agent": catalog_agent,
    "catalog-naive": catalog_naive,
    "writes-agent": writes_agent,
    "writes-naive": writes_naive,
    "long-running": long_running,
}


def main() -> int:
    task = json.loads(sys.stdin.readline())
    result = TASKS[task["task"]](task)
    result["peak_rss_mb"] = _peak_rss_mb()
    result["final_rss_mb"] = _rss_mb()
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
