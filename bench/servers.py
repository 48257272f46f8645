"""The real components of the benchmark: mlflow servers, moto, the OpenMetadata stand-in.

Every one runs in its own process so the measured process (a :mod:`bench.worker`) only pays
for its own work, and so ``ru_maxrss`` and CPU seconds of that process are the agent's alone.
Each helper stops what it started: stdin closed, then SIGTERM, then SIGKILL, always reaped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.responders import stop_process
from testing.mlflow_fixtures import mlflow_server_command
from testing.moto_fixtures import terminate_process

__all__ = [
    "REPO_ROOT",
    "MlflowServer",
    "MotoProcess",
    "StandInProcess",
    "aws_env",
    "child_env",
    "free_port",
    "start_mlflow_servers",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENTS_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"


def child_env(**extra: str) -> dict[str, str]:
    """Our environment plus the repo on PYTHONPATH, so ``-m bench.x`` works from any cwd."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    env.update(extra)
    return env


def aws_env(workdir: Path) -> dict[str, str]:
    """An AWS environment that can only reach moto: dummy keys, empty config files, no IMDS."""
    cfg, creds = workdir / "aws-config", workdir / "aws-credentials"
    cfg.write_text("")
    creds.write_text("")
    env = child_env(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(cfg),
        AWS_SHARED_CREDENTIALS_FILE=str(creds),
        AWS_EC2_METADATA_DISABLED="true",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


# --- mlflow ----------------------------------------------------------------------------------


@dataclass
class MlflowServer:
    """One ``mlflow server --workers 1`` in its own session (uvicorn runs as a child)."""

    url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    ready_seconds: float = 0.0

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue


def start_mlflow_servers(count: int, workdir: Path, timeout: float = 120.0) -> list[MlflowServer]:
    """Start ``count`` real tracking servers side by side and wait until their REST API answers."""
    servers: list[MlflowServer] = []
    started = time.monotonic()
    try:
        for i in range(count):
            home = workdir / f"mlflow-{i}"
            home.mkdir(parents=True, exist_ok=True)
            port = free_port()
            env = child_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
            cmd = mlflow_server_command(port, home, BIN / "mlflow")
            with (home / "server.log").open("wb") as log:
                proc = subprocess.Popen(
                    cmd, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            servers.append(MlflowServer(f"http://127.0.0.1:{port}", proc, home))
        pending = list(servers)
        while pending:
            for server in list(pending):
                if server.process.poll() is not None:
                    log_tail = (server.workdir / "server.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"mlflow server exited with {server.process.returncode}:\n{log_tail}")
                if _http_status(server.url + EXPERIMENTS_PROBE) == 200:
                    server.ready_seconds = time.monotonic() - started
                    pending.remove(server)
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"mlflow servers not ready after {timeout:.0f}s")
            time.sleep(0.2)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


# --- moto ------------------------------------------------------------------------------------


@dataclass
class MotoProcess:
    """moto's server app (threaded werkzeug, as ``moto_server`` runs it) with an adjustable latency.

    :mod:`bench.moto_proc` serves exactly the app ``moto_server`` serves and, when a latency is
    set, sleeps that long in the request thread before answering: the round trip a real AWS API
    call has and a loopback moto does not.
    """

    latency: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    process: subprocess.Popen[bytes] | None = None

    def start(self, log_path: Path, timeout: float = 30.0) -> MotoProcess:
        port = free_port()
        cmd = [sys.executable, "-m", "bench.moto_proc", "--port", str(port), "--latency", str(self.latency)]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                cmd, env=self.env or child_env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
            )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while _http_status(self.url + "/moto-api/") != 200:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto exited with {self.process.returncode}: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto not up within {timeout:.0f}s")
            time.sleep(0.05)
        return self

    def set_latency(self, seconds: float) -> None:
        """Change the latency every AWS call gets from now on (see :mod:`bench.moto_proc`)."""
        request = urllib.request.Request(self.url + "/bench-latency", data=str(seconds).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
        self.latency = seconds

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            terminate_process(proc)


# --- the OpenMetadata stand-in ----------------------------------------------------------------


class StandInProcess:
    """The OpenMetadata stand-in (testing/openmetadata/) in its own process.

    A line protocol on stdin/stdout (see :mod:`bench.standin_proc`): ``fresh`` swaps in an
    empty server and answers its base URL, ``stats`` answers request counts, ``reset`` clears
    the request log.
    """

    def __init__(self, *, bulk: bool, latency: float, token: str) -> None:
        self.token = token
        cmd = [sys.executable, "-m", "bench.standin_proc", "--latency", str(latency), "--token", token]
        if not bulk:
            cmd.append("--no-bulk")
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(), cwd=REPO_ROOT
        )
        self._lock = threading.Lock()
        self.base_url = self._ask("fresh")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _ask(self, command: str, timeout: float = 60.0) -> str:
        with self._lock:
            assert self._proc.stdin is not None
            assert self._proc.stdout is not None
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
            out: list[str] = []
            reader = threading.Thread(target=lambda: out.append(self._proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
            reader.start()
            reader.join(timeout)
            if not out or not out[0]:
                raise RuntimeError(f"stand-in did not answer {command!r} within {timeout:g}s")
            return out[0].strip()

    def fresh(self) -> str:
        self.base_url = self._ask("fresh")
        return self.base_url

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._ask("stats"))
        return result

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        stop_process(self._proc)
