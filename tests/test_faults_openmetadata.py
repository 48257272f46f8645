"""OpenMetadata misbehaving: every fault the stand-in can inject, then the cycle after it.

Each test runs a cycle while OpenMetadata fails in one way (5xx and 429 at a rate or in a
burst, answers slower than the client's timeout, connections reset before or after the server
applied a write, bulk results with failed items, an expired token), then clears the fault and
runs the next cycle with the *same* agent, as the long-running mode does. Two promises are
checked every time:

- the faulty cycle accounts for everything it planned: each service is applied, or counted as
  a failure with a reason that says what went wrong, or the cycle's ``fatal`` says why writing
  stopped; and nothing it reports as applied is missing from OpenMetadata;
- the next cycle converges: every desired service exists exactly once with the right
  ``serviceType`` and connection, services the agent does not own are byte-for-byte untouched,
  and nothing is ever deleted, even under ``policy: sync`` with the most eager delete settings.

The world is a ``static`` discoverer (no network on the discovery side), so every failure seen
here comes from OpenMetadata. The stand-in's fault RNG is seeded, so rate faults are repeatable.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from mlsvc_discover.agent import Agent
from mlsvc_discover.config import AgentConfig, parse_config
from mlsvc_discover.daemon import serve
from mlsvc_discover.report import Report
from testing.om_fixtures import OM_BOT_NAME, OM_TOKEN
from testing.openmetadata import FaultRule, OpenMetadataStandIn, Principal, RecordedRequest

pytestmark = pytest.mark.timeout(60)

OWNER_TAG = "mlsvc-discover.faults"
OTHER_AGENT_TAG = "mlsvc-discover.someone-else"
BATCH = 3


@dataclass(frozen=True)
class Wanted:
    service_type: str
    config: dict[str, Any]


def _static_services() -> tuple[list[dict[str, Any]], dict[str, Wanted]]:
    """Ten services of four types: the config entries and what each must look like once written."""
    entries: list[dict[str, Any]] = []
    wanted: dict[str, Wanted] = {}
    for i in range(3):
        uri = f"http://mlflow-{i}.example:5000"
        entries.append(
            {"name": f"mlflow-{i}", "service_type": "Mlflow", "connection": {"trackingUri": uri, "registryUri": uri}}
        )
        wanted[f"mlflow-{i}"] = Wanted("Mlflow", {"type": "Mlflow", "trackingUri": uri, "registryUri": uri})
    for i in range(3):
        entries.append({"name": f"sklearn.{i}", "service_type": "Sklearn"})  # a dot: quoted FQN
        wanted[f"sklearn.{i}"] = Wanted("Sklearn", {"type": "Sklearn"})
    for i in range(2):
        cls = f"acme.models.Source{i}"
        entries.append(
            {"name": f"custom-{i}", "service_type": "CustomMlModel", "connection": {"sourcePythonClass": cls}}
        )
        wanted[f"custom-{i}"] = Wanted("CustomMlModel", {"type": "CustomMlModel", "sourcePythonClass": cls})
    for region in ("eu-west-1", "us-east-1"):
        aws = {"awsRegion": region}
        entries.append({"name": f"sagemaker-{region}", "service_type": "SageMaker", "connection": {"awsConfig": aws}})
        wanted[f"sagemaker-{region}"] = Wanted("SageMaker", {"type": "SageMaker", "awsConfig": aws})
    return entries, wanted


ENTRIES, WANTED = _static_services()


def raw_config(standin: OpenMetadataStandIn, **openmetadata: Any) -> dict[str, Any]:
    """Sync with the most eager delete settings: any wrong delete would happen at once."""
    om: dict[str, Any] = {
        "host": standin.base_url,
        "token": OM_TOKEN,
        "retries": 2,
        "backoff_initial": "10ms",
        "backoff_max": "200ms",
        "timeout": "1s",
        "batch_size": BATCH,
        "max_concurrency": 2,
        **openmetadata,
    }
    return {
        "owner_id": "faults",
        "policy": "sync",
        "stale_after": 1,
        "max_delete_fraction": 1.0,
        "openmetadata": om,
        "schedule": {"interval": "200ms", "grace_period": "5s"},
        "server": {"enabled": False},
        "discoverers": [{"type": "static", "name": "declared", "services": ENTRIES}],
    }


def make_config(standin: OpenMetadataStandIn, **openmetadata: Any) -> AgentConfig:
    return parse_config(raw_config(standin, **openmetadata), env={})


Step = Callable[[], object] | None


def run_cycles(config: AgentConfig, *before: Step, timeout: float = 45.0, settle: float = 0.0) -> list[Report]:
    """One agent, one event loop, one cycle per entry of ``before`` (called first, when set).

    ``settle`` keeps the loop running that long after each cycle, so that a write the cycle
    left behind in a background task would still reach the server before the next step looks.
    """

    async def main() -> list[Report]:
        agent = Agent(config)
        reports: list[Report] = []
        try:
            for step in before:
                if step is not None:
                    step()
                reports.append(await agent.run_once())
                await asyncio.sleep(settle)
        finally:
            await agent.aclose()
        return reports

    return asyncio.run(asyncio.wait_for(main(), timeout))


def tag_fqns(entity: dict[str, Any]) -> list[str]:
    return [t["tagFQN"] for t in entity.get("tags") or ()]


@pytest.fixture
def bystanders(om_any: OpenMetadataStandIn) -> dict[str, dict[str, Any]]:
    """Services the agent must never touch: one made by hand, one owned by another agent."""
    om_any.put_entity(
        {
            "name": "hand-made",
            "serviceType": "Mlflow",
            "description": "registered by a person",
            "connection": {"config": {"type": "Mlflow", "trackingUri": "http://x:1", "registryUri": "http://x:1"}},
        }
    )
    om_any.put_entity(
        {
            "name": "other-agents",
            "serviceType": "Sklearn",
            "tags": [
                {"tagFQN": OTHER_AGENT_TAG, "source": "Classification", "labelType": "Automated", "state": "Confirmed"}
            ],
            "connection": {"config": {"type": "Sklearn"}},
        }
    )
    om_any.reset_log()
    return om_any.services


def assert_accounted(report: Report, standin: OpenMetadataStandIn, reason: str) -> None:
    """Everything the cycle planned is applied, failed with a reason matching ``reason``, or
    left out because the cycle's ``fatal`` stopped it, and nothing applied is a lie."""
    stored = standin.services
    if report.fatal is not None:
        assert re.search(reason, report.fatal), report.fatal
    if report.plan is None:
        assert report.fatal is not None, "no plan and no reason"
        assert report.applied == []
        return
    planned = {c.name for c in (*report.plan.writes, *report.plan.delete)}
    failed = {f.item for f in report.failures if f.stage in ("write", "restore", "delete")}
    applied = set(report.applied)
    assert not applied & failed, applied & failed
    left = planned - applied - failed
    if left:
        assert report.fatal is not None, f"{sorted(left)} neither applied nor failed, and no fatal"
        assert set(report.not_applied) >= left
    assert report.outcomes["failed"] == len([f for f in report.failures if f.stage == "write"])
    assert sum(report.outcomes[k] for k in ("created", "updated", "restored", "deleted")) == len(applied)
    for f in report.failures:
        assert f.reason, f
        assert re.search(reason, f.reason), f.reason
    for name in applied:
        assert name in stored, f"{name} reported applied but not in OpenMetadata"
        assert OWNER_TAG in tag_fqns(stored[name])


