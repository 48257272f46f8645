"""The Kubernetes API as the ``kubernetes`` discoverer uses it: lists with a deadline, one Secret.

Built on lightkube's :class:`~lightkube.AsyncClient` (async, follows ``continue`` tokens for
``limit``-ed lists, reads kubeconfig files and in-cluster service accounts). Every call here
has a total deadline over all of its pages and requests, on top of the HTTP client's own
per-request timeouts, so a server that trickles answers costs at most that deadline.

lightkube is imported here and only here; the discoverer imports this module when it first
runs, so configs without a ``kubernetes`` discoverer never load it.

Every foreign error becomes a :class:`KubernetesApiError` whose ``reason`` is one line, names
what could not be read, and carries the API server's own Status message when there is one
(it says which permission is missing). Tokens and Secret values are never part of a reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import httpx2
from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig
from lightkube.config.kubeconfig import SingleConfig
from lightkube.resources.core_v1 import Secret, Service
from lightkube.resources.networking_v1 import Ingress

from mlsvc_discover._errors import ProbeError
from mlsvc_discover._http import clean_text, format_seconds

__all__ = ["KubeApi", "KubernetesApiError", "load_config"]

Kind = Literal["services", "ingresses"]
_RESOURCES: dict[str, Any] = {"services": Service, "ingresses": Ingress}


class KubernetesApiError(ProbeError):
    """A Kubernetes API call failed; ``kind`` is a short category for metrics."""

    def __init__(self, reason: str, *, kind: str, status: int | None = None) -> None:
        self.kind = kind
        self.status = status
        super().__init__(reason)


def load_config(*, in_cluster: bool, kubeconfig: Path | None, context: str | None) -> SingleConfig:
    """The connection settings of one cluster; KubernetesApiError saying what is wrong.

    Reads files (the kubeconfig, or the service account's token and CA), so call it in a thread.
    """
    try:
        if in_cluster:
            return KubeConfig.from_service_account().get()  # type: ignore[return-value]
        assert kubeconfig is not None  # the config model guarantees one of the two
        config = KubeConfig.from_file(kubeconfig)
        single = config.get(context_name=context)
    except ConfigError as exc:
        raise KubernetesApiError(
            f"cannot load {_where(in_cluster, kubeconfig)}: {clean_text(str(exc))}", kind="config"
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        raise KubernetesApiError(
            f"cannot load {_where(in_cluster, kubeconfig)}: {clean_text(str(detail))}", kind="config"
        ) from exc
    if single is None:
        raise KubernetesApiError(f"kubeconfig {kubeconfig} has no context {context!r}", kind="config")
    return single


def _where(in_cluster: bool, kubeconfig: Path | None) -> str:
    if in_cluster:
        return "the in-cluster service account (is the agent running in a pod with its token mounted?)"
    return f"kubeconfig {kubeconfig}"


class KubeApi:
    """One cluster's API client; ``timeout`` is the total deadline of each call."""

    def __init__(self, config: SingleConfig, *, timeout: float, page_size: int) -> None:
        self._timeout = timeout
        self._page_size = page_size
        # trust_env=False: proxies and KUBECONFIG from the environment must not redirect the
        # calls of a cluster the config describes explicitly.
        self._client = AsyncClient(config, timeout=httpx2.Timeout(timeout), trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def list(
        self, kind: Kind, namespace: str | None, labels: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every object of ``kind`` (all pages) in ``namespace`` (None: all namespaces)."""
        what = f"{kind} in namespace {namespace}" if namespace else f"{kind} in all namespaces"
        res = _RESOURCES[kind]

        async def collect() -> list[dict[str, Any]]:
            items = self._client.list(
                res, namespace=namespace or "*", chunk_size=self._page_size, labels=dict(labels) if labels else None
            )
            return [obj.to_dict() async for obj in items]

        items: list[dict[str, Any]] = await self._call(collect(), what)
        return items

    async def secret(self, namespace: str, name: str) -> dict[str, str]:
        """The decoded ``data`` (and ``stringData``) of one Secret."""
        what = f"secret {namespace}/{name}"

        async def get() -> dict[str, str]:
            obj = await self._client.get(Secret, name, namespace=namespace)
            out: dict[str, str] = {}
            for key, value in (obj.data or {}).items():
                try:
                    out[key] = base64.b64decode(value, validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    raise KubernetesApiError(
                        f"{what}: key {key!r} is not base64-encoded UTF-8 text", kind="invalid_secret"
                    ) from None
            out.update(obj.stringData or {})
            return out

        data: dict[str, str] = await self._call(get(), what)
        return data

    async def _call(self, work: Any, what: str) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await work
        except TimeoutError:
            raise KubernetesApiError(
                f"cannot read {what}: no answer within {format_seconds(self._timeout)}", kind="timeout"
            ) from None
        except ApiError as exc:
            raise _api_error(exc, what) from exc
        except ConfigError as exc:
            # lightkube re-reads a rotated service-account token per request; it may be gone.
            raise KubernetesApiError(f"cannot read {what}: {clean_text(str(exc))}", kind="config") from exc
        except httpx2.HTTPError as exc:
            raise _transport_error(exc, what, self._timeout) from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A body that is not the object it claims to be (a proxy's page, a truncated list).
            raise KubernetesApiError(
                f"cannot read {what}: unexpected answer ({type(exc).__name__})", kind="invalid_answer"
            ) from exc


def _api_error(exc: ApiError, what: str) -> KubernetesApiError:
    status = getattr(exc, "status", None)
    code = int(getattr(status, "code", 0) or getattr(getattr(exc, "response", None), "status_code", 0) or 0)
    message = clean_text(str(getattr(status, "message", "") or ""), 240)
    kinds = {401: "unauthorized", 403: "forbidden", 404: "not_found", 410: "expired", 429: "throttled"}
    kind = kinds.get(code, "server_error" if code >= 500 else "api_error")
    detail = f": {message}" if message else ""
    if code == 401:
        detail = ": the API server refused the credentials (token expired or wrong?)"
    return KubernetesApiError(f"cannot read {what}: HTTP {code}{detail}", kind=kind, status=code)


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        cur = todo.pop()
        if any(cur is s for s in seen):
            continue
        seen.append(cur)
        todo += [c for c in (cur.__cause__, cur.__context__) if c is not None]
        if isinstance(cur, BaseExceptionGroup):
            todo += list(cur.exceptions)
    return seen


def _transport_error(exc: httpx2.HTTPError, what: str, timeout: float) -> KubernetesApiError:
    if isinstance(exc, httpx2.TimeoutException):
        return KubernetesApiError(f"cannot read {what}: timed out after {format_seconds(timeout)}", kind="timeout")
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = clean_text(str(cause.verify_message or cause.reason or "unknown reason"))
            return KubernetesApiError(f"cannot read {what}: TLS certificate verify failed: {detail}", kind="tls")
        if isinstance(cause, ssl.SSLError):
            return KubernetesApiError(f"cannot read {what}: TLS error: {clean_text(str(cause.reason))}", kind="tls")
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return KubernetesApiError(f"cannot read {what}: connection refused", kind="unreachable")
        if isinstance(cause, socket.gaierror):
            return KubernetesApiError(f"cannot read {what}: API server host does not resolve", kind="unreachable")
    return KubernetesApiError(f"cannot read {what}: {type(exc).__name__}", kind="unreachable")
