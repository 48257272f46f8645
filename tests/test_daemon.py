"""The long-running agent: schedule, safe deletes across cycles, skips, crashes, signals.

Most tests drive :class:`mlsvc_discover.daemon.Daemon` in this process against the real
OpenMetadata stand-in and real HTTP servers that answer like MLflow, with a sub-second
interval. The world changes between cycles through the ``uris_file`` of an ``mlflow``
discoverer, which is re-read every cycle: the step callback (run inside the cycle, so never
concurrently with the next one) rewrites it. Two tests run ``mlsvc-discover discover`` as a
real process to check the signal handling end to end.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsvc_discover.agent import Agent
from mlsvc_discover.config import ScheduleConfig
from mlsvc_discover.daemon import DEFAULT_INTERVAL, Daemon, build_trigger, crontab_weekdays, serve
from mlsvc_discover.report import Report
from testing.mlflow_fixtures import FakeServer, MlflowServer, mlflow_like
from testing.om_fixtures import OM_TOKEN
from testing.openmetadata import OpenMetadataStandIn
from tests.helpers import CLI, daemon_config, daemon_raw_config, drive, http_get, svc_name, write_uris

OWNER_TAG = "mlsvc-discover.daemon-test"


# --- helpers (also used by test_health_metrics.py) ---------------------------------------------


def owned(standin: OpenMetadataStandIn) -> dict[str, dict[str, Any]]:
    """Services carrying this agent's tag, soft-deleted ones included."""
    return {
        name: e
        for name, e in standin.services.items()
        if any(t.get("tagFQN") == OWNER_TAG for t in e.get("tags") or ())
    }


def live(standin: OpenMetadataStandIn) -> set[str]:
    return {name for name, e in owned(standin).items() if not e.get("deleted")}


def deletes(standin: OpenMetadataStandIn) -> int:
    return standin.count("DELETE", r"/mlmodelServices/")


@pytest.fixture
def mlflows(fake_mlflow: Callable[..., FakeServer]) -> Callable[[int], list[str]]:
    """``mlflows(n)``: URLs of n fresh loopback servers that answer like MLflow."""
    return lambda n: [fake_mlflow(mlflow_like()).url for _ in range(n)]


@pytest.fixture
def uris_file(tmp_path: Path) -> Path:
    return tmp_path / "uris.txt"


# --- schedule -----------------------------------------------------------------------------------


def test_schedule_defaults_to_every_15_minutes_when_neither_interval_nor_cron_is_set() -> None:
    _, interval = build_trigger(ScheduleConfig())
    assert interval == DEFAULT_INTERVAL == 900


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0", "sun"),
        ("7", "sun"),
        ("5-7", "sun,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("1,3", "mon,wed"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
        ("*", "*"),
    ],
)
def test_crontab_weekday_numbers_keep_their_crontab_meaning_under_apscheduler_3(field: str, expected: str) -> None:
    # APScheduler 3.x alone would read "1-5" as Tuesday to Saturday.
    assert crontab_weekdays(field) == expected


def test_cron_readiness_interval_is_the_longest_gap_so_weekends_do_not_count_as_missed_cycles() -> None:
    _, every_15 = build_trigger(ScheduleConfig(cron="*/15 * * * *"))
    _, weekdays = build_trigger(ScheduleConfig(cron="0 9 * * 1-5"))
    assert every_15 == 900
    assert weekdays == 3 * 86400  # Friday 09:00 to Monday 09:00
    trigger, _ = build_trigger(ScheduleConfig(cron="0 9 * * 1-5"))
    assert str(trigger.fields[4]) == "mon,tue,wed,thu,fri"


# --- services appearing and disappearing --------------------------------------------------------


