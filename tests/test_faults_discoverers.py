"""Discovery misbehaving, seen from the agent: one cycle over many scopes while some of them fail.

The discoverers' own tests check each failure in isolation; here a whole agent runs one cycle
(discover, map, plan, apply against the OpenMetadata stand-in) over a mix of healthy and failing
scopes, and every test checks the same three things: every healthy scope is registered in that
very cycle, every failing one is in the report with a reason that says what went wrong, and no
failure costs anything beyond its own scope. The failing scopes are real: hostile HTTP servers
on loopback (a 500, a login page, broken JSON, an endless body, redirect loops and hops to
another host, an unverifiable certificate, a server that answers a byte at a time), ``moto``
with IAM enforcement (a role that cannot be assumed, keys AWS never issued), and a proxy in
front of ``moto`` answering as AWS does for throttling and for a region the account has not
enabled. Last, ``policy: sync`` with the most eager settings deletes nothing from a scope that
keeps failing, while it still deletes what is really gone from a healthy one.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from mlsvc_discover.agent import Agent
from mlsvc_discover.config import AgentConfig, parse_config
from mlsvc_discover.report import CycleFailure, Report
from testing.mlflow_fixtures import (
    FakeServer,
    MlflowServer,
    TlsMaterial,
    drip,
    huge_body,
    mlflow_like,
    redirect,
    status,
)
from testing.moto_fixtures import (
    ACCOUNT_A,
    ACCOUNT_B,
    AwsFaultProxy,
    AwsWorld,
    IamEnforced,
    MotoServer,
    seed_models,
)
from testing.om_fixtures import OM_TOKEN
from testing.openmetadata import OpenMetadataStandIn
from tests.helpers import write_uris

pytestmark = pytest.mark.timeout(120)

OWNER_TAG = "mlsvc-discover.discovery-faults"
FakeFactory = Callable[..., FakeServer]
HUGE = 64 * 1024 * 1024


def agent_config(standin: OpenMetadataStandIn, discoverers: list[dict[str, Any]], **top: Any) -> AgentConfig:
    raw: dict[str, Any] = {
        "owner_id": "discovery-faults",
        "policy": "sync",
        "stale_after": 2,
        "max_delete_fraction": 1.0,
        "openmetadata": {"host": standin.base_url, "token": OM_TOKEN, "retries": 1, "backoff_initial": "10ms"},
        "server": {"enabled": False},
        "discoverers": discoverers,
        **top,
    }
    return parse_config(raw, env={})


def run_cycles(
    config: AgentConfig, *before: Callable[[], object] | None, fresh_agent: bool = False, timeout: float = 90
) -> list[Report]:
    """One cycle per entry of ``before`` (called first when set; no entry: one cycle), with one
    agent, or a new agent per cycle (as cron runs ``--once``; bookkeeping then lives only in
    ``state.path``)."""

    async def main() -> list[Report]:
        agent = Agent(config)
        reports: list[Report] = []
        try:
            for step in before or (None,):
                if step is not None:
                    step()
                if fresh_agent and reports:
                    await agent.aclose()
                    agent = Agent(config)
                reports.append(await agent.run_once())
        finally:
            await agent.aclose()
        return reports

    return asyncio.run(asyncio.wait_for(main(), timeout))


def mlflow_name(url: str) -> str:
    host, port = url.split("://", 1)[1].rstrip("/").rsplit(":", 1)
    return f"mlflow-{host}-{port}"


def live(standin: OpenMetadataStandIn) -> set[str]:
    return {
        name
        for name, e in standin.services.items()
        if not e.get("deleted") and OWNER_TAG in {t["tagFQN"] for t in e.get("tags") or ()}
    }


def failures_by_item(report: Report) -> dict[str, CycleFailure]:
    return {f.item: f for f in report.failures}


def assert_registered_correctly(standin: OpenMetadataStandIn, expected: dict[str, str]) -> None:
    services = standin.services
    for name, service_type in expected.items():
        assert name in services, f"{name} not registered; have {sorted(services)}"
        entity = services[name]
        assert entity["serviceType"] == service_type
        assert entity["connection"]["config"]["type"] == service_type
        assert not entity["deleted"]


# --- MLflow servers that misbehave ------------------------------------------------------------------


@dataclass
class Hostile:
    """A misbehaving tracking server: its URI, and what its failure must say."""

    url: str
    reason: str
    kind: str


@pytest.fixture
def hostile(fake_mlflow: FakeFactory, tls_material: TlsMaterial) -> Iterator[dict[str, Hostile]]:
    login_page = b"<!doctype html><html><body><form action='/sso/login'>Sign in</form></body></html>"
    witness = fake_mlflow(mlflow_like())  # another host's server: must never hear from the probe
    servers = {
        "http-500": Hostile(
            fake_mlflow(status(500, b'{"error_code": "INTERNAL_ERROR"}')).url,
            "HTTP 500 from server",
            "server_error",
        ),
        "html-login-page": Hostile(
            fake_mlflow(status(200, login_page, "text/html; charset=utf-8")).url,
            "not an MLflow tracking server: response is not JSON (text/html)",
            "not_mlflow",
        ),
        "invalid-json": Hostile(
            fake_mlflow(status(200, b'{"experiments": [{"experiment_id": "0", ', "application/json")).url,
            "not an MLflow tracking server: invalid JSON",
            "not_mlflow",
        ),
        "huge-body": Hostile(
            fake_mlflow(huge_body(HUGE, declare_length=False)).url,
            "response larger than 1048576 bytes",
            "too_large",
        ),
        "redirect-loop": Hostile(fake_mlflow(redirect(lambda path: path, 302)).url, "redirect loop at", "redirect"),
        "redirect-to-another-host": Hostile(
            fake_mlflow(redirect(lambda path: f"http://localhost:{witness.port}{path}", 307)).url,
            f"redirect to another host (localhost:{witness.port}) refused",
            "redirect",
        ),
        "tls-unverified": Hostile(
            fake_mlflow(mlflow_like(), tls=tls_material).url, "TLS certificate verify failed", "tls"
        ),
        "one-byte-at-a-time": Hostile(fake_mlflow(drip(0.25)).url, "timed out after 2.0s", "timeout"),
    }
    yield servers
    assert witness.requests == [], "the probe followed a redirect to another host"


def test_every_hostile_mlflow_server_fails_alone_and_everything_else_registers_in_the_same_cycle(
    om_standin: OpenMetadataStandIn,
    hostile: dict[str, Hostile],
    fake_mlflow: FakeFactory,
    mlflow_server: MlflowServer,
    tls_material: TlsMaterial,
    aws_world: AwsWorld,
) -> None:
    healthy_fake = fake_mlflow(mlflow_like()).url
    tls_url = hostile["tls-unverified"].url
    config = agent_config(
        om_standin,
        [
            {
                "type": "mlflow",
                "name": "fleet",
                "timeout": "2s",
                "tracking_uris": [mlflow_server.url, healthy_fake, *(h.url for h in hostile.values())],
            },
            # The same TLS server is fine for a discoverer that trusts its CA (verification stays on).
            {
                "type": "mlflow",
                "name": "private-ca",
                "ca_bundle": str(tls_material.ca_path),
                "tracking_uris": [tls_url],
            },
            {
                "type": "sagemaker",
                "name": "aws",
                "endpoint_url": aws_world.endpoint_url,
                "regions": list(aws_world.regions),
                "accounts": [{"role_arn": arn} for arn in aws_world.role_arns.values()],
            },
            {"type": "static", "name": "declared", "services": [{"name": "sk-scoring", "service_type": "Sklearn"}]},
        ],
    )

    (report,) = run_cycles(config)

    expected = {
        mlflow_name(mlflow_server.url): "Mlflow",
        mlflow_name(healthy_fake): "Mlflow",
        mlflow_name(tls_url): "Mlflow",
        **{f"sagemaker-{account}-{region}": "SageMaker" for account, region in aws_world.in_use},
        "sk-scoring": "Sklearn",
    }
    assert report.fatal is None
    assert live(om_standin) == set(expected)
    assert_registered_correctly(om_standin, expected)
    assert om_standin.services[mlflow_name(tls_url)]["connection"]["config"]["trackingUri"] == tls_url
    failed = failures_by_item(report)
    assert set(failed) == {h.url for h in hostile.values()}
    for label, h in hostile.items():
        f = failed[h.url]
        assert h.reason in f.reason, (label, f.reason)
        assert (f.kind, f.source, f.stage) == (h.kind, "fleet", "discover"), label
    assert report.discoverers["fleet"].ok is False
    assert report.discoverers["fleet"].findings == 2
    for name in ("private-ca", "aws", "declared"):
        assert report.discoverers[name].ok, name
    assert report.exit_code == 1


def test_a_huge_body_costs_bounded_memory_and_is_abandoned_early(
    om_standin: OpenMetadataStandIn, fake_mlflow: FakeFactory
) -> None:
    handler = huge_body(HUGE, declare_length=False)
    huge = fake_mlflow(handler).url
    healthy = fake_mlflow(mlflow_like()).url
    config = agent_config(
        om_standin, [{"type": "mlflow", "name": "fleet", "timeout": "5s", "tracking_uris": [huge, healthy]}]
    )
    # Warm up imports and the stand-in's schema cache so the measurement is the cycle's own.
    run_cycles(agent_config(om_standin, [{"type": "mlflow", "name": "warm", "tracking_uris": [healthy]}]))

    tracemalloc.start()
    try:
        (report,) = run_cycles(config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert failures_by_item(report)[huge].kind == "too_large"
    assert mlflow_name(healthy) in live(om_standin)
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while a {HUGE / 2**20:.0f} MiB body streamed"
    assert handler.sent < HUGE // 4, f"the client read {handler.sent} bytes of a body it had already refused"  # type: ignore[attr-defined]


# --- AWS accounts and regions that fail -------------------------------------------------------------


def test_accounts_that_cannot_be_entered_fail_alone_and_every_other_scope_registers(
    om_standin: OpenMetadataStandIn, aws_world: AwsWorld, aws_iam_enforced: IamEnforced, fake_mlflow: FakeFactory
) -> None:
    third = "arn:aws:iam::333333333333:role/mlsvc-discover"
    healthy = fake_mlflow(mlflow_like()).url
    denied = f"{aws_world.role_arns[ACCOUNT_B]} (via profile {aws_iam_enforced.denied_profile})"
    unknown = f"{third} (via profile {aws_iam_enforced.unknown_profile})"
    config = agent_config(
        om_standin,
        [
            {
                "type": "sagemaker",
                "name": "aws",
                "endpoint_url": aws_world.endpoint_url,
                "regions": list(aws_world.regions),
                "max_attempts": 1,
                "accounts": [
                    # May assume its role: found.
                    {"role_arn": aws_world.role_arns[ACCOUNT_A], "profile": aws_iam_enforced.allowed_profile},
                    # Its credentials are valid but may not assume the role: AccessDenied.
                    {"role_arn": aws_world.role_arns[ACCOUNT_B], "profile": aws_iam_enforced.denied_profile},
                    # Keys AWS never issued (or long expired): invalid credentials.
                    {"role_arn": third, "profile": aws_iam_enforced.unknown_profile},
                ],
            },
            {"type": "mlflow", "name": "fleet", "tracking_uris": [healthy]},
            {"type": "static", "name": "declared", "services": [{"name": "sk-scoring", "service_type": "Sklearn"}]},
        ],
    )

    (report,) = run_cycles(config)

    expected = {
        f"sagemaker-{ACCOUNT_A}-us-east-1": "SageMaker",
        mlflow_name(healthy): "Mlflow",
        "sk-scoring": "Sklearn",
    }
    assert live(om_standin) == set(expected)
    assert_registered_correctly(om_standin, expected)
    failed = failures_by_item(report)
    assert set(failed) == {denied, unknown}
    assert failed[denied].kind == "access_denied"
    assert failed[denied].reason.startswith(f"cannot assume role {aws_world.role_arns[ACCOUNT_B]}: AccessDenied")
    assert failed[unknown].kind == "expired_credentials"
    assert (
        failed[unknown].reason == f"cannot assume role {third}: credentials expired or invalid (InvalidClientTokenId)"
    )
    assert report.fatal is None
    assert report.outcomes["created"] == len(expected)


def test_throttled_and_not_enabled_regions_fail_alone_and_the_other_regions_register(
    om_standin: OpenMetadataStandIn, aws_world: AwsWorld, aws_fault_proxy: AwsFaultProxy, moto_server: MotoServer
) -> None:
    # A third region in use, so that each fault has something to hide.
    seed_models(moto_server, moto_server.assume(aws_world.role_arns[ACCOUNT_A]), "us-west-2", ["forecast"])
    aws_fault_proxy.fail(
        "sagemaker",
        "eu-west-1",
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
    throttled = aws_fault_proxy.fail("sagemaker", "us-west-2", "ThrottlingException", "Rate exceeded")
    config = agent_config(
        om_standin,
        [
            {
                "type": "sagemaker",
                "name": "aws",
                "endpoint_url": aws_fault_proxy.url,
                "regions": ["us-east-1", "eu-west-1", "us-west-2"],
                "max_attempts": 2,
                "accounts": [{"role_arn": arn} for arn in aws_world.role_arns.values()],
            },
            {"type": "static", "name": "declared", "services": [{"name": "sk-scoring", "service_type": "Sklearn"}]},
        ],
    )

    (report,) = run_cycles(config)

    expected = {
        f"sagemaker-{ACCOUNT_A}-us-east-1": "SageMaker",
        f"sagemaker-{ACCOUNT_B}-us-east-1": "SageMaker",
        "sk-scoring": "Sklearn",
    }
    assert live(om_standin) == set(expected)
    assert_registered_correctly(om_standin, expected)
    failed = failures_by_item(report)
    assert set(failed) == {f"{a}/{r}" for a in (ACCOUNT_A, ACCOUNT_B) for r in ("eu-west-1", "us-west-2")}
    for account in (ACCOUNT_A, ACCOUNT_B):
        not_enabled = failed[f"{account}/eu-west-1"]
        assert not_enabled.kind == "region_unavailable"
        assert not_enabled.reason.startswith("region not enabled for this account")
        slow_down = failed[f"{account}/us-west-2"]
        assert slow_down.kind == "throttled"
        assert slow_down.reason == "throttled (ThrottlingException on ListModels after 2 attempts)"
    assert throttled.hits == 4  # retried once per account, then given up: no storm either
    assert report.fatal is None


# --- sync never deletes from a failing scope -----------------------------------------------------------


class Switchable:
    """A fake server's behaviour that the test can change between cycles."""

    def __init__(self, handler: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.handler = handler

    def __call__(self, req: BaseHTTPRequestHandler) -> None:
        self.handler(req)


@pytest.mark.parametrize("agent", ["long-running", "fresh-per-cycle-with-state-file"])
def test_sync_deletes_nothing_from_scopes_that_keep_failing_but_still_deletes_what_is_really_gone(
    om_standin: OpenMetadataStandIn,
    aws_world: AwsWorld,
    aws_fault_proxy: AwsFaultProxy,
    fake_mlflow: FakeFactory,
    tmp_path: Path,
    agent: str,
) -> None:
    flaky = Switchable(mlflow_like())
    breaking, leaving = fake_mlflow(flaky).url, fake_mlflow(mlflow_like()).url
    uris = tmp_path / "uris.txt"
    write_uris(uris, breaking, leaving)
    config = agent_config(
        om_standin,
        [
            {"type": "mlflow", "name": "fleet", "timeout": "2s", "uris_file": str(uris)},
            {
                "type": "sagemaker",
                "name": "aws",
                "endpoint_url": aws_fault_proxy.url,
                "regions": ["us-east-1", "eu-west-1"],
                "max_attempts": 1,
                "accounts": [
                    {"role_arn": aws_world.role_arns[ACCOUNT_A]},
                    # Its STS calls go to eu-west-1 (its first region), so a fault there hits it alone.
                    {"role_arn": aws_world.role_arns[ACCOUNT_B], "regions": ["eu-west-1", "us-east-1"]},
                ],
            },
            {"type": "static", "name": "declared", "services": [{"name": "sk-scoring", "service_type": "Sklearn"}]},
        ],
        stale_after=2,
        max_delete_fraction=1.0,
        state={"path": str(tmp_path / "state" / "misses.json")},
    )
    sagemaker = {f"sagemaker-{a}-{r}" for a, r in aws_world.in_use}
    everything = {mlflow_name(breaking), mlflow_name(leaving), "sk-scoring", *sagemaker}

    def break_scopes() -> None:
        flaky.handler = status(200, b"<html><form action='/sso/login'></form></html>", "text/html")  # behind SSO
        write_uris(uris, breaking)  # `leaving` is really gone, from a scope that succeeds
        # The proxy answers in SageMaker's JSON protocol; STS speaks XML, so botocore fails to parse
        # the refusal: the account fails all the same, which is what this test is about.
        aws_fault_proxy.fail("sts", "eu-west-1", "AccessDenied", "not authorized to perform sts:AssumeRole", 403)
        aws_fault_proxy.fail("sagemaker", "us-east-1", "ThrottlingException", "Rate exceeded")
        if agent == "long-running":
            # A long-running agent reuses the role credentials of cycle 1 (refreshed only when
            # they near expiry), so the STS refusal does not reach it: fail B's region instead.
            aws_fault_proxy.fail("sagemaker", "eu-west-1", "AccessDeniedException", "not authorized", 400)

    def heal() -> None:
        flaky.handler = mlflow_like()
        aws_fault_proxy.faults.clear()

    reports = run_cycles(config, None, break_scopes, None, None, None, heal, fresh_agent=agent != "long-running")

    first, *broken, healed = reports
    assert first.ok, first.to_dict()
    assert {c.name for c in first.plan.create} == everything  # type: ignore[union-attr]
    kept = {mlflow_name(breaking), *sagemaker}
    for n, report in enumerate(broken, start=2):
        assert report.plan is not None
        failed = failures_by_item(report)
        assert breaking in failed, n
        account_b = aws_world.role_arns[ACCOUNT_B] if agent != "long-running" else f"{ACCOUNT_B}/eu-west-1"
        assert any(item.startswith(account_b) for item in failed), n
        assert f"{ACCOUNT_A}/us-east-1" in failed, n
        held = {c.name: c.reason for c in report.plan.unchanged if c.name in kept}
        assert set(held) == kept, (n, held)
        assert all(r.endswith("its scope failed this cycle, so it is kept") for r in held.values()), held
        assert all(c.name == mlflow_name(leaving) for c in report.plan.delete), n
    # The one service whose scope succeeded went after stale_after (2) misses; nothing else, ever.
    deletes = om_standin.find("DELETE")
    assert len(deletes) == 1
    assert [c.name for r in reports for c in (r.plan.delete if r.plan else ())] == [mlflow_name(leaving)]
    assert live(om_standin) == everything - {mlflow_name(leaving)}
    assert om_standin.services[mlflow_name(leaving)]["deleted"] is True
    assert healed.ok, healed.to_dict()
    assert healed.plan is not None
    assert healed.plan.delete == ()
    assert healed.outcomes["unchanged"] == len(everything) - 1
