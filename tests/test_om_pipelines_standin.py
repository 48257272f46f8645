"""The stand-in's ingestion pipeline routes behave as the contract says (docs/openmetadata-contract.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from testing.om_fixtures import OM_TOKEN
from testing.openmetadata import PIPELINES_PATH, SERVICES_PATH, OpenMetadataStandIn, Principal


@pytest.fixture
def http(om_standin: OpenMetadataStandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=om_standin.url, headers={"Authorization": f"Bearer {OM_TOKEN}"}) as client:
        yield client


def service(http: httpx.Client, name: str) -> dict[str, Any]:
    r = http.put(SERVICES_PATH, json={"name": name, "serviceType": "Sklearn", "connection": {"config": {}}})
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


def request(svc: dict[str, Any], name: str = "p", schedule: str = "0 0 * * *", **over: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "pipelineType": "metadata",
        "service": {"id": svc["id"], "type": "mlmodelService"},
        "sourceConfig": {"config": {"type": "MlModelMetadata"}},
        "airflowConfig": {"scheduleInterval": schedule},
    }
    body.update(over)
    return body


def test_put_creates_by_name_under_the_service_fqn_and_post_conflicts(http: httpx.Client) -> None:
    svc = service(http, "svc.one")
    created = http.put(PIPELINES_PATH, json=request(svc))
    assert created.status_code == 201
    assert created.json()["fullyQualifiedName"] == '"svc.one".p'
    assert created.json()["deployed"] is False
    again = http.post(PIPELINES_PATH, json=request(svc))
    assert again.status_code == 409
    assert again.json() == {"code": 409, "message": "Entity already exists"}


def test_bodies_are_validated_against_the_2_0_7_request_schema(http: httpx.Client) -> None:
    svc = service(http, "s")
    unknown = http.put(PIPELINES_PATH, json=request(svc, tags=[{"tagFQN": "a.b"}]))
    assert unknown.status_code == 400
    assert unknown.json()["message"] == "Invalid request format"
    missing = http.put(PIPELINES_PATH, json={k: v for k, v in request(svc).items() if k != "airflowConfig"})
    assert missing.status_code == 400
    assert missing.json()["message"] == "[airflowConfig must not be null]"
    ghost = http.put(PIPELINES_PATH, json=request({"id": "6f1c7a52-3f0e-4c8e-9d8e-0b5d3c2a1e77"}))
    assert ghost.status_code == 404


def test_every_put_resets_deployed_even_an_unchanged_one(http: httpx.Client, om_standin: OpenMetadataStandIn) -> None:
    svc = service(http, "s")
    pid = http.put(PIPELINES_PATH, json=request(svc)).json()["id"]
    assert http.post(f"{PIPELINES_PATH}/deploy/{pid}").json()["code"] == 200
    assert http.get(f"{PIPELINES_PATH}/{pid}").json()["deployed"] is True
    same = http.put(PIPELINES_PATH, json=request(svc))
    assert same.headers["X-OpenMetadata-Change"] == "entityUpdated"
    assert same.json()["deployed"] is False
    assert om_standin.pipelines.redeploys == [], "nothing the server redeploys for changed"


def test_a_deployed_pipelines_schedule_change_is_redeployed_or_refused(
    http: httpx.Client, om_standin: OpenMetadataStandIn
) -> None:
    svc = service(http, "s")
    pid = http.put(PIPELINES_PATH, json=request(svc)).json()["id"]
    http.post(f"{PIPELINES_PATH}/deploy/{pid}")
    om_standin.pipelines.client = "unreachable"
    refused = http.put(PIPELINES_PATH, json=request(svc, schedule="@hourly"))
    assert refused.status_code == 400
    assert refused.json()["message"] == "Deployment failed. Changes not saved."
    assert http.get(f"{PIPELINES_PATH}/{pid}").json()["airflowConfig"]["scheduleInterval"] == "0 0 * * *"
    om_standin.pipelines.client = "airflow"
    assert http.put(PIPELINES_PATH, json=request(svc, schedule="@hourly")).status_code == 200
    assert om_standin.pipelines.redeploys == ["s.p"]


def test_deploy_and_trigger_without_a_pipeline_client_answer_200_and_do_nothing(
    http: httpx.Client, om_standin: OpenMetadataStandIn
) -> None:
    om_standin.pipelines.client = "none"
    pid = http.put(PIPELINES_PATH, json=request(service(http, "s"))).json()["id"]
    for route in ("deploy", "trigger"):
        r = http.post(f"{PIPELINES_PATH}/{route}/{pid}")
        assert (r.status_code, r.json()) == (200, {"code": 200, "reason": "Pipeline Client Disabled"})
    assert http.get(f"{PIPELINES_PATH}/{pid}").json()["deployed"] is False
    assert om_standin.pipelines.deploys == om_standin.pipelines.triggers == []


def test_list_filters_and_pages(http: httpx.Client) -> None:
    a, b = service(http, "a"), service(http, "b")
    http.put(PIPELINES_PATH, json=request(a, "m1"))
    http.put(PIPELINES_PATH, json=request(a, "m2", provider="automation"))
    http.put(
        PIPELINES_PATH,
        json=request(b, "u1", pipelineType="usage", sourceConfig={"config": {"type": "DatabaseUsage"}}),
    )

    def names(**params: Any) -> list[str]:
        r = http.get(PIPELINES_PATH, params=params)
        assert r.status_code == 200, r.text
        return [p["fullyQualifiedName"] for p in r.json()["data"]]

    assert names(service="a") == ["a.m1", "a.m2"]
    assert names(pipelineType="usage") == ["b.u1"]
    assert names(provider="automation") == ["a.m2"]
    assert names(serviceType="mlmodelService") == ["a.m1", "a.m2", "b.u1"]
    assert names(serviceType="databaseService") == []
    first = http.get(PIPELINES_PATH, params={"limit": 2}).json()
    assert len(first["data"]) == 2
    rest = http.get(PIPELINES_PATH, params={"limit": 2, "after": first["paging"]["after"]}).json()
    assert [p["name"] for p in rest["data"]] == ["u1"]
    assert http.get(PIPELINES_PATH, params={"fields": "nope"}).status_code == 400


def test_delete_soft_and_hard_and_a_service_with_a_pipeline_is_not_empty(http: httpx.Client) -> None:
    svc = service(http, "s")
    pid = http.put(PIPELINES_PATH, json=request(svc)).json()["id"]
    blocked = http.delete(f"{SERVICES_PATH}/{svc['id']}")
    assert (blocked.status_code, blocked.json()["message"]) == (400, "mlmodelService is not empty")
    assert http.delete(f"{PIPELINES_PATH}/{pid}", params={"hardDelete": "false"}).json()["deleted"] is True
    assert http.get(PIPELINES_PATH, params={"include": "all"}).json()["data"][0]["deleted"] is True
    assert http.get(PIPELINES_PATH).json()["data"] == []
    assert http.delete(f"{PIPELINES_PATH}/{pid}", params={"hardDelete": "true"}).status_code == 200
    assert http.get(f"{PIPELINES_PATH}/{pid}", params={"include": "all"}).status_code == 404
    assert http.delete(f"{SERVICES_PATH}/{svc['id']}").status_code == 200


def test_a_principal_without_permission_gets_403(om_standin: OpenMetadataStandIn, http: httpx.Client) -> None:
    svc = service(http, "s")
    om_standin.add_token("weak", Principal("weak-bot", allowed=False))
    r = httpx.put(f"{om_standin.url}{PIPELINES_PATH}", json=request(svc), headers={"Authorization": "Bearer weak"})
    assert r.status_code == 403
