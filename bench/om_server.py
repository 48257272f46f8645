"""A per-item-PUT OpenMetadata server that throttles or slows down on purpose.

Every real OpenMetadata server is a per-item-PUT server: it has no
``PUT /v1/services/mlmodelServices/bulk`` route and answers it ``500 "An exception with message
[HTTP 405 Method Not Allowed] was thrown while processing request."``. This server keeps ML
model services in memory (echoing each PUT body back as the stored entity, so an unchanged second
cycle plans nothing) and adds the load behaviours the adaptive write limit is measured against:

- ``latency``: seconds added to every answer;
- ``capacity`` with ``over="throttle"``: at most ``capacity`` requests served at once, any other
  answered at once ``429`` with ``Retry-After`` (as a gateway's concurrency limit does);
- ``capacity`` with ``over="slow"``: a request arriving while more than ``capacity`` are in
  flight (itself included) takes ``slow_factor`` x ``latency``.

It is deliberately light (asyncio streams, a few lines of HTTP/1.1 with keep-alive) so that its
own CPU does not set the pace. No import from ``tests/``: the benchmark stands on its own.

Run in a thread (:class:`OmServer`, for tests) or as a child process driven by a line protocol
(:class:`OmServerProcess`: ``python -m bench.om_server [options]`` reads ``fresh``, ``stats``,
``reset`` on stdin and answers one line each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

__all__ = ["ROUTING_500", "Behaviour", "OmServer", "OmServerProcess"]

SERVICES_PATH = "/v1/services/mlmodelServices"
ROUTING_500 = "An exception with message [HTTP 405 Method Not Allowed] was thrown while processing request."
_REASONS = {200: "OK", 201: "Created", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS |= {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Behaviour:
    """How the server answers under load; see the module docstring."""

    latency: float = 0.0
    capacity: int | None = None
    over: Literal["throttle", "slow"] = "throttle"
    retry_after: int = 1
    slow_factor: float = 2.0
    bulk_status: int = 500  # the real server's answer to PUT .../bulk (405 for a plain 405)


@dataclass
class Stats:
    """What the server saw since the last reset."""

    requests: int = 0
    list: int = 0
    put: int = 0
    bulk: int = 0
    other: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    throttled: int = 0
    slowed: int = 0
    max_in_flight: int = 0
    busy_seconds: float = 0.0  # integral of in-flight writes over time
    first: float | None = None
    last: float | None = None

    @property
    def writes(self) -> int:
        return self.put + self.bulk

    def to_dict(self) -> dict[str, Any]:
        span = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
        return {
            **asdict(self),
            "writes": self.writes,
            "mean_in_flight": self.busy_seconds / span if span > 0 else 0.0,
        }


class _State:
    def __init__(self, behaviour: Behaviour, token: str | None) -> None:
        self.behaviour = behaviour
        self.token = token
        self.services: dict[str, dict[str, Any]] = {}
        self.by_id: dict[str, str] = {}
        self.named: dict[str, dict[str, Any]] = {}  # classifications and tags, by kind/name
        self.stats = Stats()
        self.in_flight = 0
        self._since = time.monotonic()

    def _account(self, delta: int) -> None:
        now = time.monotonic()
        self.stats.busy_seconds += self.in_flight * (now - self._since)
        self._since = now
        self.in_flight += delta
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.in_flight)
        if self.stats.first is None:
            self.stats.first = now
        self.stats.last = now

    async def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        b = self.behaviour
        self.stats.requests += 1
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return 401, {}, {"code": 401, "message": "Not Authorized! Token not present or invalid"}
        if b.capacity is not None and b.over == "throttle" and self.in_flight >= b.capacity:
            self.stats.throttled += 1
            return 429, {"Retry-After": str(b.retry_after)}, {"code": 429, "message": "Too many requests"}
        self._account(+1)
        try:
            delay = b.latency
            if b.capacity is not None and b.over == "slow" and self.in_flight > b.capacity:
                self.stats.slowed += 1
                delay *= b.slow_factor
            if delay > 0:
                await asyncio.sleep(delay)
            return self._route(method, target, body)
        finally:
            self._account(-1)

    def _route(self, method: str, target: str, raw: bytes) -> tuple[int, dict[str, str], Any]:
        url = urlsplit(target)
        path = url.path.removeprefix("/api")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if method == "GET" and path == SERVICES_PATH:
            self.stats.list += 1
            return 200, {}, self._list(query)
        if method == "PUT" and path == SERVICES_PATH:
            self.stats.put += 1
            return self._put(json.loads(raw))
        if method == "PUT" and path == SERVICES_PATH + "/bulk":
            self.stats.bulk += 1
            return self.behaviour.bulk_status, {}, {"code": self.behaviour.bulk_status, "message": ROUTING_500}
        self.stats.other += 1
        if method == "GET" and path == "/v1/system/version":
            return 200, {}, {"version": "1.9.4", "revision": "bench", "timestamp": 0}
        if method == "PUT" and path == SERVICES_PATH + "/restore":
            name = self.by_id.get(str(json.loads(raw).get("id")))
            if name is None:
                return 404, {}, {"code": 404, "message": "mlModelService instance not found"}
            self.services[name]["deleted"] = False
            return 200, {}, self.services[name]
        if method == "DELETE" and path.startswith(SERVICES_PATH + "/"):
            name = self.by_id.get(path.rsplit("/", 1)[1])
            if name is None:
                return 404, {}, {"code": 404, "message": "mlModelService instance not found"}
            self.services[name]["deleted"] = True
            return 200, {}, self.services[name]
        for kind in ("/v1/classifications", "/v1/tags"):
            if method == "PUT" and path == kind:
                item = json.loads(raw)
                key = (
                    item.get("name")
                    if kind == "/v1/classifications"
                    else f"{item.get('classification')}.{item.get('name')}"
                )
                stored = self.named.setdefault(
                    f"{kind}/{key}", {**item, "id": str(uuid.uuid4()), "fullyQualifiedName": key}
                )
                return 200, {}, stored
            if method == "GET" and path.startswith(kind + "/name/"):
                found = self.named.get(f"{kind}/{path.removeprefix(kind + '/name/')}")
                if found is None:
                    return 404, {}, {"code": 404, "message": f"{kind} instance not found"}
                return 200, {}, found
        return 404, {}, {"code": 404, "message": f"HTTP 404 Not Found: {method} {path}"}

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        include = query.get("include", "non-deleted")
        items = [
            s for s in self.services.values() if include == "all" or (include == "deleted") == bool(s.get("deleted"))
        ]
        start = int(query.get("after") or 0)
        limit = int(query.get("limit") or 10)
        page = items[start : start + limit]
        paging: dict[str, Any] = {"total": len(items)}
        if start + limit < len(items):
            paging["after"] = str(start + limit)
        return {"data": page, "paging": paging}

    def _put(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        name = str(body["name"])
        current = self.services.get(name)
        if current is None:
            entity = {
                **body,
                "id": str(uuid.uuid4()),
                "fullyQualifiedName": f'"{name}"' if "." in name else name,
                "deleted": False,
                "version": 0.1,
            }
            self.services[name] = entity
            self.by_id[entity["id"]] = name
            return 201, {"X-OpenMetadata-Change": "entityCreated"}, entity
        changed = any(current.get(k) != v for k, v in body.items())
        current.update(body)
        if changed:
            current["version"] = round(current["version"] + 0.1, 1)
        return 200, {"X-OpenMetadata-Change": "entityUpdated" if changed else "entityNoChange"}, current


class OmServer:
    """The server on 127.0.0.1 in a thread of its own with its own event loop (for tests)."""

    def __init__(self, behaviour: Behaviour | None = None, *, token: str | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self._token = token
        self.state = _State(self.behaviour, token)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> OmServer:
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def open_server() -> None:
                self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=512)
                self.port = self._server.sockets[0].getsockname()[1]

            loop.run_until_complete(open_server())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="om-bench-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the benchmark OpenMetadata server did not start within 10 s")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> OmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._call(self.state.stats.to_dict)
        return stats

    def reset(self) -> None:
        def do() -> None:
            self.state.stats = Stats()

        self._call(do)

    def clear(self) -> None:
        """Forget every service (a fresh, empty server) and the counts."""

        def do() -> None:
            self.state.services.clear()
            self.state.by_id.clear()
            self.state.named.clear()
            self.state.stats = Stats()

        self._call(do)

    def _call(self, fn: Any) -> Any:
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                try:
                    status, extra, payload = await self.state.handle(method, target, headers, body)
                except (ValueError, KeyError, TypeError) as exc:
                    status, extra, payload = 400, {}, {"code": 400, "message": f"bad request: {exc}"}
                self.state.stats.statuses[str(status)] = self.state.stats.statuses.get(str(status), 0) + 1
                data = json.dumps(payload).encode()
                out = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
                out += [f"{k}: {v}" for k, v in extra.items()]
                out += ["Content-Type: application/json", f"Content-Length: {len(data)}", "", ""]
                writer.write("\r\n".join(out).encode("latin-1") + data)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # stop() cancels idle keep-alive connections; ending quietly keeps asyncio's stream
            # callback from logging a traceback for each one.
            pass
        finally:
            writer.close()


class OmServerProcess:
    """The server in a child process (so its CPU is not the measured process's), one per scenario."""

    def __init__(self, behaviour: Behaviour, *, token: str) -> None:
        b = behaviour
        cmd = [sys.executable, "-m", "bench.om_server", "--token", token, "--latency", str(b.latency)]
        cmd += ["--over", b.over, "--retry-after", str(b.retry_after), "--slow-factor", str(b.slow_factor)]
        cmd += ["--bulk-status", str(b.bulk_status)]
        if b.capacity is not None:
            cmd += ["--capacity", str(b.capacity)]
        root = Path(__file__).resolve().parents[1]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root)
        self.base_url = self._ask("url")

    def _ask(self, command: str) -> str:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        if not answer:
            raise RuntimeError(f"bench.om_server exited (code {self._proc.poll()}) on {command!r}")
        return answer

    def fresh(self) -> str:
        """Empty the server (no services, counts zero); answer its base URL."""
        return self._ask("fresh")

    def reset(self) -> None:
        self._ask("reset")

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(self._ask("stats")))

    def stop(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token", required=True, help="bearer token the server accepts")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--capacity", type=int, default=None, help="requests served at once before --over applies")
    parser.add_argument(
        "--over", choices=("throttle", "slow"), default="throttle", help="429 or slower beyond capacity"
    )
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After of a 429, seconds")
    parser.add_argument("--slow-factor", type=float, default=2.0, help="latency multiplier beyond capacity (slow)")
    parser.add_argument("--bulk-status", type=int, default=500, help="answer to PUT .../bulk (500 as upstream, or 405)")
    args = parser.parse_args(argv)
    behaviour = Behaviour(
        latency=args.latency,
        capacity=args.capacity,
        over=args.over,
        retry_after=args.retry_after,
        slow_factor=args.slow_factor,
        bulk_status=args.bulk_status,
    )
    server = OmServer(behaviour, token=args.token).start()
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "url":
                answer = server.base_url
            elif command == "fresh":
                server.clear()
                answer = server.base_url
            elif command == "reset":
                server.reset()
                answer = "ok"
            elif command == "stats":
                answer = json.dumps({**server.stats(), "services": len(server.state.services), "server_cpu": _cpu()})
            else:
                answer = json.dumps({"error": f"unknown command {command!r}"})
            sys.stdout.write(answer + "\n")
            sys.stdout.flush()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
