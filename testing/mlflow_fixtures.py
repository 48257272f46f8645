"""Real MLflow servers and hostile little HTTP servers on loopback, for the mlflow discoverer.

The two ``mlflow server`` processes are session-scoped and started together (each needs about
10 s of CPU to import, so starting them side by side halves the wait). The fakes are stdlib
HTTP servers in threads whose behaviour is a plain callable, cheap enough to start per test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

__all__ = [
    "FakeServer",
    "MlflowServer",
    "TlsMaterial",
    "drip",
    "huge_body",
    "mlflow_like",
    "redirect",
    "reply",
    "status",
]

READY_TIMEOUT = 90.0
PROBE_PATH = "/api/2.0/mlflow/experiments/search?max_results=1"
MLFLOW_BIN = Path(sys.executable).parent / "mlflow"


# --- real MLflow servers ---------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on right now (the OS picked it; racy only against other binders)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree_rss(pid: int) -> int:
    """Resident memory in bytes of ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        cur = todo.pop()
        todo.extend(children.get(cur, []))
        try:
            for line in Path(f"/proc/{cur}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@dataclass
class MlflowServer:
    """A running ``mlflow server``; ``url`` has no trailing slash."""

    url: str
    process: subprocess.Popen[bytes] = field(repr=False)
    workdir: Path
    started: float
    ready_seconds: float = 0.0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username and self.password else None

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            text = (self.workdir / "server.log").read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def rss_bytes(self) -> int:
        return process_tree_rss(self.process.pid)

    def stop(self) -> None:
        stop_all([self])


def stop_all(servers: list[MlflowServer]) -> None:
    """SIGTERM every server's process group (uvicorn runs as a child), then SIGKILL what lingers.

    All are signalled before any is waited for: each takes seconds to shut down.
    """
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        running = [s for s in servers if s.process.poll() is None]
        for server in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, sig)
        deadline = time.monotonic() + grace
        for server in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(timeout=max(0.0, deadline - time.monotonic()))


def mlflow_server_command(port: int, workdir: Path, mlflow: Path = MLFLOW_BIN) -> list[str]:
    """``mlflow server`` as the tests, the benchmark and the demo run it: one worker, sqlite in ``workdir``.

    One worker and no job runner (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false in its environment)
    keep a server at ~500 MB and ready in ~10 s instead of 2.3 GB and ~30 s
    (shared/notes/test-components.md).
    """
    return [
        str(mlflow),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination",
        str(workdir / "artifacts"),
    ]


def _start_mlflow(workdir: Path, *, basic_auth: bool) -> MlflowServer:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    args = mlflow_server_command(port, workdir)
    username = password = None
    if basic_auth:
        username, password = "admin", secrets.token_urlsafe(18)  # 24 characters; MLflow wants 12+
        ini = workdir / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{workdir / 'basic_auth.db'}\n"
            f"admin_username = {username}\n"
            f"admin_password = {password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)
        args += ["--app-name", "basic-auth"]
    log = (workdir / "server.log").open("wb")
    try:
        # Its own session, so stop() can signal uvicorn's worker too; cwd so stray files land here.
        proc = subprocess.Popen(
            args, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        log.close()
    return MlflowServer(
        url=f"http://127.0.0.1:{port}",
        process=proc,
        workdir=workdir,
        started=time.monotonic(),
        username=username,
        password=password,
    )


def _wait_ready(server: MlflowServer, deadline: float) -> None:
    """Wait for the REST API (``/health`` answers before the database is ready)."""
    with httpx.Client(timeout=2.0, auth=server.auth) as client:
        while True:
            if server.process.poll() is not None:
                pytest.fail(f"mlflow server exited with {server.process.returncode}:\n{server.stderr_tail()}")
            try:
                if client.get(server.url + PROBE_PATH).status_code == 200:
                    server.ready_seconds = time.monotonic() - server.started
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                pytest.fail(f"mlflow server not ready after {READY_TIMEOUT:.0f}s:\n{server.stderr_tail()}")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def _mlflow_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MlflowServer, MlflowServer]]:
    root = tmp_path_factory.mktemp("mlflow")
    plain = _start_mlflow(root / "plain", basic_auth=False)
    try:
        secured = _start_mlflow(root / "auth", basic_auth=True)
    except BaseException:
        plain.stop()
        raise
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        _wait_ready(plain, deadline)
        _wait_ready(secured, deadline)
        # A non-empty registry, so "registry available" is checked against real content.
        created = httpx.post(
            plain.url + "/api/2.0/mlflow/registered-models/create", json={"name": "fixture-model"}, timeout=10
        )
        assert created.status_code == 200, created.text
        yield plain, secured
    finally:
        stop_all([plain, secured])


@pytest.fixture(scope="session")
def mlflow_server(_mlflow_servers: tuple[MlflowServer, MlflowServer]) -> MlflowServer:
    """A real MLflow tracking server without auth, with one registered model."""
    return _mlflow_servers[0]


@pytest.fixture(scope="session")
def mlflow_auth_server(_mlflow_servers: tuple[MlflowServer, MlflowServer]) -> MlflowServer:
    """A real MLflow server running the basic-auth app; ``.username`` / ``.password`` are the admin's."""
    return _mlflow_servers[1]