def assert_converged(report: Report, standin: OpenMetadataStandIn, bystanders: dict[str, dict[str, Any]]) -> None:
    assert report.fatal is None, report.fatal
    assert report.failures == [], report.failures
    stored = standin.services
    assert set(stored) == set(WANTED) | set(bystanders), sorted(stored)
    for name, want in WANTED.items():
        entity = stored[name]
        assert entity["deleted"] is False, name
        assert entity["serviceType"] == want.service_type, name
        assert entity["connection"]["config"] == want.config, name
        assert tag_fqns(entity).count(OWNER_TAG) == 1, name
    for name, before in bystanders.items():
        assert stored[name] == before, f"{name} was changed"
    assert standin.count("DELETE") == 0
    # Nothing foreign was ever in a write body, whatever the faults did.
    for request in standin.writes():
        bodies = request.body if isinstance(request.body, list) else [request.body]
        for body in bodies:
            if isinstance(body, dict) and "name" in body:
                assert body["name"] in WANTED, body["name"]


def assert_quiet(report: Report, standin: OpenMetadataStandIn, writes_before: int) -> None:
    """A third cycle changes nothing: convergence is stable, not a lucky moment."""
    assert report.ok, report.to_dict()
    assert report.outcomes["unchanged"] == len(WANTED)
    assert len(standin.writes()) == writes_before


