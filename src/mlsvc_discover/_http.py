"""HTTP helpers shared by probes: URI redaction, bounded reads, error translation.

Used by the MLflow prober (:mod:`mlsvc_discover.mlflow_probe`) and open to any HTTP-based discoverer.

Probes talk to hosts the operator listed but does not control, so every helper here assumes a
hostile or broken peer: bodies are read up to a limit and no further, redirects are judged by
origin before anything is sent again, and every foreign exception becomes a
:class:`HttpProbeError` whose reason is short, stable enough for dashboards, and free of
credentials.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Iterator

import httpx

from mlsvc_discover._errors import ProbeError

__all__ = [
    "HttpProbeError",
    "Origin",
    "clean_text",
    "format_origin_host",
    "format_seconds",
    "misplaced_userinfo",
    "origin_of",
    "read_bounded",
    "redact_uri",
    "strip_userinfo",
    "translate_transport_error",
]


class HttpProbeError(ProbeError):
    """A probe failed; ``kind`` is a short category for metrics, ``reason`` is for humans."""

    def __init__(self, reason: str, *, kind: str) -> None:
        self.kind = kind
        super().__init__(reason)


Origin = tuple[str, str, int]
"""``(scheme, host, port)`` with the default port filled in: what credentials are scoped to."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _split_authority(uri: str) -> tuple[str, str, str]:
    """``(prefix up to the authority, authority, rest)`` by plain string slicing.

    Works on strings that are not valid URIs at all, because redaction runs on exactly
    those when it formats a validation error.
    """
    scheme_end = uri.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    end = len(uri)
    for sep in "/?#":
        pos = uri.find(sep, start)
        if pos != -1:
            end = min(end, pos)
    return uri[:start], uri[start:end], uri[end:]


def redact_uri(uri: str) -> str:
    """``uri`` with the password of its userinfo replaced by ``***`` and any query hidden.

    Never raises: it is used to quote URIs that failed validation. The user name is kept
    (it helps to find the config entry); the query goes because tokens travel there too.
    """
    prefix, authority, rest = _split_authority(uri)
    body = authority + rest
    last = body.rfind("@")
    if last != -1 and ":" in body[:last]:
        # Everything from the first ':' to the last '@' may be password: one holding an
        # unencoded '@', '/', '?' or '#' ends the RFC authority early, and its real end is the
        # last '@'. This can also hide the port and path of a URI with '@' in its path, which
        # costs nothing here: the result is only ever shown, never used.
        head, rest = f"{body[:last].partition(':')[0]}:***", body[last:]
    else:
        head = authority
    query = rest.find("?")
    if query != -1:
        fragment = rest.find("#", query)
        rest = rest[:query] + "?***" + (rest[fragment:] if fragment != -1 else "")
    return prefix + head + rest


def misplaced_userinfo(uri: str) -> bool:
    """Whether ``uri`` looks like ``user:password@host`` with a password that breaks the URI.

    True when an ``@`` follows the authority and a ``:`` comes before it, as in
    ``http://user:pa/ss@host``: parsed by the RFC, the host is ``user`` and the rest of the
    password is the path, so the password would be probed as a path and published with it.
    """
    prefix, authority, rest = _split_authority(uri)
    last = rest.rfind("@")
    return "://" in prefix and last != -1 and ":" in authority + rest[:last]


def strip_userinfo(uri: str) -> str:
    """``uri`` without ``user:password@``, for URIs of any scheme (database registry URIs too)."""
    prefix, authority, rest = _split_authority(uri)
    if "://" not in prefix:
        # Without "//" there is no authority to strip (e.g. "databricks-uc").
        return uri
    return prefix + authority.rpartition("@")[2] + rest


def origin_of(url: httpx.URL) -> Origin:
    """The origin of ``url``; hosts compare case-insensitively, default ports are explicit."""
    scheme = url.scheme.lower()
    return scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(scheme, 0)


def format_origin_host(origin: Origin) -> str:
    """``host:port`` for messages, with IPv6 hosts bracketed so the port stays readable."""
    _, host, port = origin
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_seconds(seconds: float) -> str:
    """``2`` -> ``"2.0s"``, ``0.25`` -> ``"0.25s"``: as the operator wrote it, always with a unit."""
    return f"{seconds:.1f}s" if float(seconds).is_integer() else f"{seconds:g}s"


async def read_bounded(response: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
    """Read at most ``limit`` bytes of ``response``'s body.

    Past the limit it raises ``too_large`` (or, with ``truncate``, returns what it has) and
    stops reading, so a peer streaming gigabytes costs one chunk of memory, not the body.
    A declared Content-Length over the limit fails before a single body byte is read.
    """
    declared = response.headers.get("content-length", "")
    if not truncate and declared.isdigit() and int(declared) > limit:
        raise HttpProbeError(f"response larger than {limit} bytes", kind="too_large")
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        buf += chunk
        if len(buf) > limit:
            if truncate:
                return bytes(buf[:limit])
            raise HttpProbeError(f"response larger than {limit} bytes", kind="too_large")
    return bytes(buf)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it was raised from, depth first, each once.

    httpx wraps the socket or ssl error that explains a failure one or more levels down,
    and anyio may group several attempts in an ExceptionGroup.
    """
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        if isinstance(cur, BaseExceptionGroup):
            stack.extend(cur.exceptions)
        for nxt in (cur.__cause__, cur.__context__):
            if nxt is not None:
                stack.append(nxt)


_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def clean_text(text: str, limit: int = 120) -> str:
    """Peer- or library-supplied text made safe for a one-line reason: printable and short."""
    text = _PRINTABLE.sub("?", text.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def translate_transport_error(exc: httpx.HTTPError, timeout: float) -> HttpProbeError:  # noqa: PLR0911 - a table
    """One httpx failure as a short reason; the URL is never formatted in (it may be anyone's)."""
    if isinstance(exc, httpx.TimeoutException):
        return HttpProbeError(f"timed out after {format_seconds(timeout)}", kind="timeout")
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = cause.verify_message or cause.reason or "unknown reason"
            return HttpProbeError(f"TLS certificate verify failed: {clean_text(str(detail))}", kind="tls")
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLError):
            detail = cause.reason or cause.strerror or type(cause).__name__
            return HttpProbeError(f"TLS error: {clean_text(str(detail))}", kind="tls")
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return HttpProbeError("connection refused", kind="unreachable")
        if isinstance(cause, socket.gaierror):
            return HttpProbeError("host name does not resolve", kind="unreachable")
    if isinstance(exc, httpx.RemoteProtocolError):
        text = str(exc)
        if "disconnected" in text.lower():
            return HttpProbeError("server closed the connection without answering", kind="unreachable")
        # The parser's message quotes the peer's bytes: not for a reason that ends up in reports.
        return HttpProbeError("not an MLflow tracking server: invalid HTTP response", kind="not_mlflow")
    if isinstance(exc, httpx.ConnectError):
        # "All connection attempts failed" and friends: the cause chain said nothing better.
        return HttpProbeError(f"connection failed: {clean_text(str(exc) or type(exc).__name__)}", kind="unreachable")
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return HttpProbeError("connection lost during the request", kind="unreachable")
    return HttpProbeError(f"HTTP error: {type(exc).__name__}", kind="unreachable")
