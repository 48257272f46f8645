"""``/healthz``, ``/readyz`` and ``/metrics``: the readiness rule, the HTTP endpoint, the metric values.

The readiness rule is checked against a controllable clock; the endpoint over real HTTP on
loopback; and the whole chain (cycles -> metrics -> HTTP) with a daemon running in this process
against the OpenMetadata stand-in, taken down and brought back by fault injection.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlsvc_discover.daemon import Daemon
from mlsvc_discover.metrics import WRITE_OUTCOMES, Metrics, fatal_kind, succeeded
from mlsvc_discover.report import CycleFailure, DiscovererStats, Report
from mlsvc_discover.server import HealthServer, Readiness, parse_address
from testing.mlflow_fixtures import FakeServer, mlflow_like
from testing.om_fixtures import OM_BOT_NAME, OM_TOKEN
from testing.openmetadata import FaultRule, OpenMetadataStandIn, Principal
from tests.helpers import daemon_config, drive, http_get, svc_name, write_uris


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus exposition text as {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


# --- the readiness rule -------------------------------------------------------------------------


def test_not_ready_while_the_first_cycle_runs_and_the_reason_says_starting() -> None:
    readiness = Readiness(60, 3, clock=Clock())
    ready, reason = readiness.check()
    assert not ready
    assert reason.startswith("starting: the first cycle is still running")


def test_a_failed_first_cycle_is_starting_for_one_interval_plus_that_cycle_then_not_ready() -> None:
    clock = Clock()
    readiness = Readiness(60, 3, clock=clock)
    clock.advance(5)
    readiness.record(success=False, duration=5, reason="cannot read ML model services from OpenMetadata: HTTP 503")
    ready, reason = readiness.check()
    assert not ready
    assert reason.startswith("starting: no cycle has succeeded yet")
    assert reason.endswith("last cycle failed: cannot read ML model services from OpenMetadata: HTTP 503")
    clock.advance(60)  # 65 s since start = first cycle (5 s) + one interval: still the allowance
    assert readiness.check()[1].startswith("starting:")
    clock.advance(1)
    ready, reason = readiness.check()
    assert not ready
    assert reason.startswith("not ready: no cycle has succeeded yet (66s since start)")


def test_ready_while_the_last_success_is_within_ready_intervals_intervals_plus_jitter() -> None:
    clock = Clock()
    readiness = Readiness(60, 3, jitter=10, clock=clock)
    readiness.record(success=True, duration=2)
    assert readiness.check() == (True, "ok: last successful cycle finished 0s ago")
    readiness.record(success=False, duration=2, reason="OpenMetadata refused the agent")
    clock.advance(3 * 60 + 10)
    assert readiness.check()[0]
    clock.advance(1)
    ready, reason = readiness.check()
    assert not ready
    assert reason == (
        "not ready: last successful cycle finished 191s ago, more than 3 x 60s intervals; "
        "last cycle failed: OpenMetadata refused the agent"
    )
    readiness.record(success=True, duration=2)
    assert readiness.check()[0]


def test_the_readiness_reason_is_one_bounded_line_whatever_the_failure_text() -> None:
    clock = Clock()
    readiness = Readiness(1, 1, clock=clock)
    readiness.record(success=False, duration=0, reason="first line\nsecond line\t" + "x" * 1000)
    clock.advance(10)
    _, reason = readiness.check()
    assert "\n" not in reason
    assert "first line second line" in reason
    assert len(reason) < 500


@pytest.mark.parametrize(
    ("address", "expected"),
    [("0.0.0.0:8080", ("0.0.0.0", 8080)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:9000", ("::1", 9000))],
)
def test_server_address_is_read_as_host_and_port(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


# --- the HTTP endpoint --------------------------------------------------------------------------


@pytest.fixture
def endpoint() -> Iterator[tuple[HealthServer, Readiness, Metrics]]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    readiness = Readiness(60, 3)
    server = HealthServer("127.0.0.1:0", readiness, registry)
    server.start()
    yield server, readiness, metrics
    server.close()


def test_port_0_binds_a_free_port_and_close_releases_it() -> None:
    server = HealthServer("127.0.0.1:0", Readiness(60, 3), CollectorRegistry())
    port = server.start()
    assert port > 0
    assert server.port == port
    assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    server.close()
    server.close()  # twice is harmless
    with socket.socket() as s:
        # As a restarted agent binds (SO_REUSEADDR): the closed server's TIME_WAIT does not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_healthz_is_200_ok_while_readyz_follows_the_readiness_rule(
    endpoint: tuple[HealthServer, Readiness, Metrics],
) -> None:
    server, readiness, _ = endpoint
    base = f"http://127.0.0.1:{server.port}"
    assert http_get(base + "/healthz") == (200, "ok\n")
    status, body = http_get(base + "/readyz")
    assert status == 503
    assert body.startswith("starting:")
    assert body.count("\n") == 1
    readiness.record(success=True, duration=1)
    assert http_get(base + "/readyz")[0] == 200
    assert http_get(base + "/healthz?verbose=1") == (200, "ok\n")


def test_unknown_paths_are_404_and_head_answers_without_a_body(
    endpoint: tuple[HealthServer, Readiness, Metrics],
) -> None:
    server, _, _ = endpoint
    assert http_get(f"http://127.0.0.1:{server.port}/admin")[0] == 404
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/healthz", method="HEAD")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        assert response.read() == b""


def test_metrics_are_served_in_prometheus_text_format_with_every_fixed_label_at_zero(
    endpoint: tuple[HealthServer, Readiness, Metrics],
) -> None:
    server, _, _ = endpoint
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    m = samples(text)
    for outcome in WRITE_OUTCOMES:
        assert value(m, "mlsvc_discover_writes_total", outcome=outcome) == 0
    assert value(m, "mlsvc_discover_cycles_total", result="success") == 0
    assert value(m, "mlsvc_discover_cycles_total", result="failure") == 0
    assert value(m, "mlsvc_discover_cycles_skipped_total") == 0
    assert value(m, "mlsvc_discover_deletions_total", reason="stale") == 0
    assert value(m, "mlsvc_discover_deletions_total", reason="blocked_max_fraction") == 0
    assert value(m, "mlsvc_discover_last_success_timestamp_seconds") == 0
    assert value(m, "mlsvc_discover_consecutive_failed_cycles") == 0
    assert value(m, "mlsvc_discover_cycle_duration_seconds_count") == 0


# --- metrics from reports -----------------------------------------------------------------------


def test_observe_counts_outcomes_findings_and_failures_with_only_name_and_kind_labels() -> None:
    metrics = Metrics(CollectorRegistry())
    report = Report(duration=1.5)
    report.discoverers["mlflow"] = DiscovererStats(findings=7)
    report.outcomes.update(created=2, unchanged=5, failed=1)
    report.failures += [
        CycleFailure("discover", "http://user:***@10.0.0.1:5000", "connection refused", "mlflow", "unreachable"),
        CycleFailure("delete", "svc", "HTTP 500", None, "error"),
        CycleFailure("write", "svc", "HTTP 400", "mlflow", "Weird Kind: with text s3cret"),
        CycleFailure("discover", "x", "why", "not a name!", "error"),
    ]
    metrics.observe(report)
    m = samples(generate_latest(metrics.registry).decode())

    assert value(m, "mlsvc_discover_findings", discoverer="mlflow") == 7
    assert value(m, "mlsvc_discover_writes_total", outcome="created") == 2
    assert value(m, "mlsvc_discover_writes_total", outcome="unchanged") == 5
    assert value(m, "mlsvc_discover_writes_total", outcome="failed") == 1
    assert value(m, "mlsvc_discover_errors_total", discoverer="mlflow", kind="unreachable") == 1
    assert value(m, "mlsvc_discover_errors_total", discoverer="openmetadata", kind="error") == 1
    assert value(m, "mlsvc_discover_errors_total", discoverer="mlflow", kind="other") == 1
    assert value(m, "mlsvc_discover_errors_total", discoverer="other", kind="error") == 1
    assert value(m, "mlsvc_discover_cycles_total", result="success") == 1
    assert value(m, "mlsvc_discover_cycle_duration_seconds_sum") == 1.5
    text = generate_latest(metrics.registry).decode()
    assert "s3cret" not in text
    assert "10.0.0.1" not in text


@pytest.mark.parametrize("scenario", ["revoked_token", "forbidden_bot", "server_down", "persistent_503"])
def test_a_fatal_cycle_fails_and_its_kind_separates_auth_from_unavailability(
    scenario: str, om_standin: OpenMetadataStandIn, refused_url: str
) -> None:
    import asyncio

    from mlsvc_discover.agent import Agent
    from mlsvc_discover.config import parse_config

    host = om_standin.base_url
    if scenario == "revoked_token":
        om_standin.revoke(OM_TOKEN)
    elif scenario == "forbidden_bot":
        om_standin.add_token(OM_TOKEN, Principal(OM_BOT_NAME, is_bot=True, allowed=False))
    elif scenario == "server_down":
        host = refused_url.rstrip("/") + "/api"
    else:
        om_standin.inject(FaultRule(status=503))
    raw = {
        "openmetadata": {"host": host, "token": OM_TOKEN, "retries": 1, "backoff_initial": 0.01},
        "discoverers": [{"type": "static", "name": "s", "services": [{"name": "x", "service_type": "Sklearn"}]}],
    }

    async def cycle() -> Report:
        async with Agent(parse_config(raw, {})) as agent:
            return await agent.run_once()

    report = asyncio.run(cycle())
    assert not succeeded(report)
    expected = "auth" if scenario in ("revoked_token", "forbidden_bot") else "unavailable"
    assert fatal_kind(report) == f"openmetadata_{expected}"


def test_an_interrupted_cycle_is_not_a_success() -> None:
    assert succeeded(Report())
    assert not succeeded(Report(interrupted=True))


# --- the whole chain: cycles -> readiness and metrics -> HTTP -----------------------------------


@pytest.fixture
def one_mlflow(fake_mlflow: Callable[..., FakeServer], tmp_path: Path) -> Path:
    uris = tmp_path / "uris.txt"
    write_uris(uris, fake_mlflow(mlflow_like()).url)
    return uris


def test_readyz_turns_unready_while_openmetadata_stays_down_and_ready_when_it_returns(
    om_standin: OpenMetadataStandIn, one_mlflow: Path
) -> None:
    statuses: list[tuple[int, int, str]] = []
    phase = {"down_at": 0, "up_at": 0}

    def step(n: int, report: Report, daemon: Daemon) -> bool:
        status, body = http_get(f"http://127.0.0.1:{daemon.port}/readyz")
        statuses.append((n, status, body))
        if n == 1:
            assert status == 200, body
            om_standin.inject(FaultRule(status=503, message="OpenMetadata is restarting"))
            phase["down_at"] = n
        elif phase["up_at"] == 0 and status == 503:
            assert "last cycle failed: cannot read ML model services from OpenMetadata" in body
            om_standin.clear_faults()
            phase["up_at"] = n
        elif phase["up_at"]:
            assert status == 200, body
            return True
        assert n < 15, statuses
        return False

    # 250 ms interval, ready_intervals 2: unready once no success for 0.5 s.
    run = drive(daemon_config(om_standin, one_mlflow), step)

    down = [status for n, status, _ in statuses if phase["down_at"] < n <= phase["up_at"]]
    # One failed cycle is within the tolerance of 2 intervals; staying down is not.
    assert down[0] == 200
    assert down[-1] == 503
    assert statuses[-1][1] == 200
    failures = run.daemon.metrics.cycles.labels(result="failure")._value.get()
    assert failures == phase["up_at"] - phase["down_at"]
    assert run.daemon.metrics.consecutive_failures._value.get() == 0
    errors = run.daemon.metrics.errors.labels(discoverer="openmetadata", kind="openmetadata_unavailable")
    assert errors._value.get() == failures


def test_metrics_show_the_counts_of_known_cycles(
    om_standin: OpenMetadataStandIn,
    fake_mlflow: Callable[..., FakeServer],
    refused_url: str,
    tmp_path: Path,
) -> None:
    a, b = (fake_mlflow(mlflow_like()).url for _ in range(2))
    password = "pw-in-a-uri-9c1d"  # a test value that must never show up in metrics
    with_password = refused_url.replace("http://", f"http://reader:{password}@")
    uris = tmp_path / "uris.txt"
    write_uris(uris, a, b)
    scraped: list[str] = []

    def step(n: int, report: Report, daemon: Daemon) -> bool:
        if n == 2:
            write_uris(uris, a, b, with_password)  # from cycle 3 on, one URI fails
        elif n == 3:
            om_standin.revoke(OM_TOKEN)  # cycle 4 is refused by OpenMetadata
        elif n == 4:
            assert report.fatal is not None
            om_standin.add_token(OM_TOKEN, Principal(OM_BOT_NAME, is_bot=True))
        elif n == 5:
            scraped.append(http_get(f"http://127.0.0.1:{daemon.port}/metrics")[1])
            return True
        return False

    started = time.time()
    run = drive(daemon_config(om_standin, uris, schedule={"interval": "300ms"}), step)

    text = scraped[0]
    m = samples(text)
    kind = run.reports[2].failures[0].kind
    assert value(m, "mlsvc_discover_cycles_total", result="success") == 4
    assert value(m, "mlsvc_discover_cycles_total", result="failure") == 1
    assert value(m, "mlsvc_discover_cycle_duration_seconds_count") == 5
    assert value(m, "mlsvc_discover_writes_total", outcome="created") == 2
    assert value(m, "mlsvc_discover_writes_total", outcome="unchanged") == 2 + 2 + 2  # cycles 2, 3 and 5
    assert value(m, "mlsvc_discover_findings", discoverer="mlflow") == 2
    assert value(m, "mlsvc_discover_errors_total", discoverer="mlflow", kind=kind) == 3  # cycles 3, 4 and 5
    assert value(m, "mlsvc_discover_errors_total", discoverer="openmetadata", kind="openmetadata_auth") == 1
    assert value(m, "mlsvc_discover_consecutive_failed_cycles") == 0
    assert value(m, "mlsvc_discover_last_success_timestamp_seconds") >= started
    assert value(m, "mlsvc_discover_cycles_skipped_total") == run.daemon.skipped
    assert password not in text
    assert OM_TOKEN not in text
    assert svc_name(a) not in text  # service names are not labels either