# --- faults injected at a rate or in a burst -------------------------------------------------------

RETRIED = r"HTTP (429|5\d\d)|timed out|no complete answer|connection failed"
# Faults on the ML model service API; the set-up requests (version, classification, tag) are
# tested on their own below.
SERVICES = r"/mlmodelServices"
LIST_FAILED = r"cannot read ML model services from OpenMetadata: GET /v1/services/mlmodelServices: "


@dataclass(frozen=True)
class Scenario:
    """Faults to inject, what every failure reason must match, and what the cycle must show.

    ``expect``: ``all_failed`` (every write failed after its retries), ``fatal`` (the listing
    failed, nothing was planned), ``any`` (a rate or a burst: whatever the retries saved).
    """

    rules: Callable[[], list[FaultRule]]
    reason: str
    expect: str = "any"


SCENARIOS: dict[str, Scenario] = {
    "500-at-rate-0.3": Scenario(lambda: [FaultRule(path=SERVICES, status=500, rate=0.3)], RETRIED),
    "503-at-rate-0.3": Scenario(
        lambda: [FaultRule(path=SERVICES, status=503, message="Service Unavailable", rate=0.3)], RETRIED
    ),
    "503-burst-on-writes": Scenario(lambda: [FaultRule(path=SERVICES, method="PUT", status=503, times=4)], RETRIED),
    "500-on-every-write": Scenario(
        lambda: [FaultRule(path=SERVICES, method="PUT", status=500)], r"HTTP 500.*after 3 attempts", "all_failed"
    ),
    "503-burst-on-the-listing": Scenario(
        lambda: [FaultRule(path=SERVICES, method="GET", status=503, times=3)], LIST_FAILED + r"HTTP 503", "fatal"
    ),
    "429-with-retry-after-burst": Scenario(
        lambda: [FaultRule(path=SERVICES, method="PUT", status=429, retry_after=0.05, times=4)], RETRIED
    ),
    "429-without-retry-after-burst": Scenario(
        lambda: [FaultRule(path=SERVICES, method="PUT", status=429, times=4)], RETRIED
    ),
    "429-at-rate-0.3": Scenario(lambda: [FaultRule(path=SERVICES, status=429, retry_after=0.01, rate=0.3)], RETRIED),
    "429-on-every-write": Scenario(
        lambda: [FaultRule(path=SERVICES, method="PUT", status=429, retry_after=0.02)],
        r"HTTP 429.*after 3 attempts",
        "all_failed",
    ),
    # Held longer than the client's 1 s timeout, then applied anyway: the client never knows.
    "slower-than-timeout-twice": Scenario(
        lambda: [FaultRule(path=SERVICES, method="PUT", delay=1.3, times=2)], r"timed out|no complete answer"
    ),
    "slow-listing": Scenario(
        lambda: [FaultRule(path=SERVICES, method="GET", delay=1.2)], LIST_FAILED + r"timed out", "fatal"
    ),
    "reset-before-apply-burst": Scenario(
        lambda: [FaultRule(path=SERVICES, method="PUT", reset=True, times=3)], RETRIED
    ),
    "reset-at-rate-0.3": Scenario(lambda: [FaultRule(path=SERVICES, reset=True, rate=0.3)], RETRIED),
    "reset-on-the-listing": Scenario(
        lambda: [FaultRule(path=SERVICES, method="GET", reset=True)], LIST_FAILED + r"connection failed", "fatal"
    ),
    # Applied (a bulk: its first item only), then the connection is reset, on every attempt.
    "reset-after-apply-always": Scenario(
        lambda: [FaultRule(path=SERVICES, method="PUT", reset_after_items=1)],
        r"connection failed.*after 3 attempts",
        "all_failed",
    ),
    "reset-after-apply-once": Scenario(
        lambda: [FaultRule(path=SERVICES, method="PUT", reset_after_items=1, times=1)], RETRIED
    ),
}

