"""mlsvc-discover: keep OpenMetadata's ML model services in step with MLflow and SageMaker.

The public API is small and re-exported here; everything else is private and may change.
Heavy modules (botocore, the agent) are imported lazily so that ``import mlsvc_discover``
and the CLI start fast.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    # The version lives in pyproject.toml only; the installed metadata carries it here.
    __version__ = version("mlsvc-discover")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

from mlsvc_discover._errors import (
    ConfigError,
    DiscoveryError,
    MappingError,
    MlsvcDiscoverError,
    NameCollisionError,
    OpenMetadataAuthError,
    OpenMetadataError,
    OpenMetadataRequestError,
    OpenMetadataUnavailable,
    ProbeError,
)

if TYPE_CHECKING:
    from mlsvc_discover.agent import Agent
    from mlsvc_discover.config import AgentConfig, load_config
    from mlsvc_discover.discoverers.base import (
        Discoverer,
        DiscovererConfig,
        DiscoveryResult,
        Finding,
        ItemFailure,
        ScopeOutcome,
        ServiceMetadata,
    )
    from mlsvc_discover.mapper import DesiredService, map_findings
    from mlsvc_discover.openmetadata.models import ServiceType
    from mlsvc_discover.plan import Change, Plan, compute_plan
    from mlsvc_discover.report import Report

__all__ = [
    "Agent",
    "AgentConfig",
    "Change",
    "ConfigError",
    "DesiredService",
    "Discoverer",
    "DiscovererConfig",
    "DiscoveryError",
    "DiscoveryResult",
    "Finding",
    "ItemFailure",
    "MappingError",
    "MlsvcDiscoverError",
    "NameCollisionError",
    "OpenMetadataAuthError",
    "OpenMetadataError",
    "OpenMetadataRequestError",
    "OpenMetadataUnavailable",
    "Plan",
    "ProbeError",
    "Report",
    "ScopeOutcome",
    "ServiceMetadata",
    "ServiceType",
    "__version__",
    "compute_plan",
    "load_config",
    "map_findings",
]

_LAZY = {
    "AgentConfig": "mlsvc_discover.config",
    "load_config": "mlsvc_discover.config",
    "Agent": "mlsvc_discover.agent",
    "DesiredService": "mlsvc_discover.mapper",
    "map_findings": "mlsvc_discover.mapper",
    "Change": "mlsvc_discover.plan",
    "Plan": "mlsvc_discover.plan",
    "compute_plan": "mlsvc_discover.plan",
    "Report": "mlsvc_discover.report",
    "Discoverer": "mlsvc_discover.discoverers.base",
    "DiscovererConfig": "mlsvc_discover.discoverers.base",
    "DiscoveryResult": "mlsvc_discover.discoverers.base",
    "Finding": "mlsvc_discover.discoverers.base",
    "ItemFailure": "mlsvc_discover.discoverers.base",
    "ServiceType": "mlsvc_discover.openmetadata.models",
    "ScopeOutcome": "mlsvc_discover.discoverers.base",
    "ServiceMetadata": "mlsvc_discover.discoverers.base",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlsvc_discover' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
