"""The OpenMetadata stand-in behaves as the README contract says, over real HTTP.

Every other test that talks to "OpenMetadata" trusts this server, so its answers are checked
here against the contract and against the JSON Schemas independently of its own validation.
"""

from __future__ import annotations

import concurrent.futures
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testing.om_fixtures import OM_BOT_NAME, OM_TOKEN, _serve, make_standin, schema_validator
from testing.openmetadata import (
    NAME_PATTERN_MESSAGE,
    SECRET_MASK,
    FaultRule,
    OpenMetadataStandIn,
    Principal,
    fqn_of,
)

SERVICES = "/v1/services/mlmodelServices"
BULK = f"{SERVICES}/bulk"
HUMAN_TOKEN = "human-token"
DENIED_TOKEN = "denied-token"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
OWNER_A = "0b5d3c2a-1e77-4c8e-9d8e-0b5d3c2a1e77"
OWNER_B = "9a1f2e3d-4c5b-4a69-8877-665544332211"
REPO = Path(__file__).resolve().parents[1]
# Loading the CA bundle costs ~20 ms per httpx.Client; one context serves every test client.
TLS = ssl.create_default_context()


def _seed_references(standin: OpenMetadataStandIn) -> OpenMetadataStandIn:
    for fqn in ("Tier.Tier1",):
        standin.add_tag(fqn)
    for domain in ("A", "B", "C", "D", "Engineering", "Sales"):
        standin.add_domain(domain)
    standin.add_owner("user", OWNER_A)
    standin.add_owner("team", OWNER_B)
    return standin


@pytest.fixture
def om_standin(om_token: str) -> Iterator[OpenMetadataStandIn]:
    """One server with the seed's bulk route (most tests here exercise it) and the tags, domains
    and owners they name; the real-server defaults have their own tests below."""
    yield from _serve(_seed_references(make_standin(bulk_enabled=True)))


def mlflow_request(name: str, **extra: Any) -> dict[str, Any]:
    uri = f"http://{name}.example:5000"
    body: dict[str, Any] = {
        "name": name,
        "serviceType": "Mlflow",
        "connection": {"config": {"type": "Mlflow", "trackingUri": uri, "registryUri": uri}},
    }
    body.update(extra)
    return body


def sagemaker_request(name: str, secret: str = AWS_SECRET) -> dict[str, Any]:
    return {
        "name": name,
        "serviceType": "SageMaker",
        "connection": {
            "config": {
                "type": "SageMaker",
                "awsConfig": {"awsRegion": "eu-west-1", "awsAccessKeyId": "AKIAEXAMPLE", "awsSecretAccessKey": secret},
            }
        },
    }


def check_entity(body: Any) -> dict[str, Any]:
    """Validate with the shared validator, independently of the stand-in's own check."""
    schema_validator("MlModelService").validate(body)
    assert isinstance(body, dict)
    return body


def check_bulk(body: Any) -> dict[str, Any]:
    schema_validator("BulkOperationResult").validate(body)
    assert isinstance(body, dict)
    return body


def check_error(response: httpx.Response, status: int, message: str | None = None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message"}
    assert body["code"] == status
    assert isinstance(body["message"], str)
    if message is not None:
        assert body["message"] == message
    return str(body["message"])


def client_for(standin: OpenMetadataStandIn, token: str | None = OM_TOKEN, timeout: float = 5.0) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=standin.base_url, headers=headers, timeout=timeout, verify=TLS)


@pytest.fixture
def api(om_standin: OpenMetadataStandIn) -> Iterator[httpx.Client]:
    with client_for(om_standin) as client:
        yield client


@pytest.fixture
def human(om_standin: OpenMetadataStandIn) -> Iterator[httpx.Client]:
    om_standin.add_token(HUMAN_TOKEN, Principal("alice", is_bot=False))
    with client_for(om_standin, HUMAN_TOKEN) as client:
        yield client


