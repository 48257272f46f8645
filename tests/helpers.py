"""Helpers several test files share: the CLI in-process and as a process, HTTP GETs, config files,
and driving a daemon in this process. Fixtures live in ``testing/`` (loaded by ``conftest.py``)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsvc_discover.agent import Agent
from mlsvc_discover.cli import main
from mlsvc_discover.config import AgentConfig, parse_config
from mlsvc_discover.daemon import Daemon
from mlsvc_discover.report import Report
from testing.om_fixtures import OM_TOKEN
from testing.openmetadata import OpenMetadataStandIn

# The installed console script, for tests that run the agent as a real process.
CLI = Path(sys.executable).parent / "mlsvc-discover"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process: exit code, stdout and stderr."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def http_get_full(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], str]:
    """Status, headers and body of a GET; an HTTP error status is an answer, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """Status and body of a GET; urllib, because its set-up costs nothing inside a cycle."""
    status, _, body = http_get_full(url, timeout)
    return status, body


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def write_uris(path: Path, *urls: str) -> None:
    # Written aside and renamed, so a cycle never reads half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{u}\n" for u in urls), encoding="utf-8")
    os.replace(tmp, path)


def svc_name(url: str) -> str:
    """The default service name of an MLflow URI on loopback: ``mlflow-<host>-<port>``."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return f"mlflow-{host}-{port}"


def daemon_raw_config(standin: OpenMetadataStandIn, uris_file: Path, **top: Any) -> dict[str, Any]:
    """A config dict for a daemon on loopback; ``top`` replaces whole top-level sections."""
    raw: dict[str, Any] = {
        "owner_id": "daemon-test",
        "policy": "sync",
        "stale_after": 2,
        "max_delete_fraction": 1.0,
        # No retries: a failure must show in the cycle it happens, not seconds later.
        "openmetadata": {"host": standin.base_url, "token": OM_TOKEN, "retries": 0, "timeout": "3s"},
        "schedule": {"interval": "250ms", "grace_period": "5s"},
        "server": {"address": "127.0.0.1:0", "ready_intervals": 2},
        "discoverers": [{"type": "mlflow", "name": "mlflow", "uris_file": str(uris_file), "timeout": "3s"}],
    }
    raw.update(top)
    return raw


def daemon_config(standin: OpenMetadataStandIn, uris_file: Path, **top: Any) -> AgentConfig:
    return parse_config(daemon_raw_config(standin, uris_file, **top), env={})


@dataclass
class Run:
    """What a daemon run left behind."""

    daemon: Daemon
    reports: list[Report] = field(default_factory=list)
    exit_code: int | None = None
    elapsed: float = 0.0


Step = Callable[[int, Report, Daemon], bool | None]


def drive(config: AgentConfig, step: Step, *, agent: Agent | None = None, timeout: float = 30.0) -> Run:
    """Run a daemon in this process; ``step(n, report, daemon)`` after cycle n, True stops it.

    A failing assertion inside ``step`` stops the daemon and is raised here, instead of being
    logged by the daemon as a failing callback while the test waits for its timeout.
    """
    errors: list[BaseException] = []

    async def main() -> Run:
        stop = asyncio.Event()
        reports: list[Report] = []

        def hook(report: Report) -> None:
            reports.append(report)
            try:
                if step(len(reports), report, daemon):
                    stop.set()
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        daemon = Daemon(config, agent=agent, on_cycle=hook)
        run = Run(daemon=daemon, reports=reports)

        started = time.monotonic()
        run.exit_code = await asyncio.wait_for(run.daemon.run(stop), timeout)
        run.elapsed = time.monotonic() - started
        return run

    run = asyncio.run(main())
    if errors:
        raise errors[0]
    return run
