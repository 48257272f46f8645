"""SageMaker-managed MLflow: the tracking servers and MLflow Apps of one (account, region).

Public seam:

- :class:`ManagedMlflow`: one tracking server or MLflow App (ARN, name, kind, status, MLflow
  version, and for tracking servers the UI URL and size from ``DescribeMlflowTrackingServer``).
- :func:`list_managed_mlflow`: blocking; ``ListMlflowTrackingServers`` (paginated) then
  ``DescribeMlflowTrackingServer`` for each present server, and ``ListMlflowApps`` (paginated).
  Raises botocore's errors (translate them at the caller).
- :data:`PRESENT_TRACKING_SERVER_STATUSES`, :data:`PRESENT_APP_STATUSES`: which statuses count
  as "exists". A stopped or failed-to-update server still exists (its data is there and it can
  be started); one being deleted, or whose creation failed, does not (there is nothing to
  ingest). ``DeleteFailed`` still exists: the deletion did not happen.
- :data:`MANAGED_MLFLOW_OPERATIONS`: every SageMaker operation this module calls.

The resource ARN is what OpenMetadata's MLflow connector takes as tracking and registry URI:
with the ``sagemaker-mlflow`` plugin installed, MLflow's client resolves an ARN to the server's
endpoint and signs requests with SigV4.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlsvc_discover.aws.session import call

if TYPE_CHECKING:
    from botocore.client import BaseClient

__all__ = [
    "MANAGED_MLFLOW_OPERATIONS",
    "PRESENT_APP_STATUSES",
    "PRESENT_TRACKING_SERVER_STATUSES",
    "ManagedMlflow",
    "list_managed_mlflow",
]

MANAGED_MLFLOW_OPERATIONS = ("ListMlflowTrackingServers", "DescribeMlflowTrackingServer", "ListMlflowApps")

# botocore 1.44's TrackingServerStatus enum, minus Creating, CreateFailed and Deleting.
PRESENT_TRACKING_SERVER_STATUSES = frozenset(
    {
        "Created",
        "Updating",
        "Updated",
        "UpdateFailed",
        "DeleteFailed",
        "Stopping",
        "Stopped",
        "StopFailed",
        "Starting",
        "Started",
        "StartFailed",
        "MaintenanceInProgress",
        "MaintenanceComplete",
        "MaintenanceFailed",
    }
)
# botocore 1.44's MlflowAppStatus enum, minus Creating, CreateFailed, Deleting and Deleted.
PRESENT_APP_STATUSES = frozenset({"Created", "Updating", "Updated", "UpdateFailed", "DeleteFailed"})
_PAGE_SIZE = 100  # the largest MaxResults both list calls accept


@dataclass(frozen=True)
class ManagedMlflow:
    """One SageMaker-managed MLflow resource that exists."""

    kind: Literal["tracking-server", "app"]
    arn: str
    name: str
    status: str
    mlflow_version: str
    url: str | None = None
    size: str | None = None


def _items(client: BaseClient, operation: str, key: str) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator(operation).paginate(PaginationConfig={"PageSize": _PAGE_SIZE}):
        yield from page.get(key) or []


def list_managed_mlflow(client: BaseClient, *, tracking_servers: bool, apps: bool) -> list[ManagedMlflow]:
    """The present tracking servers and Apps of the client's account and region, sorted by ARN."""
    found: list[ManagedMlflow] = []
    if tracking_servers:
        for summary in _items(client, "list_mlflow_tracking_servers", "TrackingServerSummaries"):
            if summary.get("TrackingServerStatus") not in PRESENT_TRACKING_SERVER_STATUSES:
                continue
            name = str(summary["TrackingServerName"])
            try:
                detail = call(client, "describe_mlflow_tracking_server", TrackingServerName=name)
            except Exception as exc:
                # Deleted between the listing and the describe: it is gone, not an error.
                if getattr(exc, "response", {}).get("Error", {}).get("Code") == "ResourceNotFound":
                    continue
                raise
            status = str(detail.get("TrackingServerStatus") or summary.get("TrackingServerStatus"))
            if status not in PRESENT_TRACKING_SERVER_STATUSES:
                continue
            found.append(
                ManagedMlflow(
                    kind="tracking-server",
                    arn=str(detail.get("TrackingServerArn") or summary["TrackingServerArn"]),
                    name=name,
                    status=status,
                    mlflow_version=str(detail.get("MlflowVersion") or summary.get("MlflowVersion") or ""),
                    url=detail.get("TrackingServerUrl"),
                    size=detail.get("TrackingServerSize"),
                )
            )
    if apps:
        for summary in _items(client, "list_mlflow_apps", "Summaries"):
            if summary.get("Status") not in PRESENT_APP_STATUSES:
                continue
            found.append(
                ManagedMlflow(
                    kind="app",
                    arn=str(summary["Arn"]),
                    name=str(summary["Name"]),
                    status=str(summary["Status"]),
                    mlflow_version=str(summary.get("MlflowVersion") or ""),
                )
            )
    return sorted(found, key=lambda m: m.arn)
