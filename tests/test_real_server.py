"""The agent against OpenMetadata as the real server behaves (the stand-in's defaults), end to end.

Bulk route detection, the ownership tag made sure of, the bot update rules, deletes the server
refuses, old versions, readiness when nothing could be written, and the hostile answers a broken
or malicious server may give (cursor loops, trickling bodies, huge bodies, wrong shapes). Every
test runs the real :class:`Agent` against a real stand-in on loopback.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mlsvc_discover.agent import Agent
from mlsvc_discover.config import parse_config
from mlsvc_discover.metrics import succeeded
from mlsvc_discover.report import Report
from testing.om_fixtures import OM_BOT_NAME, OM_TOKEN, _serve, make_standin
from testing.openmetadata import FaultRule, OpenMetadataStandIn, Principal

MARKER = "mlsvc-discover.real"
SERVICES = r"/mlmodelServices$"
BULK = r"/mlmodelServices/bulk$"


@pytest.fixture
def real() -> Iterator[OpenMetadataStandIn]:
    """A fresh server with nothing set up, like a new OpenMetadata: no bulk route, no marker tag."""
    yield from _serve(make_standin())


def raw_config(standin: OpenMetadataStandIn, services: list[dict[str, Any]], **om: Any) -> dict[str, Any]:
    return {
        "owner_id": "real",
        "openmetadata": {
            "host": standin.base_url,
            "token": OM_TOKEN,
            "retries": 2,
            "backoff_initial": "10ms",
            "timeout": "2s",
            "batch_size": 3,
            **om,
        },
        "discoverers": [{"type": "static", "name": "declared", "services": services}],
    }


def sklearn(name: str, **metadata: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "service_type": "Sklearn"}
    if metadata:
        out["metadata"] = metadata
    return out


def cycles(raw: dict[str, Any], *steps: Any, dry_run: bool = False, timeout: float = 60) -> list[Report]:
    """One agent (one process), one cycle per step (a callable run first, or None)."""

    async def main() -> list[Report]:
        reports = []
        async with Agent(parse_config(raw, env={})) as agent:
            for step in steps:
                if step is not None:
                    step()
                reports.append(await agent.run_once(dry_run=dry_run))
        return reports

    return asyncio.run(asyncio.wait_for(main(), timeout))


# --- 14.1: bulk where it exists, per-item PUT elsewhere ---------------------------------------------


@pytest.mark.parametrize("status", [500, 405, 404])
def test_a_server_without_the_bulk_route_costs_one_bulk_request_per_process_and_no_retry(status: int) -> None:
    standin = make_standin(no_bulk_status=status)
    try:
        services = [sklearn(f"s{i}") for i in range(7)]
        first, second = cycles(
            raw_config(standin, services),
            None,
            lambda: standin.edit("s0", connection={"config": {"type": "CustomMlModel", "sourcePythonClass": "x"}}),
        )
        assert first.ok, first.to_dict()
        assert first.outcomes["created"] == 7
        assert standin.count("PUT", BULK) == 1  # one probe, not retried, not repeated in the next cycle
        assert standin.count("PUT", SERVICES) == 7 + 1
        assert second.ok
        assert second.outcomes["updated"] == 1
        assert sorted(standin.services) == [f"s{i}" for i in range(7)]
    finally:
        standin.stop()


def test_a_server_with_the_bulk_route_gets_ceil_n_over_batch_size_bulk_writes(
    om_standin_bulk: OpenMetadataStandIn,
) -> None:
    (report,) = cycles(raw_config(om_standin_bulk, [sklearn(f"s{i}") for i in range(7)]), None)
    assert report.ok, report.to_dict()
    assert om_standin_bulk.count("PUT", BULK) == math.ceil(7 / 3)
    assert om_standin_bulk.count("PUT", SERVICES) == 0


def test_the_bulk_decision_is_logged_once_with_the_server_version(
    real: OpenMetadataStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    cycles(raw_config(real, [sklearn("a")]), None, None)
    said = [r.getMessage() for r in caplog.records if "bulk route" in r.getMessage()]
    assert len(said) == 1, said
    assert "OpenMetadata 2.0.7 has no PUT" in said[0]


# --- 14.2: no manual set-up ---------------------------------------------------------------------------


def test_a_fresh_server_gets_the_classification_and_tag_before_the_first_write_and_only_once(
    real: OpenMetadataStandIn,
) -> None:
    first, second = cycles(raw_config(real, [sklearn("a"), sklearn("b")]), None, None)
    assert first.ok, first.to_dict()
    assert first.outcomes["created"] == 2
    assert MARKER in real.tags
    assert "mlsvc-discover" in real.classifications
    assert second.ok
    assert second.outcomes["unchanged"] == 2
    puts = [r.path for r in real.find("PUT") if "/classifications" in r.path or "/tags" in r.path]
    assert puts == ["/api/v1/classifications", "/api/v1/tags"]
    first_write = min(r.at for r in real.find("PUT", SERVICES))
    assert all(r.at <= first_write for r in real.find("PUT", r"/v1/tags$"))

    # A second process on a server where both exist leaves them alone.
    real.reset_log()
    (third,) = cycles(raw_config(real, [sklearn("a"), sklearn("c")]), None)
    assert third.ok
    assert real.count("PUT", r"/v1/(classifications|tags)$") == 0


def test_a_dry_run_never_creates_the_tag_and_says_a_real_run_will(real: OpenMetadataStandIn) -> None:
    (report,) = cycles(raw_config(real, [sklearn("a")]), None, dry_run=True)
    assert real.count("PUT") == 0
    assert real.count("POST") == 0
    assert any("does not exist yet; a real run creates it" in n for n in report.notes), report.notes


def test_a_token_that_may_not_create_the_tag_gets_one_clear_message_with_the_commands(
    real: OpenMetadataStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    real.add_token(OM_TOKEN, Principal(OM_BOT_NAME, is_bot=True, may_tag=False))
    first, second = cycles(raw_config(real, [sklearn("a"), sklearn("b")]), None, None)
    for report in (first, second):
        assert report.fatal is not None
        assert MARKER in report.fatal
        assert report.fatal_kind == "openmetadata_auth"
        assert not succeeded(report)
    assert first.fatal is not None
    assert "curl -X PUT" in first.fatal
    assert "/v1/classifications" in first.fatal
    assert "/v1/tags" in first.fatal
    assert real.count("PUT", SERVICES) == 0
    assert real.count("PUT", BULK) == 0
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "curl -X PUT" in r.getMessage()]
    assert len(errors) == 1


def test_a_marker_deleted_while_running_is_made_again_and_the_writes_go_through(real: OpenMetadataStandIn) -> None:
    services = [sklearn(f"s{i}") for i in range(4)]

    def drop_marker_and_drift() -> None:
        real.remove_tag(MARKER)
        for i in range(4):
            real.edit(f"s{i}", connection={"config": {"type": "CustomMlModel", "sourcePythonClass": "x"}})

    first, second = cycles(raw_config(real, services), None, drop_marker_and_drift)
    assert first.ok
    assert second.ok, second.to_dict()
    assert second.outcomes["updated"] == 4
    assert MARKER in real.tags
    assert real.count("PUT", r"/v1/tags$") == 2  # once at start, once after it vanished


def test_a_tag_domain_or_owner_the_config_names_that_does_not_exist_fails_only_its_services(
    real: OpenMetadataStandIn,
) -> None:
    ghost = str(uuid.uuid4())
    services = [
        sklearn("plain"),
        sklearn("tagged", tags=["Nope.Missing"]),
        sklearn("domained", domains=["Nowhere"]),
        sklearn("owned", owners=[{"id": ghost, "type": "user"}]),
    ]
    (dry,) = cycles(raw_config(real, services), None, dry_run=True)
    checked = {f.item: f.reason for f in dry.failures if f.stage == "check"}
    assert set(checked) == {"Nope.Missing", "Nowhere", ghost}, dry.to_dict()
    assert "tagged" in checked["Nope.Missing"]
    assert "does not exist in OpenMetadata" in checked["Nope.Missing"]

    (report,) = cycles(raw_config(real, services), None)
    assert report.applied == ["plain"]
    reasons = {f.item: f.reason for f in report.failures}
    assert set(reasons) == {"tagged", "domained", "owned"}
    assert "the tag 'Nope.Missing' named in the config does not exist" in reasons["tagged"]
    assert "the domain 'Nowhere' named in the config" in reasons["domained"]
    assert ghost in reasons["owned"]
    assert report.fatal is None  # one service written: the agent works


# --- 14.3: the server's update rules are the plan's -----------------------------------------------


def test_what_a_person_set_survives_and_a_kept_display_name_is_not_written_every_cycle(
    real: OpenMetadataStandIn,
) -> None:
    runner = {"id": str(uuid.uuid4()), "type": "ingestionRunner"}
    services = [
        {
            "name": "svc",
            "service_type": "Mlflow",
            "connection": {"trackingUri": "http://m:5000", "registryUri": "http://m:5000"},
            "metadata": {"display_name": "Agent's name"},
        }
    ]
    raw = raw_config(real, services)

    def person_edits() -> None:
        real.edit(
            "svc",
            displayName="Alice's name",
            description="Alice wrote this",
            ingestionRunner=runner,
            connection={"config": {"type": "Mlflow", "trackingUri": "http://broken", "registryUri": "http://m:5000"}},
        )

    first, repair, quiet = cycles(raw, None, person_edits, None)
    assert first.ok
    assert first.outcomes["created"] == 1
    assert repair.ok, repair.to_dict()
    assert repair.outcomes["updated"] == 1
    stored = real.get_service("svc")
    assert stored is not None
    assert stored["connection"]["config"]["trackingUri"] == "http://m:5000"  # repaired
    assert stored["displayName"] == "Alice's name"
    assert stored["description"] == "Alice wrote this"
    assert stored["ingestionRunner"]["id"] == runner["id"]
    assert any("keeps the displayName" in n for n in repair.notes), repair.notes
    writes = len(real.writes())
    assert quiet.ok
    assert quiet.outcomes["unchanged"] == 1
    assert len(real.writes()) == writes  # the managed displayName differs, and no write every cycle

    (dry,) = cycles(raw, None, dry_run=True)
    assert any("keeps the displayName" in n for n in dry.notes)
    assert dry.plan is not None
    assert dry.plan.kept == (("svc", "displayName"),)


# --- 14.4: deletes the server refuses ---------------------------------------------------------------


def test_a_stale_service_that_still_has_children_is_kept_with_a_report_line_and_no_failure(
    real: OpenMetadataStandIn,
) -> None:
    (first,) = cycles(raw_config(real, [sklearn("keep"), sklearn("gone")]), None)
    real.set_model_count("gone", 2)
    raw = raw_config(real, [sklearn("keep")])
    raw.update(policy="sync", stale_after=1, max_delete_fraction=1.0)
    (second,) = cycles(raw, None)
    assert first.ok
    assert second.ok, second.to_dict()
    assert second.not_empty == ["gone"]
    assert any("not deleted gone" in n and "never deletes recursively" in n for n in second.notes)
    assert real.services["gone"]["deleted"] is False
    assert all(r.query.get("recursive") == "false" for r in real.find("DELETE"))


# --- 14.5: versions -------------------------------------------------------------------------------------


def test_an_old_server_is_refused_once_with_its_version_and_nothing_read_or_written() -> None:
    standin = make_standin(server_version="1.7.4")
    try:
        first, second = cycles(raw_config(standin, [sklearn("a")]), None, None)
        for report in (first, second):
            assert report.fatal is not None
            assert "OpenMetadata 1.7.4 is not supported" in report.fatal
            assert report.fatal_kind == "openmetadata_version"
        assert standin.count("GET", r"/system/version") == 1
        assert standin.count("GET", SERVICES) == 0
        assert standin.writes() == []
    finally:
        standin.stop()


def test_the_long_running_agent_refuses_an_old_server_once_at_start_and_exits_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mlsvc_discover.daemon import serve

    standin = make_standin(server_version="1.7.4")
    raw = {**raw_config(standin, [sklearn("a")]), "schedule": {"interval": "200ms"}, "server": {"enabled": False}}
    try:
        # Without the refusal this would cycle until the timeout, logging the same fatal each time.
        code = asyncio.run(asyncio.wait_for(serve(parse_config(raw, env={}), stop=asyncio.Event()), 30))
        assert code == 1
        said = [r.getMessage() for r in caplog.records]
        stopping = [m for m in said if m.startswith("stopping: OpenMetadata")]
        assert len(stopping) == 1, said
        assert "OpenMetadata 1.7.4 is not supported" in stopping[0]
        # One cycle and no other: the refusal is not repeated cycle after cycle.
        assert [m for m in said if m.startswith("cycle ")] == [m for m in said if m.startswith("cycle 1")], said
        assert standin.count("GET", r"/system/version") == 1
        assert standin.count("GET", SERVICES) == 0
        assert standin.writes() == []
    finally:
        standin.stop()


def test_a_1_8_server_is_supported() -> None:
    standin = make_standin(server_version="1.8.0")
    try:
        (report,) = cycles(raw_config(standin, [sklearn("a")]), None)
        assert report.ok, report.to_dict()
    finally:
        standin.stop()


# --- 14.6: readiness tells the truth --------------------------------------------------------------------


def test_a_cycle_whose_every_write_is_refused_is_not_a_success(real: OpenMetadataStandIn) -> None:
    real.inject(FaultRule(method="PUT", path=SERVICES, status=404, message=f"tag instance for {MARKER}x not found"))
    (report,) = cycles(raw_config(real, [sklearn("a"), sklearn("b")]), None)
    assert report.fatal is not None
    assert "accepted none of the 2 writes" in report.fatal
    assert report.fatal_kind == "openmetadata_writes_refused"
    assert not succeeded(report)


# --- issue 8: bounded listing, total deadlines, hostile shapes -----------------------------------------


def _page(names: list[str], after: str | None) -> dict[str, Any]:
    data = [{"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, n)), "name": n, "serviceType": "Sklearn"} for n in names]
    paging: dict[str, Any] = {"total": 10**6}
    if after is not None:
        paging["after"] = after
    return {"data": data, "paging": paging}


LOOPS = {
    # the same cursor forever
    "A->A": lambda q: _page([f"x{q.get('after', '0')}"], "A"),
    # cursors that cycle
    "A->B->A": lambda q: _page([f"y{q.get('after', '0')}"], {"A": "B", "B": "A"}.get(q.get("after", ""), "A")),
    # empty pages, each with a new cursor, for ever
    "empty-forever": lambda q: _page([], uuid.uuid4().hex),
    # new names and new cursors for ever: only the page cap ends it
    "endless": lambda q: _page([uuid.uuid4().hex], uuid.uuid4().hex),
}


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_listing_whose_paging_never_ends_is_fatal_and_nothing_is_written(
    real: OpenMetadataStandIn, loop: str
) -> None:
    real.inject(FaultRule(method="GET", path=SERVICES, respond=lambda q, b: (200, LOOPS[loop](q))))
    started = time.monotonic()
    (report,) = cycles(raw_config(real, [sklearn("a")], max_pages=50), None)
    assert time.monotonic() - started < 30
    assert report.fatal is not None
    assert "OpenMetadata answered something unexpected" in report.fatal, report.fatal
    assert report.fatal_kind == "openmetadata_bad_answer"
    assert report.plan is None
    assert real.writes() == []
    assert real.count("GET", SERVICES) <= 50


def test_a_listing_that_trickles_its_answer_ends_within_the_total_deadline(real: OpenMetadataStandIn) -> None:
    real.inject(FaultRule(method="GET", path=SERVICES, trickle=20.0))
    started = time.monotonic()
    (report,) = cycles(raw_config(real, [sklearn("a")], timeout="1s", retries=1), None)
    took = time.monotonic() - started
    assert took < 2 * 1 + 1 + 5, took  # two attempts of 1 s, a backoff, generous margin
    assert report.fatal is not None
    assert "timed out after 1s" in report.fatal
    assert real.writes() == []


def test_an_answer_larger_than_max_response_bytes_is_not_read(real: OpenMetadataStandIn) -> None:
    huge = _page([f"n{i:06d}" for i in range(3000)], None)
    real.inject(FaultRule(method="GET", path=SERVICES, respond=lambda q, b: (200, huge)))
    (report,) = cycles(raw_config(real, [sklearn("a")], max_response_bytes=65536), None)
    assert report.fatal is not None
    assert "max_response_bytes" in report.fatal
    assert real.writes() == []


def _bad_entity(shape: str) -> dict[str, Any]:
    entity: dict[str, Any] = {"id": str(uuid.uuid4()), "name": "a", "serviceType": "Sklearn"}
    if shape == "tags-as-strings":
        entity["tags"] = ["mlsvc-discover.real"]
    elif shape == "tags-without-tagFQN":
        entity["tags"] = [{"source": "Classification"}]
    elif shape == "owners-not-a-list":
        entity["owners"] = {"id": "x"}
    elif shape == "connection-a-string":
        entity["connection"] = "nope"
    return {"data": [entity], "paging": {"total": 1}}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_bad_entity("tags-as-strings"), id="tags-as-strings"),
        pytest.param(_bad_entity("tags-without-tagFQN"), id="tags-without-tagFQN"),
        pytest.param(_bad_entity("owners-not-a-list"), id="owners-not-a-list"),
        pytest.param(_bad_entity("connection-a-string"), id="connection-a-string"),
        pytest.param({"data": {"a": 1}, "paging": {}}, id="data-not-a-list"),
        pytest.param({"paging": {}}, id="no-data"),
        pytest.param([], id="a-list"),
        pytest.param({"data": [], "paging": {"after": 7}}, id="after-a-number"),
        pytest.param({"data": ["a"], "paging": {}}, id="entry-a-string"),
    ],
)
def test_a_listing_that_cannot_be_read_is_fatal_never_an_empty_catalog(real: OpenMetadataStandIn, body: Any) -> None:
    real.inject(FaultRule(method="GET", path=SERVICES, respond=lambda q, b: (200, body)))
    (report,) = cycles(raw_config(real, [sklearn("a")]), None)
    assert report.fatal is not None, report.to_dict()
    assert "OpenMetadata answered something unexpected" in report.fatal
    assert report.plan is None
    assert real.writes() == []


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"status": "success", "successRequest": 3, "failedRequest": 1}, id="numbers"),
        pytest.param({"status": "success", "successRequest": ["a"]}, id="strings"),
        pytest.param([1, 2], id="a-list"),
    ],
)
def test_a_bulk_answer_of_the_wrong_shape_is_a_per_item_failure(
    om_standin_bulk: OpenMetadataStandIn, answer: Any
) -> None:
    om_standin_bulk.inject(FaultRule(method="PUT", path=BULK, respond=lambda q, b: (200, answer)))
    (report,) = cycles(raw_config(om_standin_bulk, [sklearn("a"), sklearn("b")]), None)
    assert {f.item for f in report.failures} == {"a", "b"}
    assert all("OpenMetadata answered something unexpected" in f.reason for f in report.failures)


def test_a_put_answer_that_is_not_the_service_is_a_per_item_failure(real: OpenMetadataStandIn) -> None:
    real.inject(FaultRule(method="PUT", path=SERVICES, name="b", respond=lambda q, b: (200, ["not", "it"])))
    (report,) = cycles(raw_config(real, [sklearn("a"), sklearn("b")]), None)
    assert report.applied == ["a"]
    assert [f.item for f in report.failures] == ["b"]
    assert "OpenMetadata answered something unexpected" in report.failures[0].reason


def test_a_server_that_does_not_know_ingestion_runner_is_listed_without_it() -> None:
    standin = make_standin(unknown_fields=("ingestionRunner",))
    try:
        first, second = cycles(raw_config(standin, [sklearn("a")]), None, None)
        assert first.ok, first.to_dict()
        assert second.ok
        assert second.outcomes["unchanged"] == 1
        assert standin.count("GET", SERVICES, status=400) == 1  # learnt once per process
    finally:
        standin.stop()
