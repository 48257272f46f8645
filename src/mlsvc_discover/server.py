"""The health and metrics endpoint of the long-running agent: ``/healthz``, ``/readyz``, ``/metrics``.

A stdlib threaded HTTP server in a daemon thread: the asyncio loop that runs the cycles never
serves a request, so a probe still answers while a cycle is busy, and a wedged loop cannot
take the probe down with it (liveness then only says the process exists, which is what a
restart would fix anyway).

Readiness, precisely: ``/readyz`` answers 200 when a cycle *succeeded* (OpenMetadata was
reachable, accepted the agent, and the plan was applied to the end; per-item failures do not
count against it) and finished no longer ago than ``ready_intervals`` schedule intervals plus
the jitter. Otherwise 503 with a one-line reason. Before the first success it is 503 too: the
agent has not yet shown that it can reach OpenMetadata. The reason says ``starting`` while
the first cycle, and one interval after it, are still within reach (the start-up allowance:
the first retry of a failed first cycle comes one interval later), and ``not ready`` after.

Liveness, precisely: ``/healthz`` answers 200 unless a cycle has been in flight for longer
than ``cycle_timeout`` plus ``server.liveness_margin``. A cycle ends itself at its deadline, so
one still running after the margin means the agent is wedged (its event loop blocked); the
answer is then 503 with a one-line reason, so that an orchestrator restarts it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

if TYPE_CHECKING:
    from mlsvc_discover.status import StatusBoard

__all__ = ["HealthServer", "Liveness", "Readiness", "parse_address"]

log = logging.getLogger(__name__)

_MAX_REASON = 300


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


class Readiness:
    """What ``/readyz`` answers, updated by the daemon after each cycle; thread-safe.

    ``interval`` is the (longest) time between two scheduled cycles in seconds; the clock is
    monotonic so that a wall-clock jump never flips readiness.
    """

    def __init__(
        self,
        interval: float,
        ready_intervals: int,
        *,
        jitter: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.ready_intervals = ready_intervals
        self.jitter = jitter
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._first_cycle_took: float | None = None
        self._last_success: float | None = None
        self._last_failure: str | None = None

    @property
    def window(self) -> float:
        """How old the last success may be while the agent stays ready."""
        return self.ready_intervals * self.interval + self.jitter

    def record(self, *, success: bool, duration: float, reason: str | None = None) -> None:
        """Note a finished cycle; ``reason`` (redacted by the caller) explains a failure."""
        with self._lock:
            if self._first_cycle_took is None:
                self._first_cycle_took = duration
            if success:
                self._last_success = self._clock()
                self._last_failure = None
            else:
                self._last_failure = _one_line(reason or "the cycle failed")

    def check(self) -> tuple[bool, str]:
        """``(ready, one-line reason)``."""
        with self._lock:
            now = self._clock()
            if self._last_success is None:
                first = self._first_cycle_took
                allowance = self.interval + self.jitter + (first if first is not None else 0.0)
                since = now - self._started
                if first is None:
                    return False, f"starting: the first cycle is still running ({since:.0f}s since start)"
                why = f"; last cycle failed: {self._last_failure}" if self._last_failure else ""
                state = "starting" if since <= allowance else "not ready"
                return False, f"{state}: no cycle has succeeded yet ({since:.0f}s since start){why}"
            age = now - self._last_success
            if age <= self.window:
                return True, f"ok: last successful cycle finished {age:.0f}s ago"
            why = f"; last cycle failed: {self._last_failure}" if self._last_failure else ""
            return False, (
                f"not ready: last successful cycle finished {age:.0f}s ago, more than "
                f"{self.ready_intervals} x {self.interval:g}s intervals{why}"
            )


class Liveness:
    """Cycles in flight and how long the oldest has run; what ``/healthz`` answers. Thread-safe."""

    def __init__(self, limit: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: dict[int, float] = {}
        self._next = 0

    def begin(self) -> int:
        """Note a cycle starting; pass the token to :meth:`end`."""
        with self._lock:
            self._next += 1
            self._inflight[self._next] = self._clock()
            return self._next

    def end(self, token: int) -> None:
        with self._lock:
            self._inflight.pop(token, None)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def oldest_age(self) -> float:
        """Seconds the oldest cycle in flight has run; 0 when none is."""
        with self._lock:
            return self._clock() - min(self._inflight.values()) if self._inflight else 0.0

    def check(self) -> tuple[bool, str]:
        """``(alive, one-line reason)``."""
        age = self.oldest_age()
        if age > self.limit:
            return False, (
                f"wedged: a cycle has been running for {age:.0f}s, more than its deadline plus margin "
                f"({self.limit:g}s); restart the agent"
            )
        return True, "ok"


def parse_address(address: str) -> tuple[str, int]:
    """``"0.0.0.0:8080"`` -> ``("0.0.0.0", 8080)``; ``"[::]:8080"`` -> ``("::", 8080)``."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A restarted agent must be able to bind its port again at once.
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        readiness: Readiness,
        registry: CollectorRegistry,
        status: StatusBoard | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.readiness = readiness
        self.liveness = liveness
        self.registry = registry
        self.status = status
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "mlsvc-discover"
    sys_version = ""
    # A probe that connects and never sends must not hold a thread for ever.
    timeout: ClassVar[float] = 10.0

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            alive, reason = self.server.liveness.check() if self.server.liveness is not None else (True, "ok")
            self._answer(200 if alive else 503, (reason + "\n").encode())
        elif path == "/readyz":
            ready, reason = self.server.readiness.check()
            self._answer(200 if ready else 503, (reason + "\n").encode())
        elif path == "/metrics":
            self._answer(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path in ("/status", "/status.json") and self.server.status is not None:
            self._status(path)
        else:
            extra = ", /status" if self.server.status is not None else ""
            self._answer(404, f"not found: try /healthz, /readyz, /metrics{extra}\n".encode())

    # --- the status page (mlsvc_discover.status) -------------------------------------------

    def _status(self, path: str) -> None:
        import json

        from mlsvc_discover.status import render_html, script_hash

        board = self.server.status
        assert board is not None
        query = self.path.split("?", 1)[1] if "?" in self.path else ""
        q = (parse_qs(query).get("q") or [""])[0][:200]
        if path == "/status.json":
            body = json.dumps(board.data(q), indent=1).encode()
            self._answer(200, body, "application/json")
            return
        page = render_html(board.data(), query=q).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.send_header("Cache-Control", "no-store")
        # No external asset, no other script than the page's own filter.
        self.send_header(
            "Content-Security-Policy",
            f"default-src 'none'; style-src 'unsafe-inline'; script-src '{script_hash()}'; form-action 'self'",
        )
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(page)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        # Probes hit every few seconds; one line each at INFO would drown the cycle logs.
        log.debug("%s - %s", self.address_string(), format % args)


class HealthServer:
    """Serves the probes and metrics from a daemon thread until :meth:`close`."""

    def __init__(
        self,
        address: str,
        readiness: Readiness,
        registry: CollectorRegistry,
        status: StatusBoard | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        self.address = address
        self.readiness = readiness
        self.registry = registry
        self.status = status
        self.liveness = liveness
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind and start serving; returns the bound port (useful when the address says port 0).

        Raises OSError when the address cannot be bound (in use, not permitted).
        """
        self._server = _Server(parse_address(self.address), self.readiness, self.registry, self.status, self.liveness)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="mlsvc-health", daemon=True
        )
        self._thread.start()
        port = int(self._server.server_address[1])
        log.info("serving /healthz, /readyz and /metrics on %s (port %d)", self.address, port)
        return port

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
