"""Proposed changes to the agent, applied by monkeypatching so the benchmark can measure them.

Nothing here is used unless asked for (``python -m bench.run --what-if NAME``); the table
then shows what the change would buy. Each patch is the smallest version of a change proposed
in ``bench/README.md``; the real change belongs in ``src/``.

- ``mlflow-client-per-target``: each MLflow probe gets its own small ``httpx.AsyncClient``
  (at most 3 connections, one shared SSL context) instead of one client for the whole fleet.
  httpcore's pool scans every connection it holds for every request it assigns, so one pool
  of up to ``3 x max_concurrency`` connections costs O(connections x requests): at 1,000 URIs
  that CPU alone exceeds the probe timeout and every probe fails together.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from http.cookiejar import DefaultCookiePolicy
from typing import Any

__all__ = ["PATCHES", "apply"]


def _mlflow_client_per_target() -> None:
    import httpx

    from mlsvc_discover.sources import mlflow as m

    contexts: dict[str | None, ssl.SSLContext] = {}

    def context(cfg: Any) -> ssl.SSLContext | bool:
        if not cfg.verify_tls:
            return False
        key = str(cfg.ca_bundle) if cfg.ca_bundle else None
        if key not in contexts:
            contexts[key] = ssl.create_default_context(cafile=key)
        return contexts[key]

    async def guarded(self: Any, gate: Any, client: Any, target: Any) -> Any:
        async with gate:
            cfg = self.config
            own = httpx.AsyncClient(
                verify=context(cfg),
                timeout=httpx.Timeout(cfg.timeout),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=3, max_keepalive_connections=3),
                headers={"User-Agent": "mlsvc-discover", "Accept-Encoding": "identity"},
            )
            own.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            try:
                return await self._probe(own, target)
            except m.HttpProbeError as exc:
                return exc
            except Exception as exc:
                return m.HttpProbeError(f"unexpected error: {type(exc).__name__}", kind="error")
            finally:
                await own.aclose()

    m.MlflowDiscoverer._guarded = guarded  # type: ignore[method-assign]


PATCHES: dict[str, Callable[[], None]] = {
    "mlflow-client-per-target": _mlflow_client_per_target,
}


def apply(names: list[str]) -> None:
    for name in names:
        PATCHES[name]()