CASES = [(name, seed) for name in sorted(SCENARIOS) for seed in ((7, 42) if "rate" in name else (7,))]


@pytest.mark.parametrize(("scenario", "seed"), CASES, ids=[f"{n}-seed{s}" for n, s in CASES])
def test_a_fault_is_accounted_for_in_its_cycle_and_the_next_cycle_converges(
    om_any: OpenMetadataStandIn, bystanders: dict[str, dict[str, Any]], scenario: str, seed: int
) -> None:
    case = SCENARIOS[scenario]
    om_any.random = random.Random(seed)
    writes_before: list[int] = []
    rules = case.rules()

    def inject() -> None:
        for rule in rules:
            om_any.inject(rule)

    faulty, healed, quiet = run_cycles(
        make_config(om_any),
        inject,
        om_any.clear_faults,
        lambda: writes_before.append(len(om_any.writes())),
    )
    assert all(rule.hits > 0 for rule in rules), "the fault never fired"
    assert_accounted(faulty, om_any, case.reason)
    if case.expect == "fatal":
        assert faulty.plan is None
        assert faulty.fatal is not None
    elif case.expect == "all_failed":
        assert faulty.outcomes["failed"] == len(WANTED)
        assert {f.item for f in faulty.failures} == set(WANTED)
    elif faulty.fatal is not None:  # a rate fault may also strike every attempt at the listing
        assert re.match(LIST_FAILED, faulty.fatal), faulty.fatal
    assert_converged(healed, om_any, bystanders)
    assert_quiet(quiet, om_any, writes_before[0])


# --- failed items of a bulk, refusals, and the token ------------------------------------------------


def test_failed_items_are_counted_with_their_reasons_and_written_by_the_next_cycle(
    om_any: OpenMetadataStandIn, bystanders: dict[str, dict[str, Any]]
) -> None:
    refused = {
        "mlflow-1": (400, "Invalid request: tag mlsvc-discover.faults does not exist"),
        "custom-0": (403, "Principal: CatalogPrincipal{name='ingestion-bot'} operations [EditAll] not allowed"),
    }
    writes_before: list[int] = []
    faulty, healed, quiet = run_cycles(
        make_config(om_any),
        lambda: om_any.fail_items(refused),
        om_any.clear_faults,
        lambda: writes_before.append(len(om_any.writes())),
    )

    assert_accounted(faulty, om_any, r"does not exist|not allowed|permission")
    if om_any.bulk_enabled:
        # In a bulk result a refused item is that item's failure; the rest of the batch is applied.
        assert faulty.fatal is None
        kinds = {f.item: f.kind for f in faulty.failures}
        assert kinds == {"mlflow-1": "http_400", "custom-0": "http_403"}
        assert faulty.outcomes["created"] == len(WANTED) - 2
        assert "does not exist" in next(f.reason for f in faulty.failures if f.item == "mlflow-1")
    else:
        # A 403 on a PUT of its own is OpenMetadata refusing the bot: writes stop for the cycle.
        assert faulty.fatal is not None
        assert "writes stopped for this cycle" in faulty.fatal
        assert "give the bot permission" in faulty.fatal
        assert faulty.fatal_kind == "openmetadata_auth"
    assert_converged(healed, om_any, bystanders)
    assert_quiet(quiet, om_any, writes_before[0])