def put(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return client.put(SERVICES, json=body)


# -- create, update, no-op ----------------------------------------------------------------------


def test_put_creates_service_at_version_0_1_with_entity_created_header(api: httpx.Client) -> None:
    response = put(api, mlflow_request("mlflow-prod", displayName="Prod", domains=["Engineering"]))

    assert response.status_code == 201
    assert response.headers["X-OpenMetadata-Change"] == "entityCreated"
    entity = check_entity(response.json())
    uuid.UUID(entity["id"])
    assert entity["version"] == 0.1
    assert entity["fullyQualifiedName"] == "mlflow-prod"
    assert entity["updatedBy"] == OM_BOT_NAME
    assert entity["deleted"] is False
    assert entity["owners"] == []
    assert entity["tags"] == []
    assert entity["domains"][0]["type"] == "domain"
    assert entity["domains"][0]["fullyQualifiedName"] == "Engineering"
    assert entity["href"].endswith(f"{SERVICES}/{entity['id']}")
    assert abs(entity["updatedAt"] - time.time() * 1000) < 60_000


def test_put_of_unchanged_body_keeps_version_and_updated_at(api: httpx.Client) -> None:
    first = put(api, mlflow_request("svc")).json()
    again = put(api, mlflow_request("svc"))

    assert again.status_code == 200
    assert again.headers["X-OpenMetadata-Change"] == "entityNoChange"
    entity = check_entity(again.json())
    assert (entity["version"], entity["updatedAt"], entity["id"]) == (first["version"], first["updatedAt"], first["id"])


def test_put_with_a_change_bumps_version_by_0_1_and_updated_at(api: httpx.Client) -> None:
    first = put(api, mlflow_request("svc")).json()
    response = put(api, mlflow_request("svc", displayName="New name"))

    assert response.status_code == 200
    assert response.headers["X-OpenMetadata-Change"] == "entityUpdated"
    entity = check_entity(response.json())
    assert entity["version"] == 0.2
    assert entity["updatedAt"] > first["updatedAt"]
    assert entity["displayName"] == "New name"


def test_versions_past_0_2_stay_one_decimal_and_validate(api: httpx.Client) -> None:
    # A bot keeps a stored displayName; a changing description-free connection makes each PUT a change.
    versions = [
        put(
            api,
            mlflow_request(
                "svc",
                connection={
                    "config": {"type": "Mlflow", "trackingUri": f"http://v{i}:1", "registryUri": f"http://v{i}:1"}
                },
            ),
        ).json()["version"]
        for i in range(12)
    ]

    assert versions == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
    check_entity(api.get(f"{SERVICES}/name/svc").json())


def test_absent_or_null_fields_keep_stored_values(api: httpx.Client) -> None:
    put(api, mlflow_request("svc", displayName="Shown", description="Written"))
    response = put(api, {"name": "svc", "serviceType": "Mlflow", "displayName": None})

    entity = check_entity(response.json())
    assert response.headers["X-OpenMetadata-Change"] == "entityNoChange"
    assert entity["displayName"] == "Shown"
    assert entity["connection"]["config"]["trackingUri"] == "http://svc.example:5000"


def test_post_creates_with_location_and_repeated_post_conflicts_409(api: httpx.Client) -> None:
    created = api.post(SERVICES, json=mlflow_request("svc"))
    conflict = api.post(SERVICES, json=mlflow_request("svc"))

    assert created.status_code == 201
    entity = check_entity(created.json())
    assert created.headers["Location"] == entity["href"]
    check_error(conflict, 409, "Entity already exists")


def test_post_conflicts_with_a_soft_deleted_name(api: httpx.Client) -> None:
    entity = put(api, mlflow_request("svc")).json()
    api.delete(f"{SERVICES}/{entity['id']}")

    check_error(api.post(SERVICES, json=mlflow_request("svc")), 409, "Entity already exists")


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(mlflow_request("svc", domain="Engineering"), "Invalid request format", id="unknown-key"),
        pytest.param(mlflow_request("a::b"), NAME_PATTERN_MESSAGE, id="double-colon-name"),
        pytest.param(
            {**mlflow_request("svc"), "serviceType": "mlflow"}, "Invalid request format", id="bad-service-type"
        ),
        pytest.param(
            {**mlflow_request("svc"), "serviceType": "SageMaker"},
            "serviceType SageMaker does not match connection.config.type Mlflow",
            id="type-mismatch",
        ),
        pytest.param({"serviceType": "Mlflow"}, "[name must not be null]", id="missing-name"),
        pytest.param(mlflow_request("x" * 257), "[name size must be between 1 and 256]", id="name-too-long"),
        pytest.param(
            mlflow_request("svc", owners=[{"id": "not-a-uuid", "type": "user"}]),
            "Invalid request format",
            id="bad-uuid",
        ),
        pytest.param(
            {"name": "svc", "serviceType": "Mlflow", "connection": {"config": {"type": "Mlflow", "trackingUri": "x"}}},
            "Invalid request format",
            id="incomplete-config",
        ),
        pytest.param(["not", "an", "object"], "Invalid request format", id="array-body"),
    ],
)
def test_invalid_create_bodies_answer_400(api: httpx.Client, body: Any, message: str) -> None:
    check_error(api.put(SERVICES, json=body), 400, message)
    check_error(api.post(SERVICES, json=body), 400, message)


