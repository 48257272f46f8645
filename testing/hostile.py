"""Small hostile loopback servers: remotes that never let a request end on their own.

- ``trickle``: answers every request with a valid-looking HTTP/1.1 200 whose bytes (status
  line, headers and a long body) arrive one per ``interval`` seconds. Every read succeeds
  within any per-read timeout, so only a total deadline ends the request.
- ``trickle_body``: the same, but the status line and headers arrive at once, then the body
  one byte per ``interval``.
- ``never``: accepts the connection, reads the request and never answers.

Both work as ``openmetadata.host`` (``url + "/api"``) and as the ``endpoint_url`` of the
sagemaker discoverer (botocore sends its STS and SageMaker calls there; the trickled body is
XML-ish, the never-answered one is nothing). ``requests`` counts requests received, so a test
can wait until the agent is held. Connections are served by daemon threads and dropped on
:meth:`HostileServer.close`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Literal

__all__ = ["HostileServer", "Mode"]

Mode = Literal["trickle", "trickle_body", "never"]

_BODY_BYTES = 1_000_000


class HostileServer:
    """A loopback server misbehaving as ``mode`` says, until :meth:`close`."""

    def __init__(self, mode: Mode, *, interval: float = 1.0, content_type: str = "application/json") -> None:
        self.mode = mode
        self.interval = interval
        self.content_type = content_type
        self.requests = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name=f"hostile-{mode}", daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def wait_for_request(self, timeout: float = 30.0) -> bool:
        """Whether a request arrived within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.requests:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._sock.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    # --- serving -----------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), name="hostile-conn", daemon=True).start()

    def _read_request(self, conn: socket.socket) -> bool:
        conn.settimeout(30)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
            if len(data) > 1_000_000:
                return False
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or 0)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        with self._lock:
            self.requests += 1
        return True

    def _serve(self, conn: socket.socket) -> None:
        try:
            if not self._read_request(conn):
                return
            if self.mode == "never":
                self._closed.wait()
                return
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: {self.content_type}\r\nContent-Length: {_BODY_BYTES}\r\n\r\n"
            ).encode()
            answer = head + b" " * _BODY_BYTES
            if self.mode == "trickle_body":
                conn.sendall(head)
                answer = answer[len(head) :]
            for i in range(len(answer)):
                if self._closed.wait(self.interval if i else 0):
                    return
                conn.sendall(answer[i : i + 1])
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()
