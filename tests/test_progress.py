"""Progress of ``discover --once``: on a terminal only, per discoverer, never in logs or JSON.

``mlsvc-discover discover --once`` runs as a real process against the OpenMetadata stand-in and
MLflow-like servers on loopback (one of them a refused port), with its stderr on a
pseudo-terminal (``os.openpty``) or on a pipe. What a terminal would show is rebuilt from the
bytes: a line ends at ``\\n``, and ``\\r`` plus erase-line starts it again.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlsvc_discover._progress import ProgressLine, wanted
from mlsvc_discover.discoverers.base import Progress
from testing.mlflow_fixtures import FakeServer, free_port, mlflow_like
from testing.moto_fixtures import ACCOUNT_A, ACCOUNT_B, AwsWorld
from testing.om_fixtures import OM_TOKEN
from testing.openmetadata import OpenMetadataStandIn
from tests.helpers import CLI

PROGRESS = re.compile(r"discovering: ")


@pytest.fixture
def config_file(tmp_path: Path, om_standin: OpenMetadataStandIn) -> Iterator[Path]:
    servers = [FakeServer(mlflow_like()) for _ in range(3)]
    refused = f"http://127.0.0.1:{free_port()}"
    raw = {
        "owner_id": "progress-test",
        # DEBUG, so that log records (the refused probe) are written while the line is up.
        "logging": {"level": "DEBUG"},
        "openmetadata": {"host": om_standin.base_url, "token": OM_TOKEN, "retries": 0, "timeout": "5s"},
        "discoverers": [
            {
                "type": "mlflow",
                "name": "tracking",
                "timeout": "3s",
                "tracking_uris": [s.url for s in servers] + [refused],
            },
            {"type": "static", "name": "declared", "services": [{"name": "pinned", "service_type": "CustomMlModel"}]},
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    yield path
    for s in servers:
        s.close()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMETADATA_", "MLSVC_DISCOVER_"))}
    env["TERM"] = "xterm"
    env["COLUMNS"] = "200"
    return env


def run_on_pty(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal; (exit code, stdout, what stderr wrote)."""
    master, slave = os.openpty()
    try:
        process = subprocess.Popen(
            [str(CLI), *args], stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=_env()
        )
        os.close(slave)
        chunks: list[bytes] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        out, _ = process.communicate(timeout=30)
        return process.returncode, out.decode(), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)


def screen_lines(raw: str) -> list[str]:
    """The lines a terminal ends up showing: each line as it stands after its last erase."""
    text = raw.replace("\r\n", "\n")
    return [line.split("\r\x1b[K")[-1] for line in text.split("\n")]


def test_on_a_terminal_once_shows_progress_per_discoverer_on_stderr_and_keeps_it_out_of_logs(
    config_file: Path,
) -> None:
    code, out, err = run_on_pty(["discover", "--once", "--config", str(config_file)])
    assert code == 1, err  # one URI is refused
    assert PROGRESS.search(err), err
    assert "\r\x1b[K" in err  # drawn in place
    lines = screen_lines(err)
    final = [line for line in lines if line.startswith("discovering: ")]
    assert final, lines
    assert final[-1] == "discovering: tracking 4/4 scopes, 1 failed, done | declared, done", final
    # Every other line a person sees is a log line, without any progress in it.
    for line in lines:
        if line and not line.startswith("discovering: "):
            assert "discovering:" not in line, line
    assert any("mlflow probe of" in line and "connection refused" in line for line in lines), lines
    assert "discovering" not in out  # the report on stdout has none
    assert "mlsvc-discover cycle finished with failures" in out