def test_services_appear_and_disappear_between_cycles_with_deletes_only_after_stale_after_misses(
    om_standin: OpenMetadataStandIn, mlflow_server: MlflowServer, mlflows: Callable[[int], list[str]], uris_file: Path
) -> None:
    a, b, c = mlflows(3)
    real = mlflow_server.url
    foreign = om_standin.put_entity(
        {
            "name": "hand-made-mlflow",
            "serviceType": "Mlflow",
            "connection": {
                "config": {"type": "Mlflow", "trackingUri": "http://gone.example:5000", "registryUri": "http://gone"}
            },
        }
    )
    write_uris(uris_file, real, a, b)
    seen: dict[int, set[str]] = {}

    def step(n: int, report: Report, daemon: Daemon) -> bool:
        assert report.fatal is None, report.fatal
        assert report.failures == [], report.failures
        seen[n] = live(om_standin)
        if n == 1:
            assert report.outcomes["created"] == 3
            write_uris(uris_file, real, a)  # b disappears
        elif n == 2:
            assert report.plan is not None
            assert report.plan.delete == ()
            waiting = {ch.name: ch.reason for ch in report.plan.unchanged if ch.name == svc_name(b)}
            assert waiting == {svc_name(b): "not found (1 of 2 misses before delete)"}
            write_uris(uris_file, real, a, c)  # c appears; b misses a second time
        elif n == 3:
            assert report.outcomes["deleted"] == 1
            assert report.outcomes["created"] == 1
            write_uris(uris_file, real, a, b, c)  # b comes back
        elif n == 4:
            assert report.outcomes["restored"] == 1
            return True
        return False

    run = drive(daemon_config(om_standin, uris_file), step)

    assert run.exit_code == 0
    assert seen[1] == {svc_name(real), svc_name(a), svc_name(b)}
    assert seen[2] == seen[1]
    assert seen[3] == {svc_name(real), svc_name(a), svc_name(c)}
    assert seen[4] == {svc_name(real), svc_name(a), svc_name(b), svc_name(c)}
    assert deletes(om_standin) == 1
    # sync deletes only what this agent owns: the hand-made service was never looked for.
    after = om_standin.get_service("hand-made-mlflow")
    assert after is not None
    assert not after["deleted"]
    assert after["version"] == foreign["version"]


def test_sync_deletes_nothing_while_the_scope_failed_and_resumes_when_it_succeeds_again(
    om_standin: OpenMetadataStandIn, mlflows: Callable[[int], list[str]], uris_file: Path
) -> None:
    a, b = mlflows(2)
    write_uris(uris_file, a, b)

    def step(n: int, report: Report, daemon: Daemon) -> bool:
        if n == 1:
            assert live(om_standin) == {svc_name(a), svc_name(b)}
            uris_file.unlink()  # unreadable: the discoverer's root scope fails
        elif n in (2, 3, 4):
            assert not report.discoverers["mlflow"].ok
            assert report.plan is not None
            assert report.plan.delete == ()
            assert deletes(om_standin) == 0
            if n == 4:
                write_uris(uris_file, a)  # readable again; b is really gone
        else:
            assert report.discoverers["mlflow"].ok
            assert report.outcomes["deleted"] == 1
            return True
        return False

    run = drive(daemon_config(om_standin, uris_file, stale_after=1), step)

    assert len(run.reports) == 5
    assert live(om_standin) == {svc_name(a)}
    assert owned(om_standin)[svc_name(b)]["deleted"] is True


def test_sync_deletes_nothing_past_max_delete_fraction_and_the_report_and_metrics_say_why(
    om_standin: OpenMetadataStandIn, mlflows: Callable[[int], list[str]], uris_file: Path
) -> None:
    urls = mlflows(4)
    write_uris(uris_file, *urls)

    def step(n: int, report: Report, daemon: Daemon) -> bool:
        if n == 1:
            assert report.outcomes["created"] == 4
            write_uris(uris_file, urls[0])  # 3 of 4 gone at once: more than 0.5 of them
            return False
        assert report.plan is not None
        if n == 2:
            assert report.plan.delete == ()
            assert {c.name for c in report.plan.held} == {svc_name(u) for u in urls[1:]}
            assert all("max_delete_fraction 0.5" in c.reason for c in report.plan.held)
            write_uris(uris_file, *urls[:3])  # now only one is gone: within the fraction
            return False
        assert [c.name for c in report.plan.delete] == [svc_name(urls[3])]
        return True

    run = drive(daemon_config(om_standin, uris_file, stale_after=1, max_delete_fraction=0.5), step)

    metrics = run.daemon.metrics
    assert metrics.deletions.labels(reason="blocked_max_fraction")._value.get() == 3
    assert metrics.deletions.labels(reason="stale")._value.get() == 1
    assert deletes(om_standin) == 1
    assert live(om_standin) == {svc_name(u) for u in urls[:3]}


