"""The stand-in itself: lifecycle, tokens, the request log, routing, one HTTP exchange
(latency and faults applied) and the HTTP plumbing (resets, trickled answers).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from testing.openmetadata._common import (
    API_PREFIX,
    NO_ROUTE_MESSAGE,
    PIPELINES_PATH,
    SERVICES_PATH,
    VERSION_PATH,
    Entity,
    Principal,
    RecordedRequest,
    _ApiError,
    _Call,
    _error_body,
    _now_ms,
    _reason,
    _Reply,
)
from testing.openmetadata.faults import FaultRule, FaultsMixin
from testing.openmetadata.pipelines import PipelineRoutes
from testing.openmetadata.schemas import _bulk_validator, _create_validator, _entity_validator
from testing.openmetadata.services import ServicesMixin


class OpenMetadataStandIn(ServicesMixin, FaultsMixin):
    """The fake OpenMetadata server. ``start()`` it (or use it as a context manager)."""

    def __init__(
        self,
        *,
        bulk_enabled: bool = False,
        no_bulk_status: int = 500,
        tokens: Mapping[str, Principal] | None = None,
        latency: float = 0.0,
        validate_responses: bool = True,
        max_bulk_items: int | None = None,
        unknown_fields: tuple[str, ...] = (),
        strict_type_check: bool = True,
        server_version: str = "2.0.7",
        version_requires_auth: bool = False,
        seed: int = 0,
    ) -> None:
        if no_bulk_status not in (404, 405, 500):
            raise ValueError("no_bulk_status must be 404, 405 or 500")
        self.bulk_enabled = bulk_enabled
        # Field names this server does not know (400 "Invalid field name X"), as an older release.
        self.unknown_fields = frozenset(unknown_fields)
        self.no_bulk_status = no_bulk_status
        # Classifications (name -> entity), tags (FQN -> entity), domains, users and teams that exist.
        self.classifications: dict[str, Entity] = {}
        self.tags: dict[str, Entity] = {}
        self.domains: set[str] = set()
        self.users: set[str] = set()
        self.teams: set[str] = set()
        self.tokens: dict[str, Principal] = dict(tokens or {})
        self.latency = latency
        self.validate_responses = validate_responses
        self.max_bulk_items = max_bulk_items
        self.strict_type_check = strict_type_check
        self.server_version = server_version
        self.version_requires_auth = version_requires_auth
        self.requests: list[RecordedRequest] = []
        self.internal_errors: list[str] = []
        self.random = random.Random(seed)
        self._faults: list[FaultRule] = []
        self._lock = threading.RLock()
        self._store: dict[str, Entity] = {}
        self._ids: dict[str, str] = {}
        self._model_counts: dict[str, int] = {}
        self._async_jobs: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Bodies that already passed response validation: the benchmark re-reads the same
        # entities many times and validation is the costliest part of an answer.
        self._validated: set[str] = set()
        self._validated_lock = threading.Lock()
        # Ingestion pipeline routes live in their own module (hooks: _dispatch and _delete).

        self.pipelines = PipelineRoutes(self)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> OpenMetadataStandIn:
        if self._server is not None:
            raise RuntimeError("stand-in already started")
        # Load the schemas now so the first request is not the one paying for it.
        _create_validator()
        _entity_validator()
        _bulk_validator()
        self._stopping.clear()
        self._server = _Server((host, port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="om-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping on latency or delay faults
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.wait_async(timeout=5)

    def __enter__(self) -> OpenMetadataStandIn:
        return self.start() if self._server is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/api``: what the client is configured with."""
        return f"{self.url}{API_PREFIX}"

    def add_token(self, token: str, principal: Principal) -> None:
        self.tokens[token] = principal

    def revoke(self, token: str) -> None:
        """Forget a token: its next request answers 401, as an expired JWT would."""
        self.tokens.pop(token, None)

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def count(self, method: str | None = None, path: str | None = None, status: int | None = None) -> int:
        """How many recorded requests match (``path`` is a regex searched in the URL path)."""
        return len(self.find(method=method, path=path, status=status))

    def find(
        self, method: str | None = None, path: str | None = None, status: int | None = None
    ) -> list[RecordedRequest]:
        with self._lock:
            recorded = list(self.requests)
        pattern = re.compile(path) if path is not None else None
        return [
            r
            for r in recorded
            if (method is None or r.method == method.upper())
            and (pattern is None or pattern.search(r.path))
            and (status is None or r.status == status)
        ]

    def writes(self) -> list[RecordedRequest]:
        """Every PUT, POST and DELETE sent to the ML model service routes, whatever its answer."""
        return [
            r
            for r in self.find()
            if r.method in ("PUT", "POST", "DELETE")
            and (r.path == SERVICES_PATH or r.path.startswith(SERVICES_PATH + "/"))
        ]

    def bodies_containing(self, text: str) -> list[RecordedRequest]:
        """Recorded requests whose raw body contains ``text`` (e.g. a secret that must not leak)."""
        needle = text.encode("utf-8")
        return [r for r in self.find() if needle in r.raw]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _dispatch(self, call: _Call) -> _Reply:
        path = call.path
        if path == VERSION_PATH:
            if call.method != "GET":
                raise _ApiError(405, "HTTP 405 Method Not Allowed")
            if self.version_requires_auth:
                self._require_principal(call)
            return _Reply(200, {"version": self.server_version, "revision": "standin0000000", "timestamp": _now_ms()})
        if not path.startswith("/api/v1/"):
            raise _ApiError(404, "HTTP 404 Not Found")
        principal = self._require_principal(call)
        if path == PIPELINES_PATH or path.startswith(PIPELINES_PATH + "/"):
            return self.pipelines.dispatch(call, principal)
        if path == SERVICES_PATH:
            if call.method == "GET":
                return self._list(call, principal)
            if call.method in ("PUT", "POST"):
                return self._create(call, principal)
            raise _ApiError(405, "HTTP 405 Method Not Allowed")
        if not path.startswith(SERVICES_PATH + "/"):
            return self._other_entities(call, principal)
        rest = path[len(SERVICES_PATH) + 1 :]
        if rest == "bulk" and call.method == "PUT":
            if self.bulk_enabled:
                return self._bulk(call, principal)
            if self.no_bulk_status == 500:
                raise _ApiError(500, NO_ROUTE_MESSAGE)
            if self.no_bulk_status == 404:
                raise _ApiError(404, "HTTP 404 Not Found")
        if rest == "restore" and call.method == "PUT":
            return self._restore(call, principal)
        if rest.startswith("name/") and "/" not in rest[5:]:
            fqn = unquote(rest[5:])
            if call.method == "GET":
                return self._get(call, principal, self._by_fqn(fqn), fqn)
            if call.method == "DELETE":
                return self._delete(call, principal, self._by_fqn(fqn), fqn)
            raise _ApiError(405, "HTTP 405 Method Not Allowed")
        if "/" in rest:
            raise _ApiError(404, "HTTP 404 Not Found")
        # ``/{id}``: JAX-RS answers 404 when the segment is not a UUID, 405 for a missing method
        # first (which is what ``PUT /bulk`` meets on a server without the bulk route).
        if call.method not in ("GET", "DELETE"):
            raise _ApiError(405, "HTTP 405 Method Not Allowed")
        try:
            entity_id = str(uuid.UUID(rest))
        except ValueError as exc:
            raise _ApiError(404, "HTTP 404 Not Found") from exc
        with self._lock:
            name = self._ids.get(entity_id)
        if call.method == "GET":
            return self._get(call, principal, name, entity_id)
        return self._delete(call, principal, name, entity_id)

    def _handle_http(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        """Turn one request into a reply (or a reset) and record it."""
        arrived = time.time()
        split = urlsplit(target)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        body: Any = None
        body_ok = True
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body_ok = False
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        principal = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        reply = self._answer(method, path, query, body, body_ok, principal)
        shown = dict(headers)
        if "authorization" in shown:
            shown["authorization"] = f"{scheme} ***"
        self._record(
            RecordedRequest(
                method=method,
                path=path,
                query=query,
                headers=shown,
                body=body,
                raw=raw,
                status=0 if reply.reset else reply.status,
                principal=principal.name if principal is not None else None,
                at=arrived,
            )
        )
        return reply

    def _answer(
        self, method: str, path: str, query: dict[str, str], body: Any, body_ok: bool, principal: Principal | None
    ) -> _Reply:
        self._wait(self.latency)
        rule = self._pick_fault(method, path, body)
        if rule is not None:
            self._wait(rule.delay)
            instead = rule.reply_instead(query, body)
            if instead is not None:
                return instead
        call = _Call(method, path, query, body, body_ok, principal, rule)
        try:
            reply = self._dispatch(call)
        except _ApiError as exc:
            return _Reply(exc.status, _error_body(exc.status, exc.message), exc.headers)
        except Exception as exc:  # anything else is a stand-in bug: 500, and fail the test later
            self.internal_errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            return _Reply(500, _error_body(500, f"stand-in internal error: {type(exc).__name__}"))
        if rule is not None and rule.reset_after_items is not None:
            return _Reply(0, reset=True)  # applied, then the answer is lost
        if rule is not None and rule.trickle is not None:
            reply.trickle = rule.trickle
        return reply


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], handler: Callable[..., Any], standin: OpenMetadataStandIn) -> None:
        self.standin = standin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End idle keep-alive connections, whose handler threads would otherwise linger."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-answer (timeouts, resets we caused) are expected, not news.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "OpenMetadataStandIn/1.0"
    timeout = 60  # idle keep-alive connections end after this
    # Headers and body go out in two writes: with Nagle on, the client's delayed ACK adds 40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed HTTP gets the JSON error shape too, not http.server's HTML page."""
        payload = json.dumps(_error_body(code, message or _reason(code))).encode()
        with contextlib.suppress(OSError):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(payload)
        self.close_connection = True

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            return None
        if size < 0:
            return None
        return self.rfile.read(size)

    def _serve(self) -> None:
        try:
            raw = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        if raw is None:
            self.send_error(400, "Bad Content-Length")
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.standin._handle_http(self.command, self.path, headers, raw)
        if reply.reset:
            self._reset()
            return
        payload = b"" if reply.empty else json.dumps(reply.body, separators=(",", ":")).encode("utf-8")
        try:
            self.send_response(reply.status)
            if not reply.empty:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if reply.trickle is None:
                self.wfile.write(payload)
            else:
                self.wfile.flush()
                for i in range(len(payload)):
                    if self.server.standin._stopping.wait(1.0 / reply.trickle):
                        break
                    self.wfile.write(payload[i : i + 1])
                    self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _reset(self) -> None:
        """Drop the connection abruptly: SO_LINGER 0 makes close() send RST, not FIN."""
        self.close_connection = True
        conn = self.connection
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # detach() + os.close closes the descriptor now: socket.close() would wait for the
            # handler's file objects, and the server's shutdown(SHUT_WR) would send a FIN first.
            os.close(conn.detach())

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()

    do_GET = _serve
    do_PUT = _serve
    do_POST = _serve
    do_DELETE = _serve
    do_PATCH = _serve
    do_OPTIONS = _serve