def test_unparseable_json_answers_400(api: httpx.Client) -> None:
    response = api.put(SERVICES, content=b"{not json", headers={"Content-Type": "application/json"})
    check_error(response, 400)


def test_type_mismatch_is_accepted_when_strict_type_check_is_off() -> None:
    standin = make_standin(strict_type_check=False)
    try:
        with client_for(standin) as client:
            response = put(client, {**mlflow_request("svc"), "serviceType": "CustomMlModel"})
        assert response.status_code == 201
        assert check_entity(response.json())["serviceType"] == "CustomMlModel"
    finally:
        standin.stop()
    assert standin.internal_errors == []


# -- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "unknown-token"])
def test_missing_or_unknown_token_answers_401_with_om_auth_challenge(
    om_standin: OpenMetadataStandIn, token: str | None
) -> None:
    with client_for(om_standin, token) as client:
        for response in (client.get(SERVICES), put(client, mlflow_request("svc"))):
            check_error(response, 401, "Not Authorized! Token verification failed")
            assert response.headers["WWW-Authenticate"] == "om-auth"
    assert om_standin.services == {}


def test_revoked_token_answers_401_from_the_next_request(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    assert api.get(SERVICES).status_code == 200
    om_standin.revoke(OM_TOKEN)
    check_error(api.get(SERVICES), 401)


def test_disallowed_principal_gets_403_on_writes_but_may_read(om_standin: OpenMetadataStandIn) -> None:
    om_standin.add_token(DENIED_TOKEN, Principal("x", allowed=False))
    with client_for(om_standin, DENIED_TOKEN) as client:
        check_error(
            put(client, mlflow_request("svc")),
            403,
            "Principal: CatalogPrincipal{name='x'} operations [Create] not allowed",
        )
        check_error(client.put(BULK, json=[mlflow_request("svc")]), 403)
        assert client.get(SERVICES).status_code == 200
    assert om_standin.services == {}


def test_version_endpoint_answers_without_token_like_upstream(om_standin: OpenMetadataStandIn) -> None:
    with client_for(om_standin, None) as client:
        response = client.get("/v1/system/version")
    assert response.status_code == 200
    assert response.json()["version"] == "2.0.7"
    assert isinstance(response.json()["timestamp"], int)


# -- listing ------------------------------------------------------------------------------------


def test_list_pages_through_25_services_in_3_pages_of_10(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    names = [f"svc-{i:02d}" for i in range(25)]
    for name in reversed(names):
        om_standin.put_entity(mlflow_request(name))

    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 10}
    while True:
        response = api.get(SERVICES, params=params)
        assert response.status_code == 200
        pages.append(response.json())
        after = pages[-1]["paging"].get("after")
        if after is None:
            break
        params = {"limit": 10, "after": after}

    assert [len(p["data"]) for p in pages] == [10, 10, 5]
    assert [e["name"] for p in pages for e in p["data"]] == names
    assert all(p["paging"]["total"] == 25 for p in pages)
    assert "before" not in pages[0]["paging"]
    assert "before" in pages[2]["paging"]
    for page in pages:
        for entity in page["data"]:
            check_entity(entity)

    back = api.get(SERVICES, params={"limit": 10, "before": pages[2]["paging"]["before"]}).json()
    assert [e["name"] for e in back["data"]] == names[10:20]


def test_list_defaults_to_10_items(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    for i in range(12):
        om_standin.put_entity(mlflow_request(f"svc-{i:02d}"))
    body = api.get(SERVICES).json()
    assert len(body["data"]) == 10
    assert body["paging"]["total"] == 12


@pytest.mark.parametrize("limit", [-1, 1_000_001, "ten"])
def test_list_limit_out_of_range_answers_400(api: httpx.Client, limit: int | str) -> None:
    check_error(api.get(SERVICES, params={"limit": limit}), 400)


def test_owners_tags_domains_only_listed_when_named_in_fields(
    om_standin: OpenMetadataStandIn, api: httpx.Client
) -> None:
    om_standin.put_entity(mlflow_request("svc", owners=[{"id": OWNER_A, "type": "user"}], domains=["D"]))

    plain = api.get(SERVICES).json()["data"][0]
    some = api.get(SERVICES, params={"fields": "owners,tags"}).json()["data"][0]
    by_name = api.get(f"{SERVICES}/name/svc", params={"fields": "domains"}).json()

    assert not {"owners", "tags", "domains"} & set(plain)
    assert some["owners"][0]["id"] == OWNER_A
    assert some["tags"] == []
    assert "domains" not in some
    assert by_name["domains"][0]["name"] == "D"
    assert "owners" not in by_name
    check_error(api.get(SERVICES, params={"fields": "owners,bogus"}), 400, "Invalid field name bogus")


def test_get_by_name_uses_quoted_fqn_for_dotted_names(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    om_standin.put_entity(mlflow_request("team.prod"))

    found = api.get(f"{SERVICES}/name/%22team.prod%22")
    assert found.status_code == 200
    assert check_entity(found.json())["fullyQualifiedName"] == fqn_of("team.prod") == '"team.prod"'
    check_error(api.get(f"{SERVICES}/name/team.prod"), 404, "mlmodelService instance for team.prod not found")


def test_get_by_name_decodes_url_escapes(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    om_standin.put_entity(mlflow_request("a/b c"))
    assert api.get(f"{SERVICES}/name/a%2Fb%20c").json()["name"] == "a/b c"


def test_get_by_id_and_unknown_id(api: httpx.Client) -> None:
    entity = put(api, mlflow_request("svc")).json()

    assert check_entity(api.get(f"{SERVICES}/{entity['id']}").json())["name"] == "svc"
    check_error(api.get(f"{SERVICES}/{uuid.uuid4()}"), 404)
    check_error(api.get(f"{SERVICES}/not-a-uuid"), 404)


# -- delete and restore -------------------------------------------------------------------------


def test_soft_delete_hides_service_unless_include_deleted(api: httpx.Client) -> None:
    entity = put(api, mlflow_request("svc")).json()
    put(api, mlflow_request("other"))

    deleted = api.delete(f"{SERVICES}/{entity['id']}")

    assert deleted.status_code == 200
    body = check_entity(deleted.json())
    assert body["deleted"] is True
    assert body["version"] == 0.2
    assert [e["name"] for e in api.get(SERVICES).json()["data"]] == ["other"]
    assert [e["name"] for e in api.get(SERVICES, params={"include": "deleted"}).json()["data"]] == ["svc"]
    assert api.get(SERVICES, params={"include": "all"}).json()["paging"]["total"] == 2
    check_error(api.get(f"{SERVICES}/name/svc"), 404)
    assert api.get(f"{SERVICES}/name/svc", params={"include": "deleted"}).json()["deleted"] is True


def test_hard_delete_removes_the_service_and_frees_the_name(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    entity = put(api, mlflow_request("svc")).json()

    assert api.delete(f"{SERVICES}/{entity['id']}", params={"hardDelete": "true"}).status_code == 200

    assert om_standin.services == {}
    assert api.post(SERVICES, json=mlflow_request("svc")).status_code == 201


def test_delete_of_service_holding_models_needs_recursive(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    entity = put(api, mlflow_request("svc")).json()
    om_standin.set_model_count("svc", 3)

    check_error(api.delete(f"{SERVICES}/{entity['id']}"), 400, "mlmodelService is not empty")
    assert api.delete(f"{SERVICES}/{entity['id']}", params={"recursive": "true"}).status_code == 200


def test_restore_undeletes_with_entity_restored_header(api: httpx.Client) -> None:
    entity = put(api, mlflow_request("svc")).json()
    api.delete(f"{SERVICES}/{entity['id']}")

    restored = api.put(f"{SERVICES}/restore", json={"id": entity["id"]})

    assert restored.status_code == 200
    assert restored.headers["X-OpenMetadata-Change"] == "entityRestored"
    assert check_entity(restored.json())["deleted"] is False
    assert api.get(f"{SERVICES}/name/svc").status_code == 200


def test_put_on_soft_deleted_name_restores_it_as_a_change(api: httpx.Client) -> None:
    entity = put(api, mlflow_request("svc")).json()
    api.delete(f"{SERVICES}/{entity['id']}")

    response = put(api, mlflow_request("svc"))

    assert response.status_code == 200
    assert response.headers["X-OpenMetadata-Change"] == "entityUpdated"
    body = check_entity(response.json())
    assert body["deleted"] is False
    assert body["id"] == entity["id"]
    assert body["version"] == 0.3


# -- bulk ---------------------------------------------------------------------------------------


def test_bulk_success_reports_fqns_and_applies_every_item(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    om_standin.put_entity(mlflow_request("existing"))
    items = [mlflow_request("new.one"), mlflow_request("existing"), mlflow_request("existing", displayName="X")]

    response = api.put(BULK, json=items)

    assert response.status_code == 200
    result = check_bulk(response.json())
    assert result["status"] == "success"
    assert (result["numberOfRowsProcessed"], result["numberOfRowsPassed"], result["numberOfRowsFailed"]) == (3, 3, 0)
    assert [r["request"] for r in result["successRequest"]] == ['"new.one"', "existing", "existing"]
    assert [r["status"] for r in result["successRequest"]] == [201, 200, 200]
    assert result["failedRequest"] == []
    assert om_standin.get_service("existing")["displayName"] == "X"  # type: ignore[index]


def test_bulk_partial_success_returns_invalid_item_as_sent(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    bad = mlflow_request("bad::name")
    result = check_bulk(api.put(BULK, json=[mlflow_request("good"), bad]).json())

    assert result["status"] == "partialSuccess"
    assert result["failedRequest"] == [{"request": bad, "status": 400, "message": NAME_PATTERN_MESSAGE}]
    assert set(om_standin.services) == {"good"}


def test_bulk_where_every_item_fails_is_still_200_failure(api: httpx.Client) -> None:
    response = api.put(BULK, json=[mlflow_request("a::b"), {"name": "x"}])

    assert response.status_code == 200
    result = check_bulk(response.json())
    assert result["status"] == "failure"
    assert result["numberOfRowsFailed"] == 2


def test_bulk_route_answers_the_real_servers_500_when_switched_off_at_runtime(
    om_standin: OpenMetadataStandIn, api: httpx.Client
) -> None:
    assert api.put(BULK, json=[]).status_code == 200
    om_standin.bulk_enabled = False
    check_error(
        api.put(BULK, json=[mlflow_request("svc")]),
        500,
        "An exception with message [HTTP 405 Method Not Allowed] was thrown while processing request.",
    )
    assert om_standin.services == {}


@pytest.mark.parametrize("status", [404, 405, 500])
def test_nobulk_standin_answers_like_a_server_without_the_route(status: int) -> None:
    standin = make_standin(no_bulk_status=status)
    try:
        with client_for(standin) as client:
            check_error(client.put(BULK, json=[mlflow_request("svc")]), status)
            assert put(client, mlflow_request("svc")).status_code == 201
    finally:
        standin.stop()


def test_om_any_serves_single_puts_with_or_without_bulk(om_any: OpenMetadataStandIn) -> None:
    with client_for(om_any) as client:
        assert put(client, mlflow_request("svc")).status_code == 201
        bulk = client.put(BULK, json=[mlflow_request("svc2")])
    assert bulk.status_code == (200 if om_any.bulk_enabled else 500)


def test_async_bulk_answers_202_empty_and_applies_in_background(
    om_standin: OpenMetadataStandIn, api: httpx.Client
) -> None:
    response = api.put(BULK, params={"async": "true"}, json=[mlflow_request(f"svc-{i}") for i in range(5)])

    assert response.status_code == 202
    assert response.content == b""
    assert om_standin.wait_async(timeout=5)
    assert len(om_standin.services) == 5


def test_bulk_larger_than_max_bulk_items_answers_413() -> None:
    standin = make_standin(bulk_enabled=True, max_bulk_items=2)
    try:
        with client_for(standin) as client:
            check_error(client.put(BULK, json=[mlflow_request(f"s{i}") for i in range(3)]), 413)
            assert client.put(BULK, json=[mlflow_request(f"s{i}") for i in range(2)]).status_code == 200
    finally:
        standin.stop()


def test_bulk_override_metadata_lets_a_bot_replace_a_description(
    om_standin: OpenMetadataStandIn, api: httpx.Client
) -> None:
    om_standin.put_entity(mlflow_request("svc", description="by a person"))

    api.put(BULK, json=[mlflow_request("svc", description="by the bot")])
    assert om_standin.get_service("svc")["description"] == "by a person"  # type: ignore[index]
    api.put(BULK, params={"overrideMetadata": "true"}, json=[mlflow_request("svc", description="by the bot")])
    assert om_standin.get_service("svc")["description"] == "by the bot"  # type: ignore[index]


# -- PUT merge rules ----------------------------------------------------------------------------


def test_secrets_are_masked_for_people_and_plain_for_bots(
    om_standin: OpenMetadataStandIn, api: httpx.Client, human: httpx.Client
) -> None:
    put(api, sagemaker_request("sm"))

    as_bot = api.get(f"{SERVICES}/name/sm").json()
    as_person = human.get(f"{SERVICES}/name/sm").json()
    listed = human.get(SERVICES).json()["data"][0]

    assert as_bot["connection"]["config"]["awsConfig"]["awsSecretAccessKey"] == AWS_SECRET
    assert as_person["connection"]["config"]["awsConfig"]["awsSecretAccessKey"] == SECRET_MASK
    assert listed["connection"]["config"]["awsConfig"]["awsSecretAccessKey"] == SECRET_MASK
    assert AWS_SECRET not in human.get(f"{SERVICES}/{as_bot['id']}").text


def test_putting_back_the_mask_keeps_the_stored_secret(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    put(api, sagemaker_request("sm"))

    response = put(api, sagemaker_request("sm", secret=SECRET_MASK))

    assert response.headers["X-OpenMetadata-Change"] == "entityNoChange"
    stored = om_standin.get_service("sm")
    assert stored is not None
    assert stored["connection"]["config"]["awsConfig"]["awsSecretAccessKey"] == AWS_SECRET


def test_put_replaces_owners_with_a_non_empty_list_and_keeps_them_on_an_empty_one(api: httpx.Client) -> None:
    put(api, mlflow_request("svc", owners=[{"id": OWNER_A, "type": "user"}]))

    entity = put(api, mlflow_request("svc", owners=[{"id": OWNER_B, "type": "team"}])).json()
    put(api, mlflow_request("svc", owners=[]))

    assert [(o["id"], o["type"], o["name"]) for o in entity["owners"]] == [(OWNER_B, "team", f"team-{OWNER_B[:8]}")]
    again = api.get(f"{SERVICES}/name/svc", params={"fields": "owners"}).json()
    assert [o["id"] for o in again["owners"]] == [OWNER_B]


def test_a_bots_put_keeps_display_name_and_domains_and_clears_the_ingestion_runner(
    om_standin: OpenMetadataStandIn, api: httpx.Client
) -> None:
    runner = {"id": OWNER_A, "type": "ingestionRunner"}
    om_standin.put_entity(mlflow_request("svc", displayName="Set by Alice", domains=["A"], ingestionRunner=runner))

    put(api, mlflow_request("svc", displayName="Generated", domains=["B"]))

    stored = om_standin.get_service("svc")
    assert stored is not None
    assert stored["displayName"] == "Set by Alice"
    assert [d["name"] for d in stored["domains"]] == ["A"]
    assert "ingestionRunner" not in stored


def test_a_request_naming_a_tag_domain_or_owner_that_does_not_exist_is_404(api: httpx.Client) -> None:
    tag = {"tagFQN": "Nope.Missing", "source": "Classification", "labelType": "Automated", "state": "Confirmed"}
    check_error(put(api, mlflow_request("svc", tags=[tag])), 404, "tag instance for Nope.Missing not found")
    check_error(put(api, mlflow_request("svc", domains=["Nowhere"])), 404, "domain instance for Nowhere not found")
    ghost = str(uuid.uuid4())
    check_error(
        put(api, mlflow_request("svc", owners=[{"id": ghost, "type": "user"}])),
        404,
        f"user instance for {ghost} not found",
    )


def test_classifications_and_tags_are_created_idempotently_by_put(
    om_standin: OpenMetadataStandIn, api: httpx.Client
) -> None:
    assert api.get("/v1/tags/name/mine.one").status_code == 404
    check_error(api.put("/v1/tags", json={"classification": "mine", "name": "one"}), 404)
    assert api.put("/v1/classifications", json={"name": "mine", "description": "d"}).status_code == 201
    assert api.put("/v1/classifications", json={"name": "mine", "description": "d"}).status_code == 200
    assert api.put("/v1/tags", json={"classification": "mine", "name": "one", "description": "d"}).status_code == 201
    assert api.put("/v1/tags", json={"classification": "mine", "name": "one", "description": "d"}).status_code == 200
    assert api.get("/v1/tags/name/mine.one").json()["fullyQualifiedName"] == "mine.one"
    check_error(api.post("/v1/classifications", json={"name": "mine"}), 409)


def test_an_old_server_refuses_fields_domains() -> None:
    standin = make_standin(server_version="1.7.4")
    try:
        with client_for(standin) as client:
            check_error(client.get(SERVICES, params={"fields": "domains"}), 400, "Invalid field name domains")
            assert client.get(SERVICES, params={"fields": "owners,tags"}).status_code == 200
    finally:
        standin.stop()


def test_bot_put_keeps_description_a_person_wrote_but_person_put_replaces_it(
    om_standin: OpenMetadataStandIn, api: httpx.Client, human: httpx.Client
) -> None:
    put(human, mlflow_request("svc", description="Written by Alice"))

    by_bot = put(api, mlflow_request("svc", description="Generated"))
    assert by_bot.json()["description"] == "Written by Alice"
    assert by_bot.headers["X-OpenMetadata-Change"] == "entityNoChange"

    by_person = put(human, mlflow_request("svc", description="Rewritten"))
    assert by_person.json()["description"] == "Rewritten"
    assert by_person.json()["updatedBy"] == "alice"


def test_tags_are_merged_and_a_bot_keeps_stored_domains(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    tag = {"tagFQN": "Tier.Tier1", "source": "Classification", "labelType": "Automated", "state": "Confirmed"}
    put(api, mlflow_request("svc", tags=[tag], domains=["A", "B"]))

    put(api, mlflow_request("svc", tags=[], domains=["C"]))

    stored = om_standin.get_service("svc")
    assert stored is not None
    assert [t["tagFQN"] for t in stored["tags"]] == ["Tier.Tier1"]
    assert [d["name"] for d in stored["domains"]] == ["A", "B"]
    # One stable id per domain FQN, whatever service refers to it.
    put(api, mlflow_request("svc2", domains=["A", "B"]))
    assert om_standin.get_service("svc2")["domains"] == stored["domains"]  # type: ignore[index]


def test_put_entity_and_edit_simulate_people_in_the_ui(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    seeded = om_standin.put_entity(mlflow_request("foreign"))
    assert seeded["updatedBy"] == "admin"

    edited = om_standin.edit("foreign", displayName="Renamed", domains=["Sales"])

    assert edited["version"] == 0.2
    body = check_entity(api.get(f"{SERVICES}/name/foreign", params={"fields": "domains"}).json())
    assert body["displayName"] == "Renamed"
    assert body["domains"][0]["name"] == "Sales"
    with pytest.raises(ValueError, match="400"):
        om_standin.put_entity(mlflow_request("a::b"))
    with pytest.raises(ValueError, match="schema"):
        om_standin.edit("foreign", serviceType="Nope")


# -- faults -------------------------------------------------------------------------------------


def test_status_fault_with_times_affects_that_many_requests(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    om_standin.inject(FaultRule(method="PUT", path=r"/mlmodelServices$", times=2, status=503))

    first, second, third = (put(api, mlflow_request("svc")) for _ in range(3))

    check_error(first, 503, "Service Unavailable")
    check_error(second, 503)
    assert third.status_code == 201


def test_429_fault_sends_retry_after(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    om_standin.inject(FaultRule(status=429, retry_after=2, message="Too many concurrent jobs"))

    response = api.get(SERVICES)

    check_error(response, 429, "Too many concurrent jobs")
    assert response.headers["Retry-After"] == "2"


@pytest.mark.parametrize("status", [500, 401, 403, 413])
def test_status_faults_answer_json_error_bodies(
    om_standin: OpenMetadataStandIn, api: httpx.Client, status: int
) -> None:
    om_standin.inject(FaultRule(status=status, times=1))
    check_error(put(api, mlflow_request("svc")), status)
    assert om_standin.services == {}


def test_delay_fault_outlasts_a_client_timeout(om_standin: OpenMetadataStandIn) -> None:
    om_standin.inject(FaultRule(method="GET", delay=1.0, times=1))

    with client_for(om_standin, timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.get(SERVICES)
        assert time.monotonic() - started < 0.9
        assert client.get(f"{SERVICES}").status_code == 200


def test_reset_fault_resets_the_connection_without_an_answer(
    om_standin: OpenMetadataStandIn, api: httpx.Client
) -> None:
    om_standin.inject(FaultRule(method="PUT", reset=True, times=1))

    with pytest.raises(httpx.ReadError, match="reset"):
        put(api, mlflow_request("svc"))

    assert om_standin.services == {}
    assert om_standin.count(method="PUT", status=0) == 1
    assert put(api, mlflow_request("svc")).status_code == 201


def test_reset_mid_bulk_applies_first_items_then_resets(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    om_standin.inject(FaultRule(path=r"/bulk$", reset_after_items=2, times=1))

    with pytest.raises(httpx.ReadError):
        api.put(BULK, json=[mlflow_request(f"svc-{i}") for i in range(5)])

    assert sorted(om_standin.services) == ["svc-0", "svc-1"]


def test_reset_after_a_single_put_applies_it_but_loses_the_answer(
    om_standin: OpenMetadataStandIn, api: httpx.Client
) -> None:
    om_standin.inject(FaultRule(method="PUT", reset_after_items=1, times=1))

    with pytest.raises(httpx.ReadError):
        put(api, mlflow_request("svc"))

    assert set(om_standin.services) == {"svc"}


def test_bulk_item_failures_fail_named_items_only(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    om_standin.inject(FaultRule(path=r"/bulk$", bulk_item_failures={"b": (403, "not allowed"), "c": (400, "bad")}))

    result = check_bulk(api.put(BULK, json=[mlflow_request(n) for n in "abcd"]).json())

    assert result["status"] == "partialSuccess"
    assert [(f["request"], f["status"], f["message"]) for f in result["failedRequest"]] == [
        ("b", 403, "not allowed"),
        ("c", 400, "bad"),
    ]
    assert sorted(om_standin.services) == ["a", "d"]


def test_fail_items_fails_the_same_items_by_bulk_or_one_by_one(om_any: OpenMetadataStandIn) -> None:
    om_any.fail_items({"b": (403, "denied")})
    with client_for(om_any) as client:
        if om_any.bulk_enabled:
            client.put(BULK, json=[mlflow_request(n) for n in "abc"])
        else:
            statuses = [put(client, mlflow_request(n)).status_code for n in "abc"]
            assert statuses == [201, 403, 201]
    assert sorted(om_any.services) == ["a", "c"]


def test_rate_fault_is_reproducible_with_a_seed() -> None:
    outcomes = []
    for _ in range(2):
        standin = make_standin(seed=42)
        standin.inject(FaultRule(method="GET", rate=0.5, status=500))
        try:
            with client_for(standin) as client:
                outcomes.append([client.get(SERVICES).status_code for _ in range(20)])
        finally:
            standin.stop()
    assert outcomes[0] == outcomes[1]
    assert {200, 500} == set(outcomes[0])


def test_clear_faults_restores_normal_answers(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    om_standin.inject(FaultRule(status=500))
    assert api.get(SERVICES).status_code == 500
    om_standin.clear_faults()
    assert api.get(SERVICES).status_code == 200


def test_latency_slows_every_answer(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    om_standin.latency = 0.1
    started = time.monotonic()
    api.get(SERVICES)
    assert time.monotonic() - started >= 0.1


# -- plumbing -----------------------------------------------------------------------------------


def test_unknown_routes_answer_404_json(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    check_error(api.get("/v1/tables"), 404)
    check_error(httpx.get(f"{om_standin.url}/nowhere", verify=TLS), 404)


def test_requests_are_recorded_with_the_token_redacted(om_standin: OpenMetadataStandIn, api: httpx.Client) -> None:
    put(api, sagemaker_request("sm"))
    api.get(SERVICES, params={"limit": 5})
    api.put(BULK, json=[mlflow_request("b")])

    assert om_standin.count(method="PUT") == 2
    assert [r.path for r in om_standin.writes()] == ["/api" + SERVICES, "/api" + BULK]
    get = om_standin.find(method="GET")[0]
    assert get.query == {"limit": "5"}
    assert get.status == 200
    assert get.principal == OM_BOT_NAME
    assert get.headers["authorization"] == "Bearer ***"
    assert OM_TOKEN not in repr(om_standin.requests)
    assert [r.body["name"] for r in om_standin.bodies_containing(AWS_SECRET)] == ["sm"]
    om_standin.reset_log()
    assert om_standin.requests == []


def test_an_invalid_response_is_a_500_and_an_internal_error() -> None:
    standin = make_standin()
    try:
        standin.put_entity(mlflow_request("svc"))
        standin._store["svc"]["version"] = 0.15  # corrupt on purpose: not a multiple of 0.1
        with client_for(standin) as client:
            check_error(client.get(f"{SERVICES}/name/svc"), 500)
    finally:
        standin.stop()
    assert len(standin.internal_errors) == 1
    assert "version" in standin.internal_errors[0]


def test_64_concurrent_connections_are_served_in_parallel(om_standin: OpenMetadataStandIn) -> None:
    om_standin.latency = 0.2
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    headers = {"Authorization": f"Bearer {OM_TOKEN}"}

    with (
        httpx.Client(base_url=om_standin.base_url, headers=headers, limits=limits, verify=TLS, timeout=10) as client,
        concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool,
    ):
        started = time.monotonic()
        statuses = list(pool.map(lambda i: put(client, mlflow_request(f"svc-{i:03d}")).status_code, range(128)))
        elapsed = time.monotonic() - started

    assert statuses == [201] * 128
    assert len(om_standin.services) == 128
    # Two rounds of 64 parallel 0.2 s answers take ~1 s here; one at a time would take 25.6 s.
    assert elapsed < 6.0


@pytest.mark.timeout(30)
def test_standalone_mode_prints_base_url_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "testing.openmetadata", "--port", "0", "--token", "demo"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/api")
        response = httpx.put(
            f"{base_url}{SERVICES}",
            json=mlflow_request("demo"),
            headers={"Authorization": "Bearer demo"},
            timeout=5,
            verify=TLS,
        )
        assert response.status_code == 201
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
