"""Plan: pure diff of desired against held services, ownership, field ownership, safe deletes."""

from __future__ import annotations

import uuid
from typing import Any

from mlsvc_discover.discoverers.base import Finding, ServiceMetadata, ServiceType
from mlsvc_discover.mapper import DesiredService, map_finding, owner_tag_fqn
from mlsvc_discover.openmetadata.entities import SECRET_MASK, CurrentService
from mlsvc_discover.plan import compute_plan, scope_succeeded

OWNER = owner_tag_fqn("mlsvc-discover", "test")
MARK = {"tagFQN": OWNER, "source": "Classification", "labelType": "Automated", "state": "Confirmed"}


def desired(name: str, uri: str = "http://h:1", scope: tuple[str, ...] | None = None, **meta: Any) -> DesiredService:
    f = Finding(
        kind=ServiceType.MLFLOW,
        source="ml",
        scope=scope or ("mlflow", "ml", uri),
        key=uri,
        attributes={"tracking_uri": uri, "registry_uri": uri},
        metadata=ServiceMetadata(**meta),
        name=name,
    )
    return map_finding(f, owner_tag=OWNER)


def held(
    name: str, uri: str = "http://h:1", *, owned: bool = True, deleted: bool = False, **extra: Any
) -> CurrentService:
    entity = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        "name": name,
        "serviceType": "Mlflow",
        "deleted": deleted,
        "connection": {
            "config": {"type": "Mlflow", "trackingUri": uri, "registryUri": uri, "supportsMetadataExtraction": True}
        },
        "tags": [MARK] if owned else [],
        **extra,
    }
    return CurrentService.from_entity(entity)


def by_name(*items: Any) -> dict[str, Any]:
    return {i.name: i for i in items}


def test_new_service_is_created_and_existing_identical_one_is_unchanged() -> None:
    plan = compute_plan(by_name(desired("a"), desired("b")), by_name(held("b")), owner_tag=OWNER)
    assert [c.name for c in plan.create] == ["a"]
    assert [c.name for c in plan.unchanged] == ["b"]
    assert not plan.update


def test_changed_connection_is_an_update_naming_the_field() -> None:
    plan = compute_plan(by_name(desired("a", "http://new:1")), by_name(held("a", "http://old:1")), owner_tag=OWNER)
    assert [c.name for c in plan.update] == ["a"]
    assert plan.update[0].fields == ("connection",)
    assert plan.update[0].body is not None
    assert plan.update[0].body["connection"]["config"]["trackingUri"] == "http://new:1"


def test_name_held_by_a_foreign_service_is_a_conflict_and_never_written() -> None:
    plan = compute_plan(by_name(desired("a")), by_name(held("a", "http://other:1", owned=False)), owner_tag=OWNER)
    assert [c.name for c in plan.conflicts] == ["a"]
    assert not plan.writes


def test_human_edit_of_an_unmanaged_field_is_unchanged_and_kept_in_update_bodies() -> None:
    cur = held("a", displayName="Edited by a person", description="Human text", tags=[MARK, {"tagFQN": "PII.None"}])
    plan = compute_plan(by_name(desired("a")), by_name(cur), owner_tag=OWNER)
    assert [c.name for c in plan.unchanged] == ["a"]
    # And when the connection does change, the person's values travel with the update.
    plan = compute_plan(by_name(desired("a", "http://new:1")), by_name(cur), owner_tag=OWNER)
    body = plan.update[0].body
    assert body is not None
    assert body["displayName"] == "Edited by a person"
    assert body["description"] == "Human text"
    assert {t["tagFQN"] for t in body["tags"]} == {OWNER, "PII.None"}


