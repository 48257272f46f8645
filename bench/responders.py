"""Cheap stand-ins for many servers: MLflow responders, black holes, refused ports, a first-request clock.

A real ``mlflow server`` costs about 520 MB and 10 s to start, so a fleet of 1,000 cannot be
real. What the probe sees of a server is three GET answers, and one asyncio loop can give those
on hundreds of ports for a few MB. The fleet runs in its own process so that its CPU never
competes with the agent's event loop inside the measured process; only the 2 cores are shared,
as they would be by any server on the same machine.

Run as a process (what :class:`ResponderFleet` does)::

    python -m bench.responders --mlflow 896 --blackholes 50

It prints one JSON line ``{"mlflow": [ports], "blackholes": [ports]}`` once every port
listens, and serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "FirstRequestClock",
    "ResponderFleet",
    "raise_nofile_limit",
    "refused_ports",
]

MLFLOW_VERSION = b"3.17.2"
_MISSING = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Could not find 'x'"}).encode()
_EXPERIMENTS = json.dumps(
    {"experiments": [{"experiment_id": "0", "name": "Default", "lifecycle_stage": "active"}]}
).encode()


def raise_nofile_limit() -> int:
    """Lift the soft descriptor limit to the hard one: a fleet holds ~3 sockets per server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def _answer(path: str) -> tuple[int, bytes, bytes]:
    """(status, content type, body) for one path, as mlflow 3.17.2 answers it."""
    route = path.split("?", 1)[0].rstrip("/")
    if route == "/api/2.0/mlflow/experiments/search":
        return 200, b"application/json", _EXPERIMENTS
    if route in ("/api/2.0/mlflow/experiments/get-by-name", "/api/2.0/mlflow/registered-models/get"):
        return 404, b"application/json", _MISSING
    if route == "/api/2.0/mlflow/registered-models/search":
        return 200, b"application/json", b"{}"  # mlflow answers {} when the registry is empty
    if route == "/version":
        return 200, b"text/plain; charset=utf-8", MLFLOW_VERSION
    if route == "/health":
        return 200, b"text/plain; charset=utf-8", b"OK"
    return 404, b"text/html; charset=utf-8", b"<h1>Not Found</h1>"


async def _serve_mlflow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer GETs on one keep-alive connection until the client hangs up."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            path = parts[1] if len(parts) >= 2 else "/"
            lowered = head.lower()
            marker = lowered.find(b"content-length:")
            if marker != -1:
                # The probe only sends GETs; a body, if any, is read and ignored to keep framing.
                end = lowered.find(b"\r\n", marker)
                length = int(lowered[marker + 15 : end].strip() or b"0")
                if length:
                    await reader.readexactly(length)
            status, ctype, body = _answer(path)
            reason = b"OK" if status == 200 else b"NOT FOUND"
            writer.write(
                b"HTTP/1.1 %d %s\r\nServer: bench-mlflow\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (status, reason, ctype, len(body), body)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    except asyncio.CancelledError:
        # Shutdown cancels open keep-alive connections; ending quietly keeps the log readable.
        pass
    finally:
        writer.close()


async def _black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read whatever comes, never answer: the silent host a probe must time out on."""
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def _fleet_main(n_mlflow: int, n_black: int) -> None:
    servers: list[asyncio.Server] = []
    ports: dict[str, list[int]] = {"mlflow": [], "blackholes": []}
    for kind, count, handler in (("mlflow", n_mlflow, _serve_mlflow), ("blackholes", n_black, _black_hole)):
        for _ in range(count):
            server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=64)
            servers.append(server)
            ports[kind].append(server.sockets[0].getsockname()[1])
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    # Serve until the parent closes our stdin (or dies, which closes it too).
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve many fake MLflow servers and black holes on 127.0.0.1.")
    parser.add_argument("--mlflow", type=int, default=0, help="number of MLflow responders")
    parser.add_argument("--blackholes", type=int, default=0, help="number of accept-and-never-answer listeners")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    asyncio.run(_fleet_main(args.mlflow, args.blackholes))
    return 0


# --- parent-side helpers ----------------------------------------------------------------------


@dataclass
class ResponderFleet:
    """The responder process seen from the benchmark: start it, read its ports, stop it."""

    n_mlflow: int
    n_blackholes: int = 0
    mlflow_ports: list[int] = field(default_factory=list)
    blackhole_ports: list[int] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> ResponderFleet:
        cmd = [sys.executable, "-m", "bench.responders", "--mlflow", str(self.n_mlflow)]
        cmd += ["--blackholes", str(self.n_blackholes)]
        # From the repository root, so ``-m bench.responders`` resolves whatever the caller's cwd.
        repo = Path(__file__).resolve().parents[1]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=repo)
        line = _readline_with_timeout(self._proc, timeout)
        ports = json.loads(line)
        self.mlflow_ports, self.blackhole_ports = ports["mlflow"], ports["blackholes"]
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)

    def __enter__(self) -> ResponderFleet:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _readline_with_timeout(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of the child's stdout, or a RuntimeError when it dies or stays silent."""
    out: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: out.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    reader.start()
    reader.join(timeout)
    if not out or not out[0]:
        stop_process(proc)
        raise RuntimeError(f"{proc.args!r} did not report ready within {timeout:g}s")
    return out[0]


def stop_process(proc: subprocess.Popen[str] | subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Close stdin (our children's shutdown signal), then terminate, then kill; always reap."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


def refused_ports(count: int) -> tuple[list[socket.socket], list[int]]:
    """Ports that refuse connections, reserved for as long as the sockets stay open.

    A bound socket that never listens keeps its port from being reused by anyone else, and the
    kernel answers a SYN to it with RST: the probe sees ``connection refused`` every time.
    """
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    return socks, ports


class FirstRequestClock:
    """An MLflow responder in a thread that notes when the first request arrives.

    ``first_monotonic`` is ``time.monotonic()`` at the moment the first request line was read;
    CLOCK_MONOTONIC is system-wide on Linux, so it compares with a value taken in another
    process. Answers like an MLflow server so the agent's run ends normally.
    """

    def __init__(self) -> None:
        self.first_monotonic: float | None = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="first-request-clock", daemon=True)

    def start(self) -> FirstRequestClock:
        self._thread.start()
        return self

    def reset(self) -> None:
        self.first_monotonic = None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        buf = b""
        with conn:
            try:
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    if self.first_monotonic is None:
                        self.first_monotonic = time.monotonic()
                    buf += chunk
                    while b"\r\n\r\n" in buf:
                        head, buf = buf.split(b"\r\n\r\n", 1)
                        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                        status, ctype, body = _answer(parts[1] if len(parts) >= 2 else "/")
                        conn.sendall(
                            b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                            % (status, ctype, len(body), body)
                        )
            except OSError:
                return


if __name__ == "__main__":
    raise SystemExit(main())