def test_through_a_pipe_there_is_no_progress(config_file: Path) -> None:
    result = subprocess.run(
        [str(CLI), "discover", "--once", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "discovering" not in result.stderr
    assert "\x1b[" not in result.stderr
    assert "discovering" not in result.stdout
    assert "mlflow probe of" in result.stderr  # the logs are there, only the progress is not


def test_with_json_output_there_is_no_progress_even_on_a_terminal(config_file: Path) -> None:
    code, out, err = run_on_pty(["discover", "--once", "--output", "json", "--config", str(config_file)])
    assert code == 1, err
    assert "discovering" not in err
    assert "\x1b[" not in err
    assert out.lstrip().startswith("{")


def test_progress_is_wanted_only_for_a_text_report_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    assert wanted(Tty(), "text")
    assert not wanted(Tty(), "json")
    assert not wanted(io.StringIO(), "text")
    monkeypatch.setenv("TERM", "dumb")
    assert not wanted(Tty(), "text")


def test_the_line_is_redrawn_at_most_ten_times_a_second_but_always_shows_the_end() -> None:
    now = [0.0]
    stream = io.StringIO()
    line = ProgressLine(stream, ["a", "b"], clock=lambda: now[0])
    for i in range(1, 101):
        line(Progress("a", i, 100, i // 50))
    assert stream.getvalue().count("\r\x1b[K") == 1  # same instant: drawn once
    now[0] = 1.0
    line(Progress("b", 1, 2, 0, unit="accounts"))
    assert stream.getvalue().endswith("discovering: a 100/100 scopes, 2 failed | b 1/2 accounts")
    line(Progress("a", 0, 0, 2, finished=True))
    line(Progress("b", 0, 0, 1, finished=True))
    assert stream.getvalue().endswith(
        "discovering: a 100/100 scopes, 2 failed, done | b 1/2 accounts, 1 failed, done\n"
    )
    line(Progress("a", 5, 5, 0))  # after the end: ignored
    assert stream.getvalue().endswith("done\n")


def test_a_log_record_erases_the_line_and_it_comes_back_after() -> None:
    stream = io.StringIO()
    line = ProgressLine(stream, ["a"], clock=lambda: 0.0)
    line(Progress("a", 1, 3, 0))
    line.log_stream.write("2026-11-29 WARNING something\n")
    assert stream.getvalue() == (
        "\r\x1b[Kdiscovering: a 1/3 scopes\r\x1b[K2026-11-29 WARNING something\n\r\x1b[Kdiscovering: a 1/3 scopes"
    )


def _events(discoverer: object) -> list[Progress]:
    events: list[Progress] = []

    async def run() -> None:
        discoverer.set_progress(events.append)  # type: ignore[attr-defined]
        try:
            await discoverer.discover()  # type: ignore[attr-defined]
        finally:
            await discoverer.aclose()  # type: ignore[attr-defined]

    asyncio.run(asyncio.wait_for(run(), timeout=45))
    return events


def test_the_sagemaker_discoverer_reports_accounts_done_of_total(aws_world: AwsWorld) -> None:
    from mlsvc_discover.discoverers.sagemaker import SageMakerConfig, SageMakerDiscoverer

    accounts = [{"role_arn": aws_world.role_arns[ACCOUNT_A]}, {"role_arn": aws_world.role_arns[ACCOUNT_B]}]
    config = SageMakerConfig.model_validate(
        {
            "type": "sagemaker",
            "name": "aws",
            "regions": ["us-east-1", "eu-west-1"],
            "endpoint_url": aws_world.endpoint_url,
            "accounts": accounts,
        }
    )
    events = _events(SageMakerDiscoverer(config))
    assert [(e.done, e.total, e.failed, e.unit) for e in events] == [
        (0, 2, 0, "accounts"),
        (1, 2, 0, "accounts"),
        (2, 2, 0, "accounts"),
    ]
    assert {e.source for e in events} == {"aws"}


def test_the_mlflow_discoverer_reports_uris_done_of_total_with_failures_so_far() -> None:
    from mlsvc_discover.discoverers.mlflow import MlflowDiscoverer, MlflowDiscovererConfig

    server = FakeServer(mlflow_like())
    try:
        refused = f"http://127.0.0.1:{free_port()}"
        config = MlflowDiscovererConfig.model_validate(
            {"type": "mlflow", "name": "tracking", "timeout": "3s", "tracking_uris": [server.url, refused]}
        )
        events = _events(MlflowDiscoverer(config))
    finally:
        server.close()
    assert events[0] == Progress("tracking", 0, 2, 0)
    assert events[-1] == Progress("tracking", 2, 2, 1)
    assert [e.done for e in events] == [0, 1, 2]


def test_a_failing_progress_listener_never_stops_discovery() -> None:
    from mlsvc_discover.discoverers.static import StaticDiscoverer, StaticDiscovererConfig

    def broken(_: Progress) -> None:
        raise RuntimeError("display gone")

    discoverer = StaticDiscoverer(StaticDiscovererConfig.model_validate({"type": "static", "name": "s"}))
    discoverer.set_progress(broken)

    async def run() -> list[int]:
        return await discoverer.gather_scopes(
            [asyncio.sleep(0, result=1), asyncio.sleep(0, result=2)], failures=lambda r: 0
        )

    assert asyncio.run(run()) == [1, 2]
