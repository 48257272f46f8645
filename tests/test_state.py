"""State that cannot be kept is loud: unreadable files start fresh, unwritable ones fail, one agent per file."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mlsvc_discover._errors import StateLockedError
from mlsvc_discover.agent import Agent
from mlsvc_discover.cli import EXIT_LOCKED, main
from mlsvc_discover.config import parse_config
from mlsvc_discover.daemon import Daemon
from mlsvc_discover.metrics import Metrics
from mlsvc_discover.state import DeleteState, StateFile
from testing.om_fixtures import OM_TOKEN
from testing.openmetadata import OpenMetadataStandIn
from tests.helpers import CLI, write_config

OWNER_TAG = "mlsvc-discover.state-test"


def raw_config(standin: OpenMetadataStandIn, state: Path, **top: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "owner_id": "state-test",
        "policy": "sync",
        "openmetadata": {"host": standin.base_url, "token": OM_TOKEN, "retries": 0, "timeout": "5s"},
        "state": {"path": str(state)},
        "schedule": {"interval": "1h", "grace_period": "2s"},
        "server": {"address": "127.0.0.1:0"},
        "discoverers": [
            {"type": "static", "name": "declared", "services": [{"name": "sk-scoring", "service_type": "Sklearn"}]}
        ],
    }
    raw.update(top)
    return raw


UNREADABLE: dict[str, bytes] = {
    "infinity": b"1e999",
    "infinite-miss-count": json.dumps({"owner": OWNER_TAG, "misses": {"a": 1}}).encode().replace(b"1}", b"1e999}"),
    "deeply-nested": b"[" * 200_000 + b"]" * 200_000,
    "deeply-nested-object": b'{"owner": ' * 100_000 + b"1" + b"}" * 100_000,
    "huge-integer": b'{"owner": "' + OWNER_TAG.encode() + b'", "misses": {"a": ' + b"9" * 5000 + b"}}",
    "wrong-types": json.dumps({"owner": OWNER_TAG, "misses": [1, 2], "scopes": 5}).encode(),
    "miss-count-as-string": json.dumps({"owner": OWNER_TAG, "misses": {"a": "3"}}).encode(),
    "negative-miss-count": json.dumps({"owner": OWNER_TAG, "misses": {"a": -1}}).encode(),
    "scope-of-numbers": json.dumps({"owner": OWNER_TAG, "scopes": {"a": [1, 2]}}).encode(),
    "owner-is-a-list": json.dumps({"owner": [OWNER_TAG]}).encode(),
    "null": b"null",
    "a-list": b"[1, 2, 3]",
    "NaN": json.dumps({"owner": OWNER_TAG, "misses": {"a": 1}}).encode().replace(b"1}", b"NaN}"),
    "binary": bytes(range(256)) * 4,
    "not-utf8": b'{"owner": "\xff\xfe"}',
    "empty": b"",
}


@pytest.mark.parametrize("content", list(UNREADABLE.values()), ids=list(UNREADABLE))
def test_an_unreadable_state_file_starts_fresh_with_a_warning_in_once_and_in_the_daemon(
    content: bytes,
    om_standin: OpenMetadataStandIn,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = tmp_path / "state.json"
    state.write_bytes(content)
    raw = raw_config(om_standin, state)

    daemon = Daemon(parse_config(raw, env={}))  # the long-running agent reads it at start
    assert daemon.agent.misses == {}
    assert daemon.agent.scopes == {}
    code = main(
        ["discover", "--once", "--config", str(write_config(tmp_path / "config.yaml", raw)), "--output", "json"]
    )

    assert code == 0, capsys.readouterr()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"state file {state}" in w and "starting with no miss counts" in w for w in warnings) or any(
        "belongs to" in w for w in warnings
    ), warnings
    # The cycle wrote a good file over the bad one.
    saved = json.loads(state.read_text(encoding="utf-8"))
    assert saved["owner"] == OWNER_TAG
    assert saved["misses"] == {}


def test_state_round_trips_and_writes_leave_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    store = StateFile(path)
    store.save(OWNER_TAG, DeleteState({"svc-a": 2}, {"svc-a": ("mlflow", "http://x")}))
    store.save(OWNER_TAG, DeleteState({"svc-a": 3}, {"svc-a": ("mlflow", "http://x")}))

    loaded = StateFile(path).load(OWNER_TAG)
    assert loaded.misses == {"svc-a": 3}
    assert loaded.scopes == {"svc-a": ("mlflow", "http://x")}
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]
    assert StateFile(path).load("someone-else.x") == DeleteState()


def test_an_unwritable_state_path_under_sync_refuses_to_start_naming_the_path_and_contacts_nothing(
    om_standin: OpenMetadataStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state-is-a-directory"
    state.mkdir()
    raw = raw_config(om_standin, state)

    code = main(["discover", "--once", "--config", str(write_config(tmp_path / "config.yaml", raw))])
    err = capsys.readouterr().err

    assert code == 1
    assert f"cannot write state file {state}" in err
    assert "change state.path" in err
    assert om_standin.requests == []

    async def daemon_run() -> int:
        return await Daemon(parse_config(raw, env={})).run(asyncio.Event())

    assert asyncio.run(daemon_run()) == 1
    assert om_standin.requests == []


def test_a_state_file_that_becomes_unwritable_under_sync_fails_the_cycle_with_a_metric_and_a_log_line(
    om_standin: OpenMetadataStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state.json"
    config = parse_config(raw_config(om_standin, state), env={})
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    async def cycles() -> tuple[int, int]:
        async with Agent(config) as agent:
            first = await agent.run_once()
            metrics.observe(first)
            state.unlink()
            state.mkdir()  # the path can no longer be replaced by a file
            second = await agent.run_once()
            metrics.observe(second)
            return first.exit_code, second.exit_code

    first, second = asyncio.run(cycles())

    assert first == 0
    assert second == 1
    assert (
        registry.get_sample_value("mlsvc_discover_errors_total", {"discoverer": "agent", "kind": "state_unwritable"})
        == 1
    )
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"cannot write state file {state}" in e for e in errors), errors


def test_an_unwritable_state_path_is_only_a_warning_when_the_policy_never_deletes(
    om_standin: OpenMetadataStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state-is-a-directory"
    state.mkdir()
    raw = raw_config(om_standin, state, policy="upsert-only")

    assert main(["discover", "--once", "--config", str(write_config(tmp_path / "config.yaml", raw))]) == 0
    assert "sk-scoring" in om_standin.services


def test_two_state_files_locks_exclude_each_other_until_released(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    first, second = StateFile(path), StateFile(path)
    first.lock()
    with pytest.raises(StateLockedError, match="another agent is using state file"):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()


def test_a_second_agent_on_the_same_state_file_exits_3_with_a_clear_message_while_the_first_runs_on(
    om_standin: OpenMetadataStandIn, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    config_path = write_config(tmp_path / "config.yaml", raw_config(om_standin, state))
    log = tmp_path / "daemon.log"
    env = {**os.environ, "MLSVC_DISCOVER_LOG_LEVEL": "INFO"}
    with log.open("wb") as out:
        daemon = subprocess.Popen(  # stopped below, killed on failure
            [str(CLI), "discover", "--config", str(config_path)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 60
        while "cycle 1 ok" not in log.read_text():
            assert daemon.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        before = len(om_standin.requests)

        second = subprocess.run(
            [str(CLI), "discover", "--once", "--config", str(config_path)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert second.returncode == EXIT_LOCKED == 3
        assert f"another agent is using state file {state}" in second.stderr
        assert len(om_standin.requests) == before  # the second agent contacted nothing
        # A dry run only reads the state, so it may run beside the agent.
        dry = subprocess.run(
            [str(CLI), "discover", "--dry-run", "--config", str(config_path)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert dry.returncode == 0, dry.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
    assert code == 0