# --- dead ends -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def refused_url() -> str:
    """A loopback URL whose port nothing listens on: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def blackhole_url() -> Iterator[str]:
    """A loopback URL that accepts connections and never answers a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # kept open, unread: the peer waits for an answer that never comes

    thread = threading.Thread(target=accept, name="blackhole", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for conn in held:
            conn.close()


# --- fake servers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One request a fake server received."""

    method: str
    path: str
    headers: dict[str, str]


Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass(frozen=True)
class TlsMaterial:
    """A private CA and a server certificate it signed, for 127.0.0.1 and localhost."""

    ca_path: Path
    cert_path: Path
    key_path: Path


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None, host: str) -> None:
        self.behaviour = handler
        self.tls = tls
        self.recorded: list[Recorded] = []
        self.stopping = threading.Event()
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, 0), _RequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-body and failed TLS handshakes are what these servers are for.
        pass


class _RequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, and a body without Content-Length ends at close.
    protocol_version = "HTTP/1.0"
    server: _Server

    def setup(self) -> None:
        if self.server.tls is not None:
            # Handshake in this worker thread, so a stalled client never blocks accept().
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def finish(self) -> None:
        super().finish()
        if self.server.tls is not None:
            # The server closes the plain socket it accepted, which wrapping detached.
            self.request.close()

    def do_GET(self) -> None:
        self.server.recorded.append(Recorded(self.command, self.path, dict(self.headers.items())))
        # The client hanging up mid-answer is the point of several behaviours, not an error.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.server.behaviour(self)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeServer:
    """A loopback HTTP(S) server whose answer to every request is ``handler(request_handler)``."""

    def __init__(self, handler: Handler, tls: TlsMaterial | None = None, host: str = "127.0.0.1") -> None:
        ctx = None
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls.cert_path, tls.key_path)
        self._server = _Server(handler, ctx, host)
        self.port = int(self._server.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if tls else 'http'}://{shown}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def requests(self) -> list[Recorded]:
        return list(self._server.recorded)

    @property
    def stopping(self) -> threading.Event:
        return self._server.stopping

    def close(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def fake_mlflow() -> Iterator[Callable[..., FakeServer]]:
    """Factory ``fake_mlflow(handler, tls=None, host="127.0.0.1") -> FakeServer``; all closed after the test."""
    servers: list[FakeServer] = []

    def make(handler: Handler, tls: TlsMaterial | None = None, host: str = "127.0.0.1") -> FakeServer:
        server = FakeServer(handler, tls, host)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


# Behaviours: each returns a handler for fake_mlflow.


def reply(req: BaseHTTPRequestHandler, code: int, body: bytes = b"", content_type: str = "application/json") -> None:
    """Send one complete response."""
    req.send_response(code)
    if content_type:
        req.send_header("Content-Type", content_type)
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)


def status(code: int, body: bytes = b"", content_type: str = "application/json") -> Handler:
    """Always the same answer (a 500, an HTML login page, invalid JSON, ...)."""
    return lambda req: reply(req, code, body, content_type)


def mlflow_like(*, registry: bool = True, version: str = "9.9.9") -> Handler:
    """Answers the endpoints the probe uses as mlflow 3.17.2 does; 404 (HTML) elsewhere."""

    def handle(req: BaseHTTPRequestHandler) -> None:
        path = req.path.split("?", 1)[0].rstrip("/")
        if path.endswith("/api/2.0/mlflow/experiments/search"):
            reply(req, 200, json.dumps({"experiments": [{"experiment_id": "0", "name": "Default"}]}).encode())
        elif path.endswith("/api/2.0/mlflow/experiments/get-by-name"):
            # mlflow 3.17.2's answer for an experiment that does not exist.
            missing = {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Could not find experiment"}
            reply(req, 404, json.dumps(missing).encode())
        elif path.endswith("/api/2.0/mlflow/registered-models/search") and registry:
            reply(req, 200, b"{}")
        elif path.endswith("/api/2.0/mlflow/registered-models/get") and registry:
            missing = {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model not found"}
            reply(req, 404, json.dumps(missing).encode())
        elif path.endswith("/version"):
            reply(req, 200, version.encode(), "text/plain")
        else:
            reply(req, 404, b"<html>Not Found</html>", "text/html")

    return handle


def huge_body(total: int, *, declare_length: bool) -> Handler:
    """``total`` bytes of a JSON-looking body, streamed in 64 KiB writes; records bytes sent."""

    def handle(req: BaseHTTPRequestHandler) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        if declare_length:
            req.send_header("Content-Length", str(total))
        req.end_headers()
        chunk = b"[" + b"0," * 32767 + b"0"
        sent = 0
        handle.sent = 0  # type: ignore[attr-defined]
        stopping: threading.Event = req.server.stopping  # type: ignore[attr-defined]
        while sent < total and not stopping.is_set():
            piece = chunk[: total - sent]
            req.wfile.write(piece)
            sent += len(piece)
            handle.sent = sent  # type: ignore[attr-defined]

    handle.sent = 0  # type: ignore[attr-defined]
    return handle


def redirect(location: Callable[[str], str], code: int = 302) -> Handler:
    """Redirect every request to ``location(request_path)``."""

    def handle(req: BaseHTTPRequestHandler) -> None:
        req.send_response(code)
        req.send_header("Location", location(req.path))
        req.send_header("Content-Length", "0")
        req.end_headers()

    return handle


def drip(interval: float = 1.0) -> Handler:
    """A 200 whose JSON body arrives one byte per ``interval``: each read succeeds, the whole never ends."""

    def handle(req: BaseHTTPRequestHandler) -> None:
        body = b'{"experiments": []}' + b" " * 10_000
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        stopping: threading.Event = req.server.stopping  # type: ignore[attr-defined]
        for byte in body:
            req.wfile.write(bytes([byte]))
            if stopping.wait(interval):
                return

    return handle


# --- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlsvc-discover test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    material = TlsMaterial(out / "ca.pem", out / "server.pem", out / "server.key")
    material.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    material.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    material.key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return material