def test_managed_display_name_is_set_when_empty_and_a_stored_one_is_reported_as_kept() -> None:
    # Changed by issue 14.3: the server keeps a non-empty displayName against a bot's PUT, so
    # "enforcing" it would be a no-op write every cycle.
    want = by_name(desired("a", display_name="Wanted"))
    assert compute_plan(want, by_name(held("a")), owner_tag=OWNER).update[0].fields == ("displayName",)
    plan = compute_plan(want, by_name(held("a", displayName="Edited")), owner_tag=OWNER)
    assert plan.update == ()
    assert plan.kept == (("a", "displayName"),)
    assert [c.name for c in plan.unchanged] == ["a"]


def test_an_update_carries_the_stored_ingestion_runner_and_data_products() -> None:
    runner = {"id": "5e6f0000-0000-4000-8000-000000000001", "type": "ingestionRunner"}
    cur = held("a", ingestionRunner=runner, dataProducts=[{"fullyQualifiedName": "dp.one", "id": "x", "type": "d"}])
    plan = compute_plan(by_name(desired("a", "http://new:1")), by_name(cur), owner_tag=OWNER)
    body = plan.update[0].body
    assert body is not None
    assert body["ingestionRunner"] == runner
    assert body["dataProducts"] == ["dp.one"]


def test_a_listed_entity_that_cannot_be_read_raises_naming_the_field() -> None:
    import pytest

    entity = {"id": "1", "name": "a", "tags": ["just-a-string"]}
    with pytest.raises(ValueError, match=r"service 'a': `tags\[0\]` lacks tagFQN"):
        CurrentService.from_entity(entity)


def test_description_is_only_filled_when_empty() -> None:
    want = by_name(desired("a", description="From config"))
    assert compute_plan(want, by_name(held("a", description="Person wrote this")), owner_tag=OWNER).unchanged
    assert compute_plan(want, by_name(held("a")), owner_tag=OWNER).update[0].fields == ("description",)


def test_connection_keys_a_person_added_are_kept() -> None:
    cur = held("a")
    cur = CurrentService(
        **{**cur.__dict__, "connection": {**cur.connection, "mlModelFilterPattern": {"includes": ["x"]}}}
    )
    plan = compute_plan(by_name(desired("a", "http://new:1")), by_name(cur), owner_tag=OWNER)
    body = plan.update[0].body
    assert body is not None
    assert body["connection"]["config"]["mlModelFilterPattern"] == {"includes": ["x"]}


def test_masked_secret_in_openmetadata_does_not_cause_an_update() -> None:
    assert scope_succeeded(None, {}, all_ok=True)
    f = Finding(
        kind=ServiceType.SAGEMAKER,
        source="aws",
        scope=("sagemaker", "aws", "1", "r"),
        key="1/r",
        attributes={"region": "eu-west-1", "access_keys": {"access_key_id": "AK", "secret_access_key": "real"}},
        name="s",
    )
    want = map_finding(f, owner_tag=OWNER)
    cur = CurrentService.from_entity(
        {
            "id": "1",
            "name": "s",
            "serviceType": "SageMaker",
            "connection": {
                "config": {
                    "type": "SageMaker",
                    "awsConfig": {"awsRegion": "eu-west-1", "awsAccessKeyId": "AK", "awsSecretAccessKey": SECRET_MASK},
                }
            },
            "tags": [MARK],
        }
    )
    assert compute_plan({"s": want}, {"s": cur}, owner_tag=OWNER).unchanged


def test_plan_output_masks_secrets() -> None:
    f = Finding(
        kind=ServiceType.SAGEMAKER,
        source="aws",
        scope=("sagemaker", "aws", "1", "r"),
        key="1/r",
        attributes={"region": "eu-west-1", "access_keys": {"access_key_id": "AK", "secret_access_key": "real-secret"}},
        name="s",
    )
    plan = compute_plan({"s": map_finding(f, owner_tag=OWNER)}, {}, owner_tag=OWNER)
    assert "real-secret" not in repr(plan.to_dict())


def test_soft_deleted_owned_service_found_again_is_restored() -> None:
    plan = compute_plan(by_name(desired("a")), by_name(held("a", deleted=True)), owner_tag=OWNER)
    assert [c.name for c in plan.restore] == ["a"]
    assert not plan.create