def test_a_human_edit_of_an_unmanaged_field_survives_cycles_even_when_the_agent_repairs_the_connection(
    om_standin: OpenMetadataStandIn, mlflows: Callable[[int], list[str]], uris_file: Path
) -> None:
    (a,) = mlflows(1)
    name = svc_name(a)
    write_uris(uris_file, a)
    writes_after_repair: list[int] = []

    def step(n: int, report: Report, daemon: Daemon) -> bool:
        if n == 1:
            connection = om_standin.services[name]["connection"]
            broken = {"config": {**connection["config"], "trackingUri": "http://typo.example:5000"}}
            om_standin.edit(name, displayName="Team A tracking (named by hand)", connection=broken)
        elif n == 2:
            assert report.outcomes["updated"] == 1  # the managed connection is put back
            writes_after_repair.append(len(om_standin.writes()))
        elif n >= 3:
            assert report.outcomes["unchanged"] == 1
        return n == 5

    drive(daemon_config(om_standin, uris_file, policy="upsert-only"), step)

    service = om_standin.services[name]
    assert service["displayName"] == "Team A tracking (named by hand)"
    assert service["connection"]["config"]["trackingUri"] != "http://typo.example:5000"
    assert len(om_standin.writes()) == writes_after_repair[0]  # cycles 3-5 wrote nothing


def test_a_foreign_service_with_a_clashing_name_is_left_alone_and_reported_as_a_conflict(
    om_standin: OpenMetadataStandIn, mlflows: Callable[[int], list[str]], uris_file: Path
) -> None:
    mine, theirs = mlflows(2)
    clash = svc_name(theirs)
    before = om_standin.put_entity(
        {
            "name": clash,
            "serviceType": "Mlflow",
            "description": "registered by hand by the platform team",
            "connection": {"config": {"type": "Mlflow", "trackingUri": theirs, "registryUri": theirs}},
        }
    )
    write_uris(uris_file, mine, theirs)

    def step(n: int, report: Report, daemon: Daemon) -> bool:
        assert report.plan is not None
        assert [c.name for c in report.plan.conflicts] == [clash]
        assert OWNER_TAG in report.plan.conflicts[0].reason
        assert report.outcomes["conflict"] == 1
        return n == 3

    run = drive(daemon_config(om_standin, uris_file), step)

    assert om_standin.services[clash] == before
    assert all(
        not (isinstance(r.body, dict) and r.body.get("name") == clash)
        and not (isinstance(r.body, list) and any(b.get("name") == clash for b in r.body))
        for r in om_standin.writes()
    )
    assert live(om_standin) == {svc_name(mine)}
    assert run.daemon.metrics.writes.labels(outcome="conflict")._value.get() == 3


# --- never two cycles at once, never stopped by a failure ---------------------------------------


