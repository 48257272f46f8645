"""MLflow parts any discoverer can use: URI normalisation, credentials, and the prober.

- :mod:`mlsvc_discover.mlflow_probe.uri`: :func:`parse_tracking_uri` -> :class:`ParsedUri`,
  :func:`normalise_tracking_uri`, :func:`clean_registry_uri`, :func:`registry_uri_secrets`.
- :mod:`mlsvc_discover.mlflow_probe.auth`: :class:`MlflowAuth` (token or basic auth config),
  :func:`basic_authorization`.
- :mod:`mlsvc_discover.mlflow_probe.prober`: :class:`MlflowProber`, :class:`ProbeSettings`,
  :class:`ProbeTarget`, :class:`ProbeResult`; ``await MlflowProber(settings).probe(target)``
  returns a ProbeResult or raises :class:`HttpProbeError` (a ``ProbeError`` with ``kind`` and
  ``reason``).

The probe speaks MLflow's REST API over httpx; nothing here imports the ``mlflow`` package.
"""

from __future__ import annotations

from mlsvc_discover._http import HttpProbeError
from mlsvc_discover.mlflow_probe.auth import MlflowAuth, basic_authorization
from mlsvc_discover.mlflow_probe.prober import MlflowProber, ProbeResult, ProbeSettings, ProbeTarget
from mlsvc_discover.mlflow_probe.uri import (
    ParsedUri,
    clean_registry_uri,
    normalise_tracking_uri,
    parse_tracking_uri,
    registry_uri_secrets,
)

__all__ = [
    "HttpProbeError",
    "MlflowAuth",
    "MlflowProber",
    "ParsedUri",
    "ProbeResult",
    "ProbeSettings",
    "ProbeTarget",
    "basic_authorization",
    "clean_registry_uri",
    "normalise_tracking_uri",
    "parse_tracking_uri",
    "registry_uri_secrets",
]