def test_an_expired_token_fails_the_cycle_at_the_first_request_with_a_message_naming_the_token(
    om_any: OpenMetadataStandIn, bystanders: dict[str, dict[str, Any]]
) -> None:
    requests_in_cycle: list[int] = []

    def renew() -> None:
        # Requests to the service API: the version (public, asked once per process) is not one.
        requests_in_cycle.append(len(om_any.find(path=SERVICES)))
        om_any.add_token(OM_TOKEN, Principal(OM_BOT_NAME, is_bot=True))

    faulty, healed = run_cycles(make_config(om_any), lambda: om_any.revoke(OM_TOKEN), renew)

    assert faulty.fatal is not None
    assert "HTTP 401" in faulty.fatal
    assert "openmetadata.token / OPENMETADATA_JWT_TOKEN (expired?)" in faulty.fatal
    assert faulty.fatal_kind == "openmetadata_auth"
    assert OM_TOKEN not in faulty.fatal
    assert requests_in_cycle == [1]  # the listing, refused, and not one retry after it
    assert_converged(healed, om_any, bystanders)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_token_expiring_mid_cycle_stops_writes_at_once_without_a_retry_storm(
    om_any: OpenMetadataStandIn, bystanders: dict[str, dict[str, Any]], concurrency: int
) -> None:
    # The first write is held inside the server while the token expires; every later request
    # meets a server that no longer knows it, exactly as after a JWT's expiry time.
    write_path = r"/mlmodelServices/bulk$" if om_any.bulk_enabled else r"/mlmodelServices$"
    hold = FaultRule(method="PUT", path=write_path, delay=0.3, times=1)
    seen: list[RecordedRequest] = []

    def expire_when_held() -> None:
        deadline = time.monotonic() + 10
        while hold.hits == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        om_any.revoke(OM_TOKEN)

    def start() -> None:
        om_any.inject(hold)
        threading.Thread(target=expire_when_held, name="expire-token", daemon=True).start()

    def renew() -> None:
        seen.extend(om_any.requests)
        om_any.clear_faults()
        om_any.add_token(OM_TOKEN, Principal(OM_BOT_NAME, is_bot=True))

    config = make_config(om_any, max_concurrency=concurrency, batch_size=2)
    faulty, healed = run_cycles(config, start, renew, settle=0.5)

    assert faulty.fatal is not None
    assert "writes stopped for this cycle" in faulty.fatal
    assert "openmetadata.token / OPENMETADATA_JWT_TOKEN (expired?)" in faulty.fatal
    assert_accounted(faulty, om_any, r"HTTP 401")
    refused = [r for r in seen if r.status == 401]
    assert refused
    first = min(r.at for r in refused)
    later = [r for r in seen if r.at > first]
    # Only writes already in flight when the 401 came back may follow it; nothing queued, no retry.
    assert len(later) <= concurrency - 1, [(r.method, r.path, r.status) for r in later]
    assert len(refused) <= concurrency
    assert len(faulty.applied) >= 1  # the held write went through before the token expired
    assert_converged(healed, om_any, bystanders)