def test_create_only_skips_updates() -> None:
    plan = compute_plan(
        by_name(desired("a", "http://new:1")), by_name(held("a")), owner_tag=OWNER, policy="create-only"
    )
    assert not plan.update
    assert [c.name for c in plan.held] == ["a"]


def test_a_create_only_difference_is_held_with_action_hold_and_code_in_the_plan_json() -> None:
    plan = compute_plan(
        by_name(desired("a", "http://new:1")), by_name(held("a")), owner_tag=OWNER, policy="create-only"
    )
    assert [(c.action, c.code) for c in plan.held] == [("hold", "create_only")]
    out = plan.to_dict()
    assert [c["action"] for c in out["held"]] == ["hold"]
    assert "skipped" not in out


def _sync(prev_misses: dict[str, int], ok: bool = True, **kw: Any) -> Any:
    scope = ("mlflow", "ml")
    current = by_name(*(held(f"s{i}", f"http://h:{i}") for i in range(10)))
    want = by_name(*(desired(f"s{i}", f"http://h:{i}", scope=(*scope, f"u{i}")) for i in range(1, 10)))
    return compute_plan(
        want,
        current,
        owner_tag=OWNER,
        policy=kw.pop("policy", "sync"),
        stale_after=3,
        max_delete_fraction=kw.pop("fraction", 0.2),
        outcomes={scope: ok},
        all_scopes_ok=ok,
        misses=prev_misses,
        known_scopes={"s0": (*scope, "u0")},
        **kw,
    )


def test_sync_deletes_only_after_stale_after_consecutive_misses() -> None:
    p1 = _sync({})
    assert not p1.delete
    assert p1.misses == {"s0": 1}
    p2 = _sync(dict(p1.misses))
    assert not p2.delete
    assert p2.misses == {"s0": 2}
    p3 = _sync(dict(p2.misses))
    assert [c.name for c in p3.delete] == ["s0"]


def test_failed_scope_holds_the_miss_count_and_deletes_nothing() -> None:
    plan = _sync({"s0": 5}, ok=False)
    assert not plan.delete
    assert plan.misses == {"s0": 5}


def test_upsert_only_never_deletes() -> None:
    assert not _sync({"s0": 9}, policy="upsert-only").delete


def test_deletes_beyond_max_delete_fraction_are_all_skipped_with_the_reason() -> None:
    plan = _sync({"s0": 9}, fraction=0.05)
    assert not plan.delete
    assert plan.held[0].name == "s0"
    assert "max_delete_fraction" in plan.held[0].reason


def test_foreign_services_are_never_deleted() -> None:
    plan = compute_plan(
        {},
        by_name(held("x", owned=False)),
        owner_tag=OWNER,
        policy="sync",
        stale_after=1,
        max_delete_fraction=1.0,
        all_scopes_ok=True,
    )
    assert not plan.delete
    assert plan.misses == {}


def test_protected_names_are_not_counted_as_missing() -> None:
    plan = compute_plan(
        {},
        by_name(held("x")),
        owner_tag=OWNER,
        policy="sync",
        stale_after=1,
        max_delete_fraction=1.0,
        all_scopes_ok=True,
        protected={"x"},
    )
    assert not plan.delete


def test_scope_succeeded_walks_up_to_the_nearest_reported_scope() -> None:
    outcomes = {("sm", "aws"): True, ("sm", "aws", "111"): False, ("sm", "aws", "222"): True}
    assert not scope_succeeded(("sm", "aws", "111", "eu-west-1"), outcomes, all_ok=False)
    assert scope_succeeded(("sm", "aws", "222", "eu-west-1"), outcomes, all_ok=False)
    assert not scope_succeeded(("gone", "x"), outcomes, all_ok=False)
    assert scope_succeeded(("gone", "x"), outcomes, all_ok=True)