def test_a_cycle_due_while_one_is_running_is_skipped_logged_and_counted(
    om_standin: OpenMetadataStandIn,
    mlflows: Callable[[int], list[str]],
    uris_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mlsvc_discover")
    write_uris(uris_file, *mlflows(2))
    om_standin.latency = 0.5  # every request; a cycle takes 1-1.5 s against a 0.2 s interval

    run = drive(daemon_config(om_standin, uris_file, schedule={"interval": "200ms"}), lambda n, r, d: n == 2)

    assert run.daemon.skipped >= 3
    assert run.daemon.metrics.cycles_skipped._value.get() == run.daemon.skipped
    skip_logs = [r for r in caplog.records if r.name == "mlsvc_discover.daemon" and "cycle skipped" in r.message]
    assert len(skip_logs) == run.daemon.skipped
    first, second = run.reports
    assert first.started_at + first.duration <= second.started_at + 0.05  # never overlapping


def test_a_cycle_that_raises_is_logged_and_counted_and_the_next_cycle_runs(
    om_standin: OpenMetadataStandIn, mlflows: Callable[[int], list[str]], uris_file: Path
) -> None:
    write_uris(uris_file, *mlflows(1))
    config = daemon_config(om_standin, uris_file)

    class CrashingOnce(Agent):
        """The agent with a bug that strikes in cycle 2 only (and quotes a secret, as bugs do)."""

        calls = 0

        async def run_once(
            self, *, dry_run: bool = False, stop: asyncio.Event | None = None, report: Report | None = None
        ) -> Report:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError(f"unexpected state near token {OM_TOKEN}")
            return await super().run_once(dry_run=dry_run, stop=stop, report=report)

    run = drive(config, lambda n, r, d: n == 3, agent=CrashingOnce(config))

    crashed = run.reports[1]
    assert crashed.fatal is not None
    assert "RuntimeError" in crashed.fatal
    assert OM_TOKEN not in crashed.fatal
    assert run.reports[2].fatal is None
    m = run.daemon.metrics
    assert m.errors.labels(discoverer="agent", kind="crash")._value.get() == 1
    assert m.cycles.labels(result="failure")._value.get() == 1
    assert m.cycles.labels(result="success")._value.get() == 2
    assert m.consecutive_failures._value.get() == 0


def test_serve_runs_cycles_until_stop_is_set(
    om_standin: OpenMetadataStandIn, mlflows: Callable[[int], list[str]], uris_file: Path
) -> None:
    write_uris(uris_file, *mlflows(1))
    reports: list[Report] = []

    async def main() -> int:
        stop = asyncio.Event()

        def on_cycle(report: Report) -> None:
            reports.append(report)
            if len(reports) == 2:
                stop.set()

        return await asyncio.wait_for(serve(daemon_config(om_standin, uris_file), stop=stop, on_cycle=on_cycle), 20)

    assert asyncio.run(main()) == 0
    assert [r.outcomes["created"] for r in reports] == [1, 0]
    assert [r.outcomes["unchanged"] for r in reports] == [0, 1]


# --- stopping -----------------------------------------------------------------------------------


def test_when_the_grace_period_runs_out_the_cycle_is_cancelled_and_the_daemon_still_exits_0(
    om_standin: OpenMetadataStandIn,
    mlflows: Callable[[int], list[str]],
    uris_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mlsvc_discover")
    write_uris(uris_file, *mlflows(1))
    om_standin.latency = 10.0  # the list request hangs far past the grace period
    config = daemon_config(om_standin, uris_file, schedule={"interval": "1h", "grace_period": "500ms"})

    async def main() -> tuple[int, float]:
        stop = asyncio.Event()
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run(stop))
        deadline = time.monotonic() + 10
        while daemon.cycles == 0:
            assert time.monotonic() < deadline, "the first cycle never started"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # discovery done; now waiting on OpenMetadata
        stop.set()
        started = time.monotonic()
        code = await asyncio.wait_for(task, 10)
        return code, time.monotonic() - started

    code, took = asyncio.run(main())

    assert code == 0
    assert took < 0.5 + 1.5
    assert any("grace period of 0.5s ran out" in r.getMessage() for r in caplog.records)


def _start_cli(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MLSVC_DISCOVER_LOG_LEVEL": "INFO"}
    with log_path.open("wb") as log:
        return subprocess.Popen(  # the test waits for it and kills it on failure
            [str(CLI), "discover", "--config", str(config_path)], stdout=log, stderr=subprocess.STDOUT, env=env
        )


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes], log_path: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"agent exited with {proc.returncode} before {what}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log_path.read_text()}")
        time.sleep(0.05)


