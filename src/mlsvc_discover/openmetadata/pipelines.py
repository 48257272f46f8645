"""OpenMetadata ingestion pipeline routes (``/v1/services/ingestionPipelines``), over the service client.

What it relies on is written down in ``docs/openmetadata-contract.md`` (Ingestion pipelines).
Every call goes through :meth:`OpenMetadataClient.request`, so the token, the deadline of each
request, the retries and the error translation are the service client's. Deploy and trigger
answer HTTP 200 even when nothing happened (no pipeline service client configured), so their
body is read and turned into a :class:`PipelineServiceResponse` that says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from mlsvc_discover._errors import OpenMetadataRequestError, OpenMetadataUnavailable
from mlsvc_discover.openmetadata.client import SERVICES_PATH, OpenMetadataClient

__all__ = ["CLIENT_DISABLED", "PIPELINES_PATH", "PipelineClient", "PipelineServiceResponse", "service_fqn"]

PIPELINES_PATH = "/v1/services/ingestionPipelines"
CLIENT_DISABLED = "Pipeline Client Disabled"


def service_fqn(name: str) -> str:
    """A service's fully qualified name: quoted when it holds a dot and no double quote."""
    return f'"{name}"' if "." in name and '"' not in name else name


@dataclass(frozen=True)
class PipelineServiceResponse:
    """What ``POST /deploy/{id}`` or ``/trigger/{id}`` answered (``PipelineServiceClientResponse``)."""

    code: int | None
    reason: str
    platform: str | None = None

    @property
    def client_disabled(self) -> bool:
        """OpenMetadata has no pipeline service client (Airflow, Argo): nothing was deployed or run."""
        return CLIENT_DISABLED.lower() in self.reason.lower()

    @property
    def ok(self) -> bool:
        return self.code == 200 and not self.client_disabled

    @classmethod
    def from_body(cls, body: Any) -> PipelineServiceResponse:
        if not isinstance(body, dict):
            return cls(None, "unexpected answer (not a PipelineServiceClientResponse)")
        code = body.get("code")
        return cls(
            code if isinstance(code, int) else None,
            str(body.get("reason") or body.get("message") or ""),
            str(body["platform"]) if body.get("platform") is not None else None,
        )


class PipelineClient:
    """Lists, writes, deploys, triggers and deletes ingestion pipelines."""

    def __init__(self, client: OpenMetadataClient, *, page_size: int = 1000) -> None:
        self._client = client
        self._page_size = page_size

    async def list(self, *, service_type: str = "mlmodelService", include: str = "all") -> list[dict[str, Any]]:
        """Every pipeline of every service of ``service_type``, following ``paging.after``.

        Not filtered by ``pipelineType``: a pipeline of another type that bears the agent's name
        must be seen, or a PUT would turn it into a metadata pipeline.
        """
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"serviceType": service_type, "include": include, "limit": self._page_size}
        while True:
            response = await self._client.request("GET", PIPELINES_PATH, params=params)
            try:
                body = response.json()
                data = body["data"]
                after = (body.get("paging") or {}).get("after")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise OpenMetadataUnavailable(f"GET {PIPELINES_PATH}: unexpected response body ({exc})") from exc
            out.extend(d for d in data if isinstance(d, dict))
            if not after:
                return out
            params = {**params, "after": after}

    async def put(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create or update by name; returns the stored pipeline."""
        response = await self._client.request("PUT", PIPELINES_PATH, json=body)
        try:
            entity = response.json()
            if not isinstance(entity, dict) or "id" not in entity:
                raise ValueError("no id")
        except ValueError as exc:
            raise OpenMetadataRequestError(
                f"PUT {PIPELINES_PATH}: the answer is not a pipeline ({exc})", status=response.status_code
            ) from exc
        return entity

    async def deploy(self, pipeline_id: str) -> PipelineServiceResponse:
        # Deploying twice is harmless, so transient failures are retried like any other call.
        response = await self._client.request("POST", f"{PIPELINES_PATH}/deploy/{pipeline_id}")
        return PipelineServiceResponse.from_body(_json(response))

    async def trigger(self, pipeline_id: str) -> PipelineServiceResponse:
        # Not retried: a trigger whose answer was lost may have started a run; a second one would
        # start another.
        response = await self._client.request("POST", f"{PIPELINES_PATH}/trigger/{pipeline_id}", retry=False)
        return PipelineServiceResponse.from_body(_json(response))

    async def delete(self, pipeline_id: str, *, hard: bool = True) -> None:
        """Delete a pipeline; hard by default, since a soft-deleted one keeps its DAG and keeps running."""
        await self._client.request(
            "DELETE", f"{PIPELINES_PATH}/{pipeline_id}", params={"hardDelete": "true" if hard else "false"}
        )

    async def service_id(self, name: str) -> str | None:
        """The id of the (non-deleted) service ``name``; None when there is none."""
        try:
            response = await self._client.request("GET", f"{SERVICES_PATH}/name/{quote(service_fqn(name), safe='')}")
        except OpenMetadataRequestError as exc:
            if exc.status == 404:
                return None
            raise
        body = _json(response)
        return str(body["id"]) if isinstance(body, dict) and body.get("id") else None


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
