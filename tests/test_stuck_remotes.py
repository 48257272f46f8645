"""Every wait has a bound: remotes that trickle or never answer cannot wedge, hide or outlive the agent.

Each case runs the installed CLI as a real process against hostile loopback servers
(``testing/hostile.py``): an AWS endpoint (the sagemaker discoverer's ``endpoint_url``)
or an OpenMetadata that sends one byte per second or never answers. The per-call bounds of the
AWS and OpenMetadata clients are deliberately configured huge here (``read_timeout: 1h``,
``timeout: 1h``), so what ends each run is the outer bound under test: the cycle deadline, or a
signal and the grace period. Margins are generous because the machine is shared.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsvc_discover.agent import Agent
from mlsvc_discover.config import parse_config
from mlsvc_discover.daemon import Daemon
from mlsvc_discover.report import Report
from mlsvc_discover.server import Liveness
from testing.hostile import HostileServer, Mode
from testing.om_fixtures import OM_TOKEN
from testing.openmetadata import FaultRule, OpenMetadataStandIn
from tests.helpers import CLI, http_get

# Everything the process may take beyond the bound under test: start-up (imports, boto3),
# closing, writing the report, on a loaded machine.
SLACK = 8.0
# The same for a whole --once run, which also imports boto3, closes its discoverers (at most 2 s)
# and checks for stuck threads (at most 1 s) after the cycle.
RUN_SLACK = 15.0
STATIC = {"type": "static", "name": "declared", "services": [{"name": "sk-scoring", "service_type": "Sklearn"}]}


def sagemaker(endpoint: str) -> dict[str, Any]:
    """A sagemaker discoverer whose own timeouts would wait an hour."""
    return {
        "type": "sagemaker",
        "name": "aws",
        "endpoint_url": endpoint,
        "regions": ["us-east-1"],
        "accounts": [{}],
        "connect_timeout": "5s",
        "read_timeout": "1h",
        "max_attempts": 1,
    }


def base_config(om_host: str, *discoverers: dict[str, Any], **top: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "owner_id": "stuck-test",
        "openmetadata": {"host": om_host, "token": OM_TOKEN, "retries": 0, "timeout": "1h"},
        "schedule": {"interval": "1h", "grace_period": "2s"},
        "server": {"address": "127.0.0.1:0"},
        "discoverers": list(discoverers),
    }
    raw.update(top)
    return raw


def aws_env(tmp_path: Path) -> dict[str, str]:
    """Fake keys and no host AWS configuration: botocore talks only to the endpoint given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="AKIDSTUCKTEST",
        AWS_SECRET_ACCESS_KEY="stuck-test-secret",
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        MLSVC_DISCOVER_LOG_LEVEL="INFO",
    )
    return env