@pytest.fixture
def cli_process() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by a test; killed at teardown if the test left them running."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _port_from_log(log_path: Path) -> int:
    m = re.search(r"serving /healthz, /readyz and /metrics on \S+ \(port (\d+)\)", log_path.read_text())
    return int(m.group(1)) if m else 0


def test_sigterm_mid_cycle_stops_after_the_write_in_flight_exits_0_and_logs_applied_and_not_applied(
    om_standin: OpenMetadataStandIn,
    mlflows: Callable[[int], list[str]],
    uris_file: Path,
    tmp_path: Path,
    cli_process: list[subprocess.Popen[bytes]],
) -> None:
    urls = mlflows(4)
    write_uris(uris_file, *urls)
    grace = 5.0
    raw = daemon_raw_config(
        om_standin, uris_file, stale_after=1, schedule={"interval": "1s", "grace_period": f"{grace}s"}
    )
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    log_path = tmp_path / "agent.log"
    proc = _start_cli(config_path, log_path)
    cli_process.append(proc)

    _wait_for(lambda: len(live(om_standin)) == 4, proc, log_path, "the four services to be created")
    port = _port_from_log(log_path)
    assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    # Now every answer takes 0.5 s and all four services are gone: the next cycle deletes them
    # one by one, and SIGTERM arrives while it is at it.
    om_standin.latency = 0.5
    write_uris(uris_file)
    _wait_for(lambda: deletes(om_standin) >= 1, proc, log_path, "the first delete")
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    try:
        code = proc.wait(timeout=grace + 2)
    except subprocess.TimeoutExpired:
        pytest.fail(f"agent still running {grace + 2}s after SIGTERM:\n{log_path.read_text()}")
    took = time.monotonic() - signalled
    log = log_path.read_text()

    assert code == 0, log
    assert took < grace + 2
    m = re.search(r"stopped after the cycle in flight: applied (\d+): (.*); not applied (\d+): (.*)", log)
    assert m, log
    applied = set(m.group(2).split(", "))
    not_applied = set(m.group(4).split(", "))
    assert int(m.group(1)) == len(applied) >= 1
    assert int(m.group(3)) == len(not_applied) >= 1
    assert applied | not_applied == {svc_name(u) for u in urls}
    # What the log says matches what OpenMetadata holds.
    assert {n for n, e in owned(om_standin).items() if e["deleted"]} == applied
    assert live(om_standin) == not_applied
    assert "received SIGTERM" in log
    assert OM_TOKEN not in log


def test_sigint_between_cycles_exits_0_at_once(
    om_standin: OpenMetadataStandIn,
    uris_file: Path,
    tmp_path: Path,
    cli_process: list[subprocess.Popen[bytes]],
) -> None:
    write_uris(uris_file)
    raw = daemon_raw_config(om_standin, uris_file, schedule={"interval": "1h", "grace_period": "30s"})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    log_path = tmp_path / "agent.log"
    proc = _start_cli(config_path, log_path)
    cli_process.append(proc)

    _wait_for(lambda: "cycle 1 ok" in log_path.read_text(), proc, log_path, "the first cycle")
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=5)
    log = log_path.read_text()

    assert code == 0, log
    assert "received SIGINT" in log
    assert "stopping: no cycle in flight" in log
    assert "Traceback" not in log


def test_an_address_that_cannot_be_bound_exits_1_with_the_reason(
    om_standin: OpenMetadataStandIn, uris_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_uris(uris_file)
    first = Daemon(daemon_config(om_standin, uris_file))

    async def main() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(first.run(stop))
        await asyncio.wait_for(first.started.wait(), 10)
        taken = f"127.0.0.1:{first.port}"
        try:
            second = Daemon(daemon_config(om_standin, uris_file, server={"address": taken}))
            return await asyncio.wait_for(second.run(asyncio.Event()), 10)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

    assert asyncio.run(main()) == 1
    assert any("cannot serve health and metrics on 127.0.0.1:" in r.getMessage() for r in caplog.records)