def test_a_bulk_attempt_that_failed_does_not_make_the_agent_believe_the_server_has_the_bulk_route(
    om_standin_nobulk: OpenMetadataStandIn,
) -> None:
    standin = om_standin_nobulk
    marks: list[int] = []

    def mark() -> None:
        marks.append(len(standin.requests))

    def clear() -> None:
        mark()
        standin.clear_faults()

    def break_one() -> None:
        mark()
        # A person breaks a connection: the agent repairs it, so this cycle writes again.
        standin.edit("mlflow-0", connection={"config": {"type": "Mlflow", "trackingUri": "x", "registryUri": "x"}})

    run_cycles(
        make_config(standin),
        lambda: standin.inject(FaultRule(method="PUT", status=500)),
        clear,
        break_one,
        mark,
    )
    requests = standin.requests

    def bulk_requests(cycle: int) -> int:
        return sum(1 for r in requests[marks[cycle - 2] : marks[cycle - 1]] if r.path.endswith("/bulk"))

    # Cycle 1's bulk requests all failed with 500: that said nothing about the route.
    assert bulk_requests(2) == 1  # one probe; the server answered 405, which is remembered
    assert bulk_requests(3) == 0
    assert standin.services["mlflow-0"]["connection"]["config"] == WANTED["mlflow-0"].config


# --- the long-running agent ----------------------------------------------------------------------------


def test_the_long_running_agent_keeps_cycling_through_every_fault_and_recovers(
    om_any: OpenMetadataStandIn, bystanders: dict[str, dict[str, Any]]
) -> None:
    standin = om_any

    def break_by_hand() -> None:
        # A person breaks a connection, so that the next cycle has a write for the fault to meet.
        broken = {"config": {"type": "Mlflow", "trackingUri": "http://typo:1", "registryUri": "http://typo:1"}}
        standin.edit("mlflow-0", connection=broken)

    def break_by_hand_then(rule: FaultRule) -> FaultRule:
        break_by_hand()
        return standin.inject(rule)

    windows: list[Callable[[], object]] = [
        lambda: standin.fail_items({"sklearn.2": (400, "Invalid request format")}),
        lambda: standin.inject(FaultRule(status=503, message="OpenMetadata is restarting")),
        lambda: standin.inject(FaultRule(reset=True)),
        lambda: standin.revoke(OM_TOKEN),
        lambda: standin.inject(FaultRule(status=429, retry_after=0.01)),
        lambda: standin.inject(FaultRule(method="GET", delay=1.2)),
        lambda: break_by_hand_then(FaultRule(method="PUT", reset_after_items=1)),
        lambda: break_by_hand_then(FaultRule(status=500, rate=0.5)),
    ]
    reports: list[Report] = []
    finished: list[float] = []

    async def main() -> int:
        stop = asyncio.Event()

        def on_cycle(report: Report) -> None:
            reports.append(report)
            finished.append(time.monotonic())
            standin.clear_faults()
            standin.add_token(OM_TOKEN, Principal(OM_BOT_NAME, is_bot=True))
            n = len(reports)
            if n < len(windows):
                windows[n]()
            if n >= len(windows) + 2:
                stop.set()

        windows[0]()
        config = make_config(standin, retries=1)
        return await asyncio.wait_for(serve(config, stop=stop, on_cycle=on_cycle), 50)

    assert asyncio.run(main()) == 0

    assert len(reports) == len(windows) + 2
    for n, report in enumerate(reports[: len(windows)]):
        assert n == 7 or not report.ok, n  # the rate fault of window 7 may be retried away
        assert_accounted(report, standin, r"HTTP \d\d\d|timed out|connection failed|Invalid request")
    assert [f.item for f in reports[0].failures] == ["sklearn.2"]
    assert [r.fatal_kind for r in reports[1:6]] == ["openmetadata_unavailable"] * 2 + ["openmetadata_auth"] + [
        "openmetadata_unavailable"
    ] * 2
    assert {f.item for f in reports[6].failures} >= {"mlflow-0", "sklearn.2"}
    # Still on schedule after the faults: no cycle waited for a stalled one or for a restart.
    gaps = [b - a for a, b in itertools.pairwise(finished)]
    assert max(gaps) < 5, gaps
    assert_converged(reports[-2], standin, bystanders)
    assert reports[-1].ok
    assert reports[-1].outcomes["unchanged"] == len(WANTED)
