"""The status page (``/status``, ``/status.json``) looked at in a real browser.

A real ``mlsvc-discover discover`` process (the long-running agent) runs against the
OpenMetadata stand-in with three discoverers: ``static`` (one service to create, one whose name
a person already took: a conflict; one the server refuses: a write failure; one with markup in
its name), ``mlflow`` (an MLflow-like server behind basic auth, and a refused port: a discovery
failure) and a second ``mlflow`` that finds nothing. The stand-in also holds a service the
agent owns that nobody finds any more: a pending delete. Headless Chromium then reads the page
as an operator would, and the config's secrets are searched for in the DOM and the JSON.

The 5,000-service test renders a real dry-run cycle of a ``static`` discoverer with 5,000
services and states how long the browser takes to render and to filter it.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from mlsvc_discover.agent import Agent
from mlsvc_discover.config import parse_config
from mlsvc_discover.report import Report
from mlsvc_discover.server import HealthServer, Readiness
from mlsvc_discover.status import StatusBoard
from testing.mlflow_fixtures import FakeServer, free_port, mlflow_like
from testing.om_fixtures import OM_TOKEN, make_standin
from testing.openmetadata import OpenMetadataStandIn
from tests.helpers import CLI, http_get_full

pytestmark = pytest.mark.slow

OWNER = "status-test"
OWNER_TAG = f"mlsvc-discover.{OWNER}"
MLFLOW_PASSWORD = "mlflow-pw-Zq81-very-secret"
URI_PASSWORD = "uri-pw-7Hk2"
EVIL = 'evil<script>document.title="pwned"</script>&"'


@dataclass
class RunningAgent:
    url: str
    standin: OpenMetadataStandIn
    secrets: tuple[str, ...]
    mlflow_url: str
    refused_url: str
    process: subprocess.Popen[bytes]
    log: Path


def _owned_request(name: str) -> dict[str, Any]:
    uri = "http://retired.example:5000"
    return {
        "name": name,
        "serviceType": "Mlflow",
        "connection": {"config": {"type": "Mlflow", "trackingUri": uri, "registryUri": uri}},
        "tags": [{"tagFQN": OWNER_TAG, "source": "Classification", "labelType": "Automated", "state": "Confirmed"}],
    }


@pytest.fixture(scope="module")
def running_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    tmp = tmp_path_factory.mktemp("status-agent")
    standin = make_standin()
    fake = FakeServer(mlflow_like())
    refused = f"http://127.0.0.1:{free_port()}"
    process: subprocess.Popen[bytes] | None = None
    try:
        # A person registered "static-taken" by hand: the agent must report a conflict.
        standin.put_entity(
            {
                "name": "static-taken",
                "serviceType": "CustomMlModel",
                "connection": {"config": {"type": "CustomMlModel"}},
            }
        )
        # A service this agent registered earlier and nobody finds any more: a pending delete.
        standin.put_entity(_owned_request("mlflow-retired"))
        # A 404 for a reference the request names fails only that service (a 403 on a per-item
        # PUT would stop every write of the cycle: the token is refused).
        standin.fail_items({"static-refused": (404, "domain instance for Finance not found")})
        port = free_port()
        host, mlflow_port = fake.url.removeprefix("http://").split(":")
        config = {
            "owner_id": OWNER,
            "policy": "sync",
            "stale_after": 3,
            "max_delete_fraction": 1.0,
            "openmetadata": {"host": standin.base_url, "token": OM_TOKEN, "retries": 0, "timeout": "5s"},
            "schedule": {"interval": "1h", "grace_period": "5s"},
            "server": {"address": f"127.0.0.1:{port}"},
            "discoverers": [
                {
                    "type": "static",
                    "name": "static",
                    "services": [
                        {"name": "static-new", "service_type": "CustomMlModel"},
                        {"name": "static-taken", "service_type": "CustomMlModel"},
                        {"name": "static-refused", "service_type": "CustomMlModel"},
                        {"name": EVIL, "service_type": "CustomMlModel"},
                    ],
                },
                {
                    "type": "mlflow",
                    "name": "mlflow",
                    "timeout": "3s",
                    "auth": {"username": "alice", "password": MLFLOW_PASSWORD},
                    "tracking_uris": [f"http://bob:{URI_PASSWORD}@{host}:{mlflow_port}", refused],
                },
            ],
        }
        cfg = tmp / "config.yaml"
        cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
        log = tmp / "agent.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMETADATA_", "MLSVC_DISCOVER_"))}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(CLI), "discover", "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the agent exited with {process.returncode}:\n{log.read_text()}")
            try:
                status, _, body = http_get_full(url + "/status.json", timeout=2)
                if status == 200 and json.loads(body)["last_cycle"] is not None:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no cycle finished within 90 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield RunningAgent(
            url=url,
            standin=standin,
            secrets=(OM_TOKEN, MLFLOW_PASSWORD, URI_PASSWORD),
            mlflow_url=fake.url,
            refused_url=refused,
            process=process,
            log=log,
        )
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        fake.close()
        standin.stop()


def _load(driver: Any, url: str) -> None:
    driver.get(url)
    assert driver.execute_script("return document.readyState") == "complete"


def _rows(driver: Any, table: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return [r for r in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr") if r.is_displayed()]


def _row_of(driver: Any, text: str) -> str:
    matches = [r.text for r in _rows(driver, "services") if text in r.text]
    assert len(matches) == 1, (text, [r.text for r in _rows(driver, "services")])
    return str(matches[0])


def test_the_page_shows_a_real_cycle_of_the_running_agent_with_its_conflict_failures_and_pending_delete(
    running_agent: RunningAgent,
    chrome: Any,
) -> None:
    from selenium.webdriver.common.by import By

    _load(chrome, running_agent.url + "/status")
    assert chrome.title == f"mlsvc-discover status: {OWNER}"
    result = chrome.find_element(By.ID, "result").text
    assert result.startswith("Cycle 1: success, with failures"), result

    assert "create" in _row_of(chrome, "static-new")
    taken = _row_of(chrome, "static-taken")
    assert "conflict" in taken
    assert "exists without this agent's tag" in taken
    refused = _row_of(chrome, "static-refused")
    assert "failed" in refused
    assert "404" in refused
    retired = _row_of(chrome, "mlflow-retired")
    assert "delete pending" in retired
    # The mlflow discoverer failed for one URI, so nobody can tell where this one went: kept, count held.
    assert "0 of 3 misses" in retired
    assert "its scope failed this cycle, so it is kept" in retired
    host_port = running_agent.mlflow_url.removeprefix("http://")
    found = _row_of(chrome, f"mlflow-{host_port.replace(':', '-')}")
    assert "create" in found
    assert running_agent.mlflow_url in found  # the finding: its URI, credentials left out

    failures = [r.text for r in _rows(chrome, "failures")]
    assert any(running_agent.refused_url in f and "connection refused" in f for f in failures), failures
    assert any("static-refused" in f and "http_404" in f for f in failures), failures

    scopes = "\n".join(r.text for r in _rows(chrome, "scopes"))
    assert "static" in scopes
    assert f"mlflow/mlflow/{running_agent.refused_url}" in scopes
    assert "failed" in scopes

    # Markup in a service name is text, never markup: the title stays, and the name reads as written.
    assert chrome.title == f"mlsvc-discover status: {OWNER}"
    assert EVIL in _row_of(chrome, "evil<script>")

    page = chrome.page_source
    text = chrome.find_element(By.TAG_NAME, "body").text
    for secret in running_agent.secrets:
        assert secret not in page
        assert secret not in text

    if os.environ.get("MLSVC_STATUS_SCREENSHOT"):
        chrome.set_window_size(1180, 860)
        chrome.save_screenshot(os.environ["MLSVC_STATUS_SCREENSHOT"])


def test_the_filter_box_narrows_every_table_as_one_types(
    running_agent: RunningAgent,
    chrome: Any,
) -> None:
    from selenium.webdriver.common.by import By

    _load(chrome, running_agent.url + "/status")
    total = len(_rows(chrome, "services"))
    assert total >= 6
    box = chrome.find_element(By.NAME, "q")
    box.send_keys("conflict")
    rows = _rows(chrome, "services")
    assert [r.text.split()[0] for r in rows] == ["static-taken"]
    assert chrome.find_element(By.ID, "shown").text == "1"
    assert _rows(chrome, "failures") == []
    box.clear()
    box.send_keys("refused")  # the refused port's failure and the refused write's row
    assert {r.text.split()[0] for r in _rows(chrome, "services")} == {"static-refused"}
    assert len(_rows(chrome, "failures")) == 2
    box.clear()
    box.send_keys(" ")
    assert len(_rows(chrome, "services")) == total


def test_without_javascript_the_filter_is_done_by_the_server(running_agent: RunningAgent) -> None:
    status, headers, page = http_get_full(running_agent.url + "/status?q=static-taken")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    services = page.split('id="services"', 1)[1].split("</table>", 1)[0]
    assert services.count('<tr class="svc">') == 1
    assert "static-taken" in services
    assert 'value="static-taken"' in page  # the box shows the filter in effect
    status, _, body = http_get_full(running_agent.url + "/status.json?q=pending")
    data = json.loads(body)
    assert [s["name"] for s in data["services"]] == ["mlflow-retired"]
    assert data["services"][0]["misses"] == 0


def test_status_json_has_the_same_data_and_no_secret(running_agent: RunningAgent) -> None:
    status, headers, body = http_get_full(running_agent.url + "/status.json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    for secret in running_agent.secrets:
        assert secret not in body
    data = json.loads(body)
    cycle = data["last_cycle"]
    assert cycle["number"] == 1
    assert cycle["result"] == "success"
    assert cycle["ok"] is False  # per-item failures
    by_name = {s["name"]: s for s in data["services"]}
    assert by_name["static-taken"]["status"] == "conflict"
    assert by_name["static-refused"]["status"] == "failed"
    assert by_name["static-new"]["action"] == "create"
    assert by_name["mlflow-retired"]["status"] == "delete pending"
    assert by_name["mlflow-retired"]["discoverer"] is None or isinstance(by_name["mlflow-retired"]["discoverer"], str)
    assert {d["name"] for d in data["discoverers"]} == {"static", "mlflow"}
    mlflow = next(d for d in data["discoverers"] if d["name"] == "mlflow")
    assert [s["ok"] for s in mlflow["scopes"] if s["scope"].endswith(running_agent.refused_url)] == [False]
    assert data["cycle_in_flight"] is None
    assert data["counts"]["conflict"] == 1


def test_the_status_page_can_be_turned_off(tmp_path: Path) -> None:
    standin = make_standin()
    try:
        raw = {
            "owner_id": OWNER,
            "openmetadata": {"host": standin.base_url, "token": OM_TOKEN, "retries": 0},
            "server": {"address": "127.0.0.1:0", "status_page": False},
            "schedule": {"interval": "1h"},
            "discoverers": [{"type": "static", "name": "static", "services": []}],
        }
        from mlsvc_discover.daemon import Daemon

        daemon = Daemon(parse_config(raw, env={}))
        assert daemon.status is None
        server = HealthServer("127.0.0.1:0", daemon.readiness, daemon.registry, status=daemon.status)
        port = server.start()
        try:
            for path in ("/status", "/status.json"):
                status, _, body = http_get_full(f"http://127.0.0.1:{port}{path}")
                assert status == 404
                assert "/status" not in body
        finally:
            server.close()
    finally:
        standin.stop()


def _services(n: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"svc-{i:05d}",
            "service_type": "Mlflow",
            "connection": {
                "trackingUri": f"http://tracking-{i:05d}.ml.example:5000",
                "registryUri": f"http://tracking-{i:05d}.ml.example:5000",
            },
        }
        for i in range(n)
    ]


def test_the_page_stays_usable_with_5000_services_and_says_how_long_it_takes(
    chrome: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from selenium.webdriver.common.by import By

    raw = {
        "owner_id": OWNER,
        "schedule": {"interval": "1h"},
        "discoverers": [{"type": "static", "name": "fleet", "services": _services(5000)}],
    }
    config = parse_config(raw, env={})

    async def cycle() -> Any:
        async with Agent(config) as agent:
            return await agent.run_once(dry_run=True)

    report = asyncio.run(cycle())
    assert report.plan is not None
    assert len(report.plan.create) == 5000
    board = StatusBoard(lambda: [], owner_id=OWNER, policy="upsert-only")
    started = time.perf_counter()
    board.record(report, cycle=1, success=True)
    build = time.perf_counter() - started
    server = HealthServer("127.0.0.1:0", Readiness(3600, 3), CollectorRegistry(), status=board)
    port = server.start()
    try:
        url = f"http://127.0.0.1:{port}/status"
        started = time.perf_counter()
        _, _, page = http_get_full(url)
        serve = time.perf_counter() - started
        started = time.perf_counter()
        chrome.get(url)
        load = time.perf_counter() - started
        timing = chrome.execute_script(
            "var n=performance.getEntriesByType('navigation')[0];"
            "return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd, bytes: n.transferSize}"
        )
        assert len(_rows(chrome, "services")) == 5000
        filter_ms = chrome.execute_script(
            "var q=document.getElementsByName('q')[0],t=performance.now();q.value='svc-04321';"
            "q.dispatchEvent(new Event('input'));document.body.offsetHeight;return performance.now()-t"
        )
        assert chrome.find_element(By.ID, "shown").text == "1"
        again_ms = chrome.execute_script(
            "var q=document.getElementsByName('q')[0],t=performance.now();q.value='';"
            "q.dispatchEvent(new Event('input'));document.body.offsetHeight;return performance.now()-t"
        )
        assert chrome.find_element(By.ID, "shown").text == "5000"
    finally:
        server.close()
    with capsys.disabled():
        print(
            f"\nstatus page, 5,000 services: build {build * 1000:.0f} ms, serve {serve * 1000:.0f} ms "
            f"({len(page) / 1e6:.2f} MB), browser load {load * 1000:.0f} ms "
            f"(DOMContentLoaded {timing['dcl']:.0f} ms, load {timing['load']:.0f} ms), "
            f"filter {filter_ms:.0f} ms, clear {again_ms:.0f} ms"
        )
    # Generous bounds for a loaded 2-core machine; the numbers above are what matters.
    assert load < 30
    assert filter_ms < 5000


def test_the_health_server_answers_status_before_the_first_cycle_ends() -> None:
    board = StatusBoard(lambda: ["s3cret-token"], owner_id=OWNER)
    board.cycle_started()
    server = HealthServer("127.0.0.1:0", Readiness(60, 3), CollectorRegistry(), status=board)
    port = server.start()
    try:
        status, _, page = http_get_full(f"http://127.0.0.1:{port}/status")
        assert status == 200
        assert "No cycle has finished yet." in page
        assert "A cycle is running" in page
        status, _, body = http_get_full(f"http://127.0.0.1:{port}/status.json")
        assert json.loads(body)["last_cycle"] is None
        assert json.loads(body)["cycle_in_flight"]["running_seconds"] >= 0
    finally:
        server.close()


def test_secrets_are_redacted_before_escaping_so_markup_in_a_secret_cannot_hide_it() -> None:
    from mlsvc_discover.plan import Change, Plan
    from mlsvc_discover.report import CycleFailure
    from mlsvc_discover.status import build_status, render_html

    secret = 'p&ss<w>"rd'
    report = Report(
        started_at=time.time(),
        plan=Plan(update=(Change("svc", "update", "differs in connection", "fleet", fields=("connection",)),)),
        failures=[
            CycleFailure("write", "svc", f"HTTP 400: bad value {secret} near Bearer abc.def", "fleet", "http_400")
        ],
    )
    data = build_status(report, secrets=[secret], cycle=7, success=True)
    page = render_html({**data, "generated_at_unix": time.time()})
    for text in (json.dumps(data), page):
        assert secret not in text
        assert html.escape(secret) not in text
        assert "abc.def" not in text
    row = data["services"][0]
    assert row["status"] == "failed"
    assert row["fields"] == ["connection"]
    assert "update failed (http_400): HTTP 400: bad value ***" in page
