"""Mapper: findings -> valid CreateMlModelServiceRequest bodies (pure, no I/O)."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from mlsvc_discover._errors import MappingError
from mlsvc_discover.discoverers.base import Finding, OwnerRef, ServiceMetadata, ServiceType
from mlsvc_discover.mapper import map_finding, map_findings, owner_tag_fqn, render_name
from testing.om_fixtures import schema_validator

OWNER = owner_tag_fqn("mlsvc-discover", "test")


def mlflow_finding(host: str = "mlflow.internal", port: str = "5000", **kw: object) -> Finding:
    uri = f"http://{host}:{port}"
    defaults: dict[str, object] = {
        "kind": ServiceType.MLFLOW,
        "source": "ml",
        "scope": ("mlflow", "ml", uri),
        "key": uri,
        "attributes": {"tracking_uri": uri, "registry_uri": uri, "registry_available": True},
        "labels": {"host": host, "port": port, "scheme": "http", "path": "", "discoverer": "ml"},
    }
    defaults.update(kw)
    return Finding(**defaults)  # type: ignore[arg-type]


def sagemaker_finding(account: str = "111111111111", region: str = "eu-west-1", **attrs: object) -> Finding:
    return Finding(
        kind=ServiceType.SAGEMAKER,
        source="aws",
        scope=("sagemaker", "aws", account, region),
        key=f"{account}/{region}",
        attributes={"account_id": account, "region": region, **attrs},
        labels={"account": account, "region": region, "discoverer": "aws"},
    )


def test_mlflow_finding_becomes_valid_request_with_matching_types() -> None:
    desired = map_finding(mlflow_finding(), owner_tag=OWNER)
    body = desired.body()
    schema_validator("CreateMlModelServiceRequest").validate(body)
    assert desired.name == "mlflow-mlflow.internal-5000"
    assert body["serviceType"] == body["connection"]["config"]["type"] == "Mlflow"
    assert body["connection"]["config"]["trackingUri"] == "http://mlflow.internal:5000"
    assert {"tagFQN": OWNER, "source": "Classification", "labelType": "Automated", "state": "Confirmed"} in body["tags"]


def test_sagemaker_finding_carries_region_and_role_but_no_keys_by_default() -> None:
    role = "arn:aws:iam::111111111111:role/reader"
    desired = map_finding(sagemaker_finding(role_arn=role, session_name="s1"), owner_tag=OWNER)
    body = desired.body()
    schema_validator("CreateMlModelServiceRequest").validate(body)
    aws = body["connection"]["config"]["awsConfig"]
    assert desired.name == "sagemaker-111111111111-eu-west-1"
    assert aws == {"awsRegion": "eu-west-1", "assumeRoleArn": role, "assumeRoleSessionName": "s1"}


def test_sagemaker_access_keys_are_sent_only_when_the_finding_carries_them() -> None:
    keys = {"access_key_id": "AKIAEXAMPLE", "secret_access_key": SecretStr("s3cr3t-value"), "session_token": None}
    body = map_finding(sagemaker_finding(access_keys=keys), owner_tag=OWNER).body()
    aws = body["connection"]["config"]["awsConfig"]
    assert aws["awsAccessKeyId"] == "AKIAEXAMPLE"
    assert aws["awsSecretAccessKey"] == "s3cr3t-value"
    schema_validator("CreateMlModelServiceRequest").validate(body)


def test_metadata_from_config_is_filled_and_marked_managed() -> None:
    owner = uuid.uuid4()
    meta = ServiceMetadata(
        display_name="MLflow on {host}",
        description="Tracking server of team {team}",
        owners=(OwnerRef(id=owner, type="team"),),
        domains=("ml",),
        tags=("Tier.Tier1",),
    )
    f = mlflow_finding(metadata=meta, labels={"host": "h", "port": "1", "team": "search"})
    desired = map_finding(f, owner_tag=OWNER)
    body = desired.body()
    assert body["displayName"] == "MLflow on h"
    assert body["description"] == "Tracking server of team search"
    assert body["owners"] == [{"id": str(owner), "type": "team"}]
    assert body["domains"] == ["ml"]
    assert [t["tagFQN"] for t in body["tags"]] == [OWNER, "Tier.Tier1"]
    assert desired.managed == {"connection", "tags", "displayName", "description", "owners", "domains"}


def test_unset_metadata_is_not_managed_and_not_sent() -> None:
    desired = map_finding(mlflow_finding(), owner_tag=OWNER)
    assert desired.managed == {"connection", "tags"}
    assert not {"displayName", "description", "owners", "domains"} & desired.body().keys()


def test_ipv6_host_never_puts_double_colon_into_the_name() -> None:
    desired = map_finding(mlflow_finding(host="::1", port="5000"), owner_tag=OWNER)
    assert "::" not in desired.name
    # Was "mlflow-1-5000", which "1::" and "::1" shared (issue 8): now all eight groups.
    assert desired.name == "mlflow-0-0-0-0-0-0-0-1-5000"


def test_distinct_ipv6_hosts_get_distinct_names_and_one_address_one_name() -> None:
    def name(host: str) -> str:
        return map_finding(mlflow_finding(host=host, port="5000"), owner_tag=OWNER).name

    distinct = ["::1", "1::", "2001:db8::1", "2001:db8::1:0", "2001:db8:0:1::", "fe80::1%eth0", "fe80::1"]
    names = [name(h) for h in distinct]
    assert len(set(names)) == len(distinct), names
    assert name("2001:db8::1") == "mlflow-2001-db8-0-0-0-0-0-1-5000"
    assert name("fe80::1%eth0") == "mlflow-fe80-0-0-0-0-0-0-1-eth0-5000"
    # The same address in other spellings (the mlflow discoverer normalises them first anyway).
    assert name("0:0:0:0:0:0:0:1") == name("0000::0001") == name("::1")
    assert name("2001:DB8::1") == name("2001:db8::1")


def test_template_with_unknown_placeholder_names_it_and_the_available_labels() -> None:
    with pytest.raises(MappingError, match=r"\{team\}.*available: .*host"):
        render_name("mlflow-{team}", {"host": "h"}, key="k")


def test_template_with_positional_placeholder_is_rejected() -> None:
    with pytest.raises(MappingError, match="named placeholders"):
        render_name("mlflow-{}", {"host": "h"}, key="k")


def test_template_producing_double_colon_is_rejected() -> None:
    with pytest.raises(MappingError, match="must not contain '::'"):
        render_name("a::{host}", {"host": "h"}, key="k")


def test_overlong_name_is_cut_with_a_hash_so_distinct_keys_stay_distinct() -> None:
    a = render_name("{host}", {"host": "a" * 400}, key="one")
    b = render_name("{host}", {"host": "a" * 400}, key="two")
    assert len(a) == len(b) == 256
    assert a != b


def test_explicit_invalid_name_is_a_mapping_failure_not_a_crash() -> None:
    result = map_findings([mlflow_finding(name="bad::name")], owner_tag=OWNER)
    assert not result.desired
    assert result.failures[0].kind == "mapping"
    assert "::" in result.failures[0].reason


def test_two_findings_mapping_to_one_name_are_both_reported_and_neither_registered() -> None:
    a = mlflow_finding(name="shared")
    b = sagemaker_finding()
    b = Finding(**{**b.__dict__, "name": "shared"})
    result = map_findings([a, b], owner_tag=OWNER)
    assert "shared" not in result.desired
    assert {f.kind for f in result.failures} == {"name_collision"}
    assert len(result.failures) == 2
    assert "shared" in result.protected


def test_same_finding_twice_is_one_service() -> None:
    result = map_findings([mlflow_finding(), mlflow_finding()], owner_tag=OWNER)
    assert list(result.desired) == ["mlflow-mlflow.internal-5000"]
    assert not result.failures


def test_static_finding_of_every_type_validates_against_the_schema() -> None:
    connections = {
        ServiceType.SKLEARN: {},
        ServiceType.CUSTOM: {"sourcePythonClass": "my.Source", "connectionOptions": {"a": "b"}},
        ServiceType.MLFLOW: {"trackingUri": "http://x:1", "registryUri": "http://x:1"},
        ServiceType.SAGEMAKER: {"awsConfig": {"awsRegion": "us-east-1"}},
        ServiceType.VERTEXAI: {"credentials": {"gcpConfig": {"type": "gcp_adc"}}, "location": "europe-west4"},
    }
    for kind, conn in connections.items():
        f = Finding(
            kind=kind,
            source="s",
            scope=("static", "s", kind.value),
            key=kind.value,
            attributes={"connection": conn},
            name=f"svc-{kind.value}",
        )
        body = map_finding(f, owner_tag=OWNER).body()
        schema_validator("CreateMlModelServiceRequest").validate(body)
        assert body["serviceType"] == body["connection"]["config"]["type"] == kind.value


def test_item_metadata_overrides_discoverer_defaults_field_by_field() -> None:
    owner = uuid.uuid4()
    defaults = ServiceMetadata(description="default", tags=("A.b",))
    merged = defaults.merged(ServiceMetadata(owners=(OwnerRef(id=owner, type="user"),), tags=("C.d",)))
    assert merged.description == "default"
    assert merged.tags == ("C.d",)
    assert merged.owners is not None
    assert merged.owners[0].id == owner
    body = map_finding(mlflow_finding(metadata=merged), owner_tag=OWNER).body()
    assert body["owners"] == [{"id": str(owner), "type": "user"}]