class Agentproc:
    """The CLI as a real process, its output in files; killed at teardown if still running."""

    def __init__(self, tmp_path: Path, raw: dict[str, Any], *args: str) -> None:
        self.config = tmp_path / "config.yaml"
        self.config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        self.out = tmp_path / "stdout"
        self.err = tmp_path / "stderr"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(  # waited for by the test, killed by the fixture
                [str(CLI), "discover", "--config", str(self.config), *args],
                stdout=out,
                stderr=err,
                env=aws_env(tmp_path),
            )
        self.started = time.monotonic()

    @property
    def log(self) -> str:
        return self.err.read_text(errors="replace")

    def wait(self, timeout: float) -> tuple[int, float]:
        """Exit code and seconds since start; fails the test if it runs longer."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout:g}s later:\n{self.log}")
        return code, time.monotonic() - self.started

    def wait_for(self, condition: Any, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"exited with {self.proc.returncode} before {what}:\n{self.log}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}:\n{self.log}")
            time.sleep(0.05)

    def port(self) -> int:
        self.wait_for(lambda: "(port " in self.log, "the health endpoint")
        m = re.search(r"serving /healthz, /readyz and /metrics on \S+ \(port (\d+)\)", self.log)
        assert m, self.log
        return int(m.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def procs() -> Iterator[list[Agentproc]]:
    started: list[Agentproc] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture
def hostile() -> Iterator[list[HostileServer]]:
    servers: list[HostileServer] = []
    yield servers
    for s in servers:
        s.close()


def serve(servers: list[HostileServer], mode: Mode) -> HostileServer:
    server = HostileServer(mode).start()
    servers.append(server)
    return server


# --- the cycle deadline --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["never", "trickle"])
def test_once_ends_at_the_cycle_deadline_when_aws_holds_a_discoverer_and_the_rest_is_registered(
    mode: Mode,
    om_standin: OpenMetadataStandIn,
    hostile: list[HostileServer],
    procs: list[Agentproc],
    tmp_path: Path,
) -> None:
    aws = serve(hostile, mode)
    # 10 s: the discoverers get 7.5 s, OpenMetadata 2.5 s, enough on a loaded machine.
    raw = base_config(om_standin.base_url, STATIC, sagemaker(aws.url), cycle_timeout="10s")
    agent = Agentproc(tmp_path, raw, "--once", "--output", "json")
    procs.append(agent)

    # botocore's thread stays blocked for an hour; neither the cycle nor the exit waits for it.
    code, _ = agent.wait(10 + RUN_SLACK)
    report = json.loads(agent.out.read_text())

    assert report["duration_seconds"] < 10 + 2  # the cycle itself ended at its deadline

    assert aws.requests >= 1
    assert code == 1, agent.log
    assert report["discoverers"]["aws"]["ok"] is False
    [failure] = [f for f in report["failures"] if f.get("source") == "aws"]
    assert failure["kind"] == "deadline"
    assert "did not finish within 7.5s, its share of the cycle deadline (cycle_timeout)" in failure["reason"]
    # The write phase got what was left: the healthy discoverer's service is registered.
    assert report["discoverers"]["declared"]["ok"] is True
    assert "sk-scoring" in om_standin.services
    assert report["outcomes"] == {"created": 1}
    assert "Traceback" not in agent.log


@pytest.mark.parametrize("mode", ["never", "trickle"])
def test_once_ends_at_the_cycle_deadline_when_openmetadata_holds_the_listing_and_writes_nothing(
    mode: Mode, hostile: list[HostileServer], procs: list[Agentproc], tmp_path: Path
) -> None:
    om = serve(hostile, mode)
    raw = base_config(om.url + "/api", STATIC, cycle_timeout="3s")
    agent = Agentproc(tmp_path, raw, "--once", "--output", "json")
    procs.append(agent)

    code, _ = agent.wait(3 + RUN_SLACK)
    report = json.loads(agent.out.read_text())

    assert report["duration_seconds"] < 3 + 2  # the cycle itself ended at its deadline

    assert code == 1, agent.log
    assert report["fatal_kind"] == "cycle_deadline"
    assert "cycle_timeout 3s" in report["fatal"]
    assert "reading OpenMetadata" in report["fatal"]
    assert "plan" not in report
    assert om.requests == 1  # the listing; nothing was written
    assert "Traceback" not in agent.log


def test_a_cycle_held_while_writing_ends_at_its_deadline_reporting_the_writes_not_applied(
    om_standin: OpenMetadataStandIn, tmp_path: Path
) -> None:
    import asyncio

    services = [{"name": f"sk-{i}", "service_type": "Sklearn"} for i in range(3)]
    raw = base_config(om_standin.base_url, {**STATIC, "services": services}, cycle_timeout="2s", policy="sync")
    raw["openmetadata"].update(use_bulk=False, max_concurrency=1)
    raw["state"] = {"path": str(tmp_path / "state.json")}
    # Every write is held far longer than the cycle may last.
    om_standin.inject(FaultRule(method="PUT", path=r"/mlmodelServices$", delay=600))

    async def cycle() -> Report:
        async with Agent(parse_config(raw, env={})) as agent:
            return await agent.run_once()

    started = time.monotonic()
    report = asyncio.run(cycle())
    took = time.monotonic() - started

    assert took < 2 + SLACK
    assert report.fatal_kind == "cycle_deadline"
    assert report.fatal is not None
    assert "cycle_timeout 2s" in report.fatal
    assert "writing to OpenMetadata" in report.fatal
    assert report.exit_code == 1
    assert report.applied == []
    assert report.not_applied == ["sk-0", "sk-1", "sk-2"]
    assert "interrupted: not applied: sk-0, sk-1, sk-2" in report.render_text()
    # Miss counts are not advanced by a cycle cut short.
    assert not (tmp_path / "state.json").exists()


# --- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("held", ["aws", "openmetadata"])
@pytest.mark.parametrize(("sig", "expected"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_once_within_the_grace_period_whatever_the_remote_does(
    held: str,
    sig: signal.Signals,
    expected: int,
    om_standin: OpenMetadataStandIn,
    hostile: list[HostileServer],
    procs: list[Agentproc],
    tmp_path: Path,
) -> None:
    remote = serve(hostile, "trickle")
    if held == "aws":
        raw = base_config(om_standin.base_url, sagemaker(remote.url), cycle_timeout="1h")
    else:
        raw = base_config(remote.url + "/api", STATIC, cycle_timeout="1h")
    agent = Agentproc(tmp_path, raw, "--once")
    procs.append(agent)
    agent.wait_for(lambda: remote.requests >= 1, "the remote to hold the cycle")
    time.sleep(0.5)

    agent.proc.send_signal(sig)
    signalled = time.monotonic()
    code, _ = agent.wait(2 + SLACK)
    took = time.monotonic() - signalled

    assert code == expected, agent.log
    assert took < 2 + SLACK
    assert f"received {sig.name}: stopping after the write in flight (grace period 2s)" in agent.log
    assert f"stopped by {sig.name}" in agent.log
    assert "Traceback" not in agent.log


def test_a_second_ctrl_c_ends_once_at_once_without_waiting_out_the_grace_period(
    hostile: list[HostileServer], procs: list[Agentproc], tmp_path: Path
) -> None:
    om = serve(hostile, "trickle")
    raw = base_config(om.url + "/api", STATIC, cycle_timeout="1h", schedule={"interval": "1h", "grace_period": "5m"})
    agent = Agentproc(tmp_path, raw, "--once")
    procs.append(agent)
    agent.wait_for(lambda: om.requests >= 1, "OpenMetadata to hold the cycle")
    agent.proc.send_signal(signal.SIGINT)
    agent.wait_for(lambda: "received SIGINT: stopping" in agent.log, "the first signal to be handled")

    agent.proc.send_signal(signal.SIGINT)
    signalled = time.monotonic()
    code, _ = agent.wait(SLACK)

    assert code == 130
    assert time.monotonic() - signalled < SLACK
    assert "received SIGINT again: cancelling the cycle now" in agent.log
    assert "Traceback" not in agent.log


@pytest.mark.parametrize("held", ["aws", "openmetadata"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_long_running_agent_within_the_grace_period_whatever_the_remote_does(
    held: str,
    sig: signal.Signals,
    om_standin: OpenMetadataStandIn,
    hostile: list[HostileServer],
    procs: list[Agentproc],
    tmp_path: Path,
) -> None:
    remote = serve(hostile, "trickle")
    if held == "aws":
        raw = base_config(om_standin.base_url, sagemaker(remote.url), cycle_timeout="1h")
    else:
        raw = base_config(remote.url + "/api", STATIC, cycle_timeout="1h")
    agent = Agentproc(tmp_path, raw)
    procs.append(agent)
    port = agent.port()
    agent.wait_for(lambda: remote.requests >= 1, "the remote to hold the cycle")
    assert http_get(f"http://127.0.0.1:{port}/healthz", timeout=10) == (200, "ok\n")  # within its deadline: alive

    agent.proc.send_signal(sig)
    signalled = time.monotonic()
    code, _ = agent.wait(2 + SLACK)
    took = time.monotonic() - signalled

    assert code == 0, agent.log
    assert took < 2 + SLACK
    assert f"received {sig.name}: stopping" in agent.log
    assert "the grace period of 2s ran out" in agent.log
    assert "Traceback" not in agent.log


def test_cycles_held_by_a_trickling_aws_endpoint_end_at_their_deadline_and_the_next_ones_run(
    om_standin: OpenMetadataStandIn, hostile: list[HostileServer], procs: list[Agentproc], tmp_path: Path
) -> None:
    aws = serve(hostile, "trickle")
    raw = base_config(
        om_standin.base_url,
        STATIC,
        sagemaker(aws.url),
        cycle_timeout="6s",  # a quarter (1.5 s) left for OpenMetadata on a loaded machine
        schedule={"interval": "500ms", "grace_period": "2s"},
    )
    agent = Agentproc(tmp_path, raw)
    procs.append(agent)
    port = agent.port()

    agent.wait_for(lambda: "cycle 3 " in agent.log, "three cycles", timeout=60)
    status, body = http_get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    metrics = http_get(f"http://127.0.0.1:{port}/metrics", timeout=10)[1]
    agent.proc.send_signal(signal.SIGTERM)
    code, _ = agent.wait(2 + SLACK)

    assert code == 0
    # Every cycle ended at its deadline: the held discoverer failed, the rest was registered.
    assert len(re.findall(r"cycle \d+ ok in [0-9.]+s: 1 found", agent.log)) >= 3, agent.log
    assert agent.log.count("did not finish within 4.5s, its share of the cycle deadline") >= 3
    assert "sk-scoring" in om_standin.services
    assert (status, body) == (200, "ok\n")
    assert re.search(r"^mlsvc_discover_cycles_in_flight [01]\.0$", metrics, re.M), metrics
    assert re.search(r"^mlsvc_discover_oldest_cycle_in_flight_age_seconds [0-9.e+-]+$", metrics, re.M)


# --- liveness ---------------------------------------------------------------------------------


class _WedgedAgent(Agent):
    """A cycle that blocks the event loop itself: nothing inside the process can end it."""

    block = 4.0

    async def run_once(self, *, dry_run: bool = False, stop: Any = None, report: Report | None = None) -> Report:
        time.sleep(self.block)  # deliberately blocking: the loop is wedged for this long
        return report or Report()


def test_healthz_fails_with_a_reason_while_a_cycle_runs_past_its_deadline_plus_margin_and_recovers() -> None:
    import asyncio

    config = parse_config(
        {
            "owner_id": "wedge-test",
            "cycle_timeout": "1s",
            "schedule": {"interval": "1h"},
            "server": {"address": "127.0.0.1:0", "liveness_margin": "1s"},
        },
        env={},
    )
    daemon = Daemon(config, agent=_WedgedAgent(config))
    seen: list[tuple[float, int, str, str]] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            if daemon.port:
                try:
                    status, body = http_get(f"http://127.0.0.1:{daemon.port}/healthz", timeout=10)
                    metrics = http_get(f"http://127.0.0.1:{daemon.port}/metrics", timeout=10)[1]
                except OSError:  # the endpoint closing at the end of the test
                    pass
                else:
                    seen.append((time.monotonic(), status, body, metrics))
            time.sleep(0.1)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.started.wait(), 10)
        while daemon.cycles < 1 or daemon.liveness.in_flight():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # probes after the wedge ended
        stop.set()
        await asyncio.wait_for(task, 10)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        asyncio.run(main())
    finally:
        done.set()
        prober.join(timeout=15)

    failing = [(s, b, m) for _, s, b, m in seen if s != 200]
    assert failing, seen
    status, body, metrics = failing[0]
    assert status == 503
    assert re.fullmatch(
        r"wedged: a cycle has been running for \d+s, more than its deadline plus margin \(2s\); "
        r"restart the agent\n",
        body,
    ), body
    assert "mlsvc_discover_cycles_in_flight 1.0" in metrics
    age = float(re.search(r"^mlsvc_discover_oldest_cycle_in_flight_age_seconds (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
    assert age > 2
    # Once the cycle is over the agent is alive again.
    assert seen[-1][1:3] == (200, "ok\n")
    assert "mlsvc_discover_cycles_in_flight 0.0" in seen[-1][3]


def test_liveness_counts_cycles_in_flight_and_fails_only_past_its_limit() -> None:
    now = [100.0]
    live = Liveness(10.0, clock=lambda: now[0])
    assert live.check() == (True, "ok")
    assert live.in_flight() == 0
    assert live.oldest_age() == 0.0
    first = live.begin()
    now[0] += 4
    second = live.begin()
    now[0] += 6
    assert live.in_flight() == 2
    assert live.oldest_age() == 10.0
    assert live.check()[0] is True  # exactly at the limit is still alive
    now[0] += 0.5
    alive, reason = live.check()
    assert not alive
    assert reason.startswith("wedged: a cycle has been running for 10s")
    live.end(first)
    assert live.check() == (True, "ok")
    assert live.oldest_age() == 6.5
    live.end(second)
    live.end(second)  # ending twice is harmless
    assert live.in_flight() == 0


# --- SIGHUP ----------------------------------------------------------------------------------


def test_sighup_with_a_valid_config_swaps_it_in_before_the_next_cycle(
    om_standin: OpenMetadataStandIn, procs: list[Agentproc], tmp_path: Path
) -> None:
    raw = base_config(om_standin.base_url, STATIC, schedule={"interval": "300ms", "grace_period": "2s"})
    agent = Agentproc(tmp_path, raw)
    procs.append(agent)
    agent.wait_for(lambda: "sk-scoring" in om_standin.services, "the first service")

    services = [*STATIC["services"], {"name": "sk-added-by-reload", "service_type": "Sklearn"}]
    raw["discoverers"] = [{**STATIC, "services": services}]
    agent.config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for(lambda: "sk-added-by-reload" in om_standin.services, "the reloaded config to take effect")
    agent.wait_for(lambda: "config reloaded" in agent.log, "the reload log line")
    agent.proc.send_signal(signal.SIGTERM)
    code, _ = agent.wait(2 + SLACK)

    assert code == 0
    assert "received SIGHUP: config is valid; it replaces the running one before the next cycle" in agent.log
    assert "Traceback" not in agent.log


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("owner_id: stuck-test\npolicy: delete-everything\n", "policy"),
        ("owner_id: [unclosed\n", "is not valid YAML"),
        ("a: &a [*a]\n", "recursive alias"),
    ],
)
def test_sighup_with_an_invalid_config_keeps_the_running_one_and_says_why(
    text: str, named: str, om_standin: OpenMetadataStandIn, procs: list[Agentproc], tmp_path: Path
) -> None:
    raw = base_config(om_standin.base_url, STATIC, schedule={"interval": "300ms", "grace_period": "2s"})
    agent = Agentproc(tmp_path, raw)
    procs.append(agent)
    agent.wait_for(lambda: "cycle 1 ok" in agent.log, "the first cycle")

    agent.config.write_text(text, encoding="utf-8")
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for(lambda: "config is invalid" in agent.log, "the reload to be refused")
    after = agent.log.count(" ok in ")
    agent.wait_for(lambda: agent.log.count(" ok in ") >= after + 2, "two more cycles on the running config")
    agent.proc.send_signal(signal.SIGTERM)
    code, _ = agent.wait(2 + SLACK)

    assert code == 0
    line = next(x for x in agent.log.splitlines() if "config is invalid" in x)
    assert "received SIGHUP: config is invalid, keeping the running one:" in line
    assert named in agent.log
    assert "config reloaded" not in agent.log
    assert "Traceback" not in agent.log
