"""A total deadline for each attempt of each AWS call.

botocore's ``connect_timeout`` and ``read_timeout`` bound each connect and each socket read,
not a whole call: an endpoint that answers one byte per second keeps a call going forever.
:class:`DeadlineSender` is a botocore ``before-send`` handler that sends the signed request
itself, with urllib3, and bounds connecting, sending, the status line, the headers and the
whole body together: a watchdog timer shuts the connection's socket down at the deadline, so a
read blocked on a trickling or silent peer returns at once (at the latest one ``read_timeout``
after the deadline, when the deadline passes while the socket is still being opened), and the
attempt fails with :class:`AwsCallDeadlineExceeded`. That error is a botocore
``ReadTimeoutError``, so botocore's retry policy treats it like any timeout: the next attempt
gets a deadline of its own.

Public seam: :class:`DeadlineSender` (``AwsClients`` registers one on every client it builds)
and :class:`AwsCallDeadlineExceeded`. Blocking; imports botocore and urllib3, so import this
module lazily (from a worker thread).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import urllib3
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.httpsession import ProxyConfiguration, get_cert_path, mask_proxy_url
from botocore.utils import get_environ_proxies
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError as Urllib3ConnectTimeoutError,
)
from urllib3.exceptions import (
    NewConnectionError,
    ProtocolError,
    ProxyError,
)
from urllib3.exceptions import (
    ReadTimeoutError as Urllib3ReadTimeoutError,
)
from urllib3.exceptions import (
    SSLError as Urllib3SSLError,
)

__all__ = ["AwsCallDeadlineExceeded", "DeadlineSender"]

log = logging.getLogger(__name__)

_local = threading.local()


class AwsCallDeadlineExceeded(ReadTimeoutError):
    """One attempt of an AWS call did not complete (connect, send, whole answer) within its deadline."""

    fmt = 'No complete answer from "{endpoint_url}" within the {deadline:g}s deadline of one attempt'


class _Watch:
    """The connection one attempt uses, and whether its deadline has passed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: HTTPConnection | None = None
        self.expired = False

    def attach(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._conn = conn

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            conn = self._conn
        if conn is not None:
            _shut(conn)

    def check(self, conn: HTTPConnection) -> None:
        """Called between steps: a deadline that passed while no socket existed ends the attempt now."""
        if self.expired:
            _shut(conn)
            raise _Expired


class _Expired(Exception):
    """Internal: the watchdog fired."""


def _shut(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        # shutdown, not close: a recv blocked in another thread returns at once.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _watched(base: type[HTTPConnection]) -> type[HTTPConnection]:
    class Watched(base):  # type: ignore[valid-type,misc]
        def request(self, *args: Any, **kwargs: Any) -> None:
            watch: _Watch | None = getattr(_local, "watch", None)
            if watch is not None:
                watch.attach(self)
                watch.check(self)
            super().request(*args, **kwargs)
            if watch is not None:
                watch.check(self)

        def getresponse(self) -> Any:
            watch: _Watch | None = getattr(_local, "watch", None)
            if watch is not None:
                watch.check(self)
            return super().getresponse()

    Watched.__name__ = f"Watched{base.__name__}"
    return Watched


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _watched(HTTPConnection)


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _watched(HTTPSConnection)  # type: ignore[assignment]


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _Body:
    """What AWSResponse reads ``content`` from: the body already read in full."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


class DeadlineSender:
    """botocore ``before-send`` handler: send one attempt with a total deadline.

    Register it with ``client.meta.events.register("before-send", sender)``. Proxies come
    from the environment as botocore's own would (``HTTPS_PROXY``, ``NO_PROXY``...); TLS
    verification uses ``ca_bundle`` or botocore's default bundle.
    """

    def __init__(
        self, *, connect_timeout: float, read_timeout: float, deadline: float, max_pool_connections: int = 10
    ) -> None:
        self.deadline = deadline
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._maxsize = max_pool_connections
        self._lock = threading.Lock()
        self._managers: dict[tuple[str | None, str], urllib3.PoolManager] = {}

    def _manager(self, proxy_url: str | None, ca_bundle: str) -> urllib3.PoolManager:
        with self._lock:
            key = (proxy_url, ca_bundle)
            manager = self._managers.get(key)
            if manager is None:
                options: dict[str, Any] = {
                    "timeout": self._timeout,
                    "maxsize": self._maxsize,
                    "cert_reqs": "CERT_REQUIRED",
                    "ca_certs": ca_bundle,
                }
                if proxy_url is not None:
                    headers = ProxyConfiguration().proxy_headers_for(proxy_url)
                    manager = urllib3.ProxyManager(proxy_url, proxy_headers=headers, **options)
                else:
                    manager = urllib3.PoolManager(**options)
                manager.pool_classes_by_scheme = _POOLS
                self._managers[key] = manager
            return manager

    def __call__(self, request: AWSPreparedRequest, ca_bundle: str | None = None, **_: Any) -> AWSResponse | None:
        """The handler; bind ``ca_bundle`` (the session's, e.g. ``AWS_CA_BUNDLE``) with functools.partial."""
        if request.stream_output:
            return None  # streaming bodies are read by the caller; none of our calls streams
        return self.send(request, ca_bundle)

    def send(self, request: AWSPreparedRequest, ca_bundle: str | None = None) -> AWSResponse:
        """Send one attempt and read the whole answer; raises botocore's errors."""
        url = request.url
        proxy_url = get_environ_proxies(url).get(url.split(":", 1)[0].lower())
        if proxy_url is not None and not proxy_url.startswith(("http:", "https:")):
            proxy_url = "http://" + proxy_url.lstrip("/")
        manager = self._manager(proxy_url, ca_bundle or cast("str", get_cert_path(True)))
        watch = _Watch()
        timer = threading.Timer(self.deadline, watch.expire)
        timer.daemon = True
        _local.watch = watch
        started = time.monotonic()
        timer.start()
        response: urllib3.BaseHTTPResponse | None = None
        try:
            chunked = str(request.headers.get("Transfer-Encoding", "")).lower() == "chunked"
            response = manager.urlopen(
                request.method,
                url,
                body=request.body,
                headers=dict(request.headers.items()),
                retries=False,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                chunked=chunked,
                enforce_content_length=False,
            )
            body = response.read()
            if watch.expired:
                raise _Expired
            # The stubs want http.client headers; botocore itself passes urllib3's, as here.
            return AWSResponse(url, response.status, response.headers, _Body(body))  # type: ignore[arg-type]
        except Exception as exc:
            if watch.expired or isinstance(exc, _Expired):
                log.debug("AWS call to %s passed its %gs deadline", url, self.deadline)
                raise AwsCallDeadlineExceeded(endpoint_url=url, deadline=self.deadline) from None
            raise _botocore_error(exc, url, proxy_url) from exc
        finally:
            timer.cancel()
            _local.watch = None
            if response is not None:
                if watch.expired:
                    response.close()
                response.release_conn()
            log.debug("AWS call to %s took %.3fs", url, time.monotonic() - started)


def _botocore_error(exc: Exception, url: str, proxy_url: str | None) -> Exception:  # noqa: PLR0911 - a table
    """The botocore error its own sender raises for this urllib3 error, so retries and messages stay the same."""
    if isinstance(exc, Urllib3SSLError):
        return SSLError(endpoint_url=url, error=exc)
    if isinstance(exc, NewConnectionError | socket.gaierror):
        return EndpointConnectionError(endpoint_url=url, error=exc)
    if isinstance(exc, ProxyError):
        return ProxyConnectionError(proxy_url=mask_proxy_url(proxy_url or ""), error=exc)
    if isinstance(exc, Urllib3ConnectTimeoutError):
        return ConnectTimeoutError(endpoint_url=url, error=exc)
    if isinstance(exc, Urllib3ReadTimeoutError):
        return ReadTimeoutError(endpoint_url=url, error=exc)
    if isinstance(exc, ProtocolError):
        return ConnectionClosedError(error=exc, endpoint_url=url)
    return HTTPClientError(error=exc)
