"""The whole AWS estate: accounts from AWS Organizations, and SageMaker-managed MLflow.

Organizations, OUs, accounts, IAM roles and SageMaker models are moto's own (``moto_server``'s
app). SageMaker's MLflow calls, which moto lacks, and AssumeRole refusals, which moto never
makes, come from the fake in front of it (``testing/aws_fake.py``), spoken to by the real
botocore client over loopback in AWS's JSON 1.1 protocol and held to botocore's service model.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsvc_discover.aws.fleet import AwsFleet
from mlsvc_discover.aws.session import AwsClients
from mlsvc_discover.cli import main
from mlsvc_discover.discoverers.base import DiscoveryResult, Finding, ScopeOutcome, ServiceType
from mlsvc_discover.discoverers.sagemaker import SageMakerConfig, SageMakerDiscoverer
from testing.moto_fixtures import DEFAULT_ACCOUNT, MotoServer, seed_models
from testing.openmetadata import OpenMetadataStandIn

pytestmark = pytest.mark.timeout(120)

REGIONS = ["us-east-1", "eu-west-1"]
MEMBER_ROLE = "mlsvc-discover"
READER_ROLE = "mlsvc-org-reader"
MEMBER_EXTERNAL_ID = "member-ext-id-7"
OWNER_TAG = "mlsvc-discover.org"


def _trust(external_id: str | None = None) -> str:
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
    if external_id:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@dataclass
class Org:
    """What ``org_world`` built: account ids by role, OU ids, and the expected managed MLflow ARNs."""

    moto: MotoServer
    root: str
    ous: dict[str, str]
    accounts: dict[str, str]  # short name -> account id
    arns: dict[str, str]  # short name of a managed MLflow resource -> ARN

    def add_member(self, short: str, ou: str, *, role: bool = True) -> str:
        orgs = self.moto.client("organizations")
        created = orgs.create_account(Email=f"{short}@example.com", AccountName=short)["CreateAccountStatus"]
        account_id = str(created["AccountId"])
        orgs.move_account(AccountId=account_id, SourceParentId=self.root, DestinationParentId=self.ous[ou])
        self.accounts[short] = account_id
        if role:
            give_role(self.moto, account_id, MEMBER_ROLE, MEMBER_EXTERNAL_ID)
        return account_id

    def mlflow(self, kind: str, short: str, region: str, name: str, status: str = "Created") -> str:
        account = self.accounts[short]
        answer = self.moto.fake(kind, account=account, region=region, name=name, status=status, version="3.0.1")
        arn = str(answer["arn"])
        self.arns[name] = arn
        return arn


def give_role(moto: MotoServer, account_id: str, name: str, external_id: str | None = None) -> None:
    # moto lets the seeding assume anything (strict mode is switched on afterwards).
    creds = moto.assume(f"arn:aws:iam::{account_id}:role/bootstrap")
    moto.client("iam", creds=creds).create_role(RoleName=name, AssumeRolePolicyDocument=_trust(external_id))


@pytest.fixture
def org_world(moto_server: MotoServer) -> Org:
    """An organization in moto, managed by moto's default account 123456789012.

    root
    ├── prod: A1 (models + a tracking server in us-east-1, an App in eu-west-1), A6 (suspended)
    │   └── prod-eu: A2 (a Stopped server and a Deleting one in eu-west-1; a CreateFailed one)
    ├── dev: A3 (nothing), A4 (no role: AssumeRole refused)
    └── sandbox: A5 (a tracking server in us-east-1)

    The management account has a reader role (for Organizations) and the member role too.
    """
    moto = moto_server
    moto.require_auth(float("inf"))
    moto.reset()
    orgs = moto.client("organizations")
    orgs.create_organization(FeatureSet="ALL")
    root = str(orgs.list_roots()["Roots"][0]["Id"])
    ous: dict[str, str] = {}
    for name, parent in (("prod", None), ("prod-eu", "prod"), ("dev", None), ("sandbox", None)):
        parent_id = ous[parent] if parent else root
        ous[name] = str(orgs.create_organizational_unit(ParentId=parent_id, Name=name)["OrganizationalUnit"]["Id"])
    org = Org(moto=moto, root=root, ous=ous, accounts={"management": DEFAULT_ACCOUNT}, arns={})
    give_role(moto, DEFAULT_ACCOUNT, READER_ROLE)
    give_role(moto, DEFAULT_ACCOUNT, MEMBER_ROLE, MEMBER_EXTERNAL_ID)
    for short, ou, role in (
        ("A1", "prod", True),
        ("A2", "prod-eu", True),
        ("A3", "dev", True),
        ("A4", "dev", False),
        ("A5", "sandbox", True),
        ("A6", "prod", True),
    ):
        org.add_member(short, ou, role=role)
    a1 = moto.assume(f"arn:aws:iam::{org.accounts['A1']}:role/bootstrap")
    seed_models(moto, a1, "us-east-1", ["churn"])
    org.mlflow("tracking-server", "A1", "us-east-1", "team-a")
    org.mlflow("app", "A1", "eu-west-1", "team-a-app")
    org.mlflow("tracking-server", "A2", "eu-west-1", "paused", status="Stopped")
    org.mlflow("tracking-server", "A2", "eu-west-1", "going", status="Deleting")
    org.mlflow("tracking-server", "A2", "us-east-1", "broken", status="CreateFailed")
    org.mlflow("tracking-server", "A5", "us-east-1", "sandbox-server")
    org.mlflow("tracking-server", "A6", "us-east-1", "closed-server")
    orgs.close_account(AccountId=org.accounts["A6"])
    moto.fake("strict-roles", on=True)
    return org


def org_config(org: Org, **organization: Any) -> dict[str, Any]:
    return {
        "type": "sagemaker",
        "name": "estate",
        "endpoint_url": org.moto.url,
        "regions": REGIONS,
        "organization": {
            "role_arn": f"arn:aws:iam::{DEFAULT_ACCOUNT}:role/{READER_ROLE}",
            "member_role_name": MEMBER_ROLE,
            "member_external_id": MEMBER_EXTERNAL_ID,
            **organization,
        },
    }


def discover(config: dict[str, Any], *between: Any) -> list[DiscoveryResult]:
    """One cycle, then one more after each callable of ``between``, with one discoverer."""

    async def run() -> list[DiscoveryResult]:
        discoverer = SageMakerDiscoverer(SageMakerConfig.model_validate(config))
        try:
            results = [await discoverer.discover()]
            for step in between:
                step(discoverer)
                results.append(await discoverer.discover())
            return results
        finally:
            await discoverer.aclose()

    return asyncio.run(asyncio.wait_for(run(), timeout=100))


def scopes(result: DiscoveryResult) -> dict[tuple[str, ...], ScopeOutcome]:
    return {s.scope: s for s in result.scopes}


def accounts_looked_at(result: DiscoveryResult) -> set[str]:
    return {s.scope[2] for s in result.scopes if len(s.scope) == 3}


def mlflow_findings(result: DiscoveryResult) -> dict[str, Finding]:
    return {f.key: f for f in result.findings if f.kind is ServiceType.MLFLOW}


def test_every_active_account_is_reached_and_exactly_the_present_managed_mlflow_is_found(org_world: Org) -> None:
    org = org_world
    (result,) = discover(org_config(org))

    ids = org.accounts
    active = {ids[k] for k in ("management", "A1", "A2", "A3", "A4", "A5")}
    assert accounts_looked_at(result) == active  # A6 is suspended: not looked at
    outcome = scopes(result)
    assert outcome[("sagemaker", "estate")].ok
    refused = outcome[("sagemaker", "estate", ids["A4"])]
    assert not refused.ok
    assert refused.error is not None
    assert refused.error.startswith(f"cannot assume role arn:aws:iam::{ids['A4']}:role/{MEMBER_ROLE}: AccessDenied")
    assert [(f.item, f.kind) for f in result.failures] == [
        (f"arn:aws:iam::{ids['A4']}:role/{MEMBER_ROLE}", "access_denied")
    ]
    assert all(s.ok for s in result.scopes if s.scope[2:3] != (ids["A4"],) and len(s.scope) > 2)

    found = mlflow_findings(result)
    assert set(found) == {org.arns[n] for n in ("team-a", "team-a-app", "paused", "sandbox-server")}
    server = found[org.arns["team-a"]]
    assert server.attributes["tracking_uri"] == server.attributes["registry_uri"] == org.arns["team-a"]
    assert org.arns["team-a"] == f"arn:aws:sagemaker:us-east-1:{ids['A1']}:mlflow-tracking-server/team-a"
    assert server.scope == ("sagemaker", "estate", ids["A1"], "us-east-1")
    assert server.labels["server"] == "team-a"
    assert server.labels["mlflow_version"] == "3.0.1"
    assert server.labels["status"] == "Created"
    assert server.labels["account_name"] == "A1"
    assert server.attributes["url"].endswith(".us-east-1.experiments.sagemaker.aws")
    assert found[org.arns["paused"]].labels["status"] == "Stopped"
    assert found[org.arns["team-a-app"]].attributes["resource"] == "app"

    usage = {f.key for f in result.findings if f.kind is ServiceType.SAGEMAKER}
    assert usage == {f"{ids['A1']}/us-east-1"}
    assert org.moto.fake("stats")["violations"] == []


def test_ou_and_account_filters_select_accounts_at_any_depth(org_world: Org) -> None:
    org = org_world
    ids = org.accounts
    (walked,) = discover(
        org_config(org, include_ous=[org.ous["prod"], org.ous["dev"]], exclude_ous=[org.ous["prod-eu"]])
    )
    assert accounts_looked_at(walked) == {ids["A1"], ids["A3"], ids["A4"]}

    (nested,) = discover(org_config(org, include_ous=[org.ous["prod"]], exclude_accounts=[ids["A1"]]))
    assert accounts_looked_at(nested) == {ids["A2"]}  # prod-eu is under prod; A6 is suspended

    (listed,) = discover(org_config(org, include_accounts=[ids["A3"], ids["A5"]]))
    assert accounts_looked_at(listed) == {ids["A3"], ids["A5"]}
    assert org.moto.fake("stats")["calls"].get(f"Organizations.ListAccounts {DEFAULT_ACCOUNT} us-east-1")


def test_explicit_accounts_and_organization_accounts_combine_and_explicit_wins(org_world: Org) -> None:
    org = org_world
    ids = org.accounts
    config = org_config(org, include_accounts=[ids["A1"], ids["A5"]])
    explicit_role = f"arn:aws:iam::{ids['A1']}:role/{MEMBER_ROLE}"
    config["accounts"] = [
        {"role_arn": explicit_role, "external_id": MEMBER_EXTERNAL_ID, "regions": ["us-east-1"], "labels": {"k": "v"}}
    ]
    (result,) = discover(config)
    assert accounts_looked_at(result) == {ids["A1"], ids["A5"]}
    a1 = mlflow_findings(result)[org.arns["team-a"]]
    assert a1.labels["k"] == "v"  # reached through the explicit entry, not the organization's
    assert org.arns["team-a-app"] not in mlflow_findings(result)  # the explicit entry has only us-east-1
    assert not result.ignored


def test_organization_that_cannot_be_listed_fails_the_root_and_explicit_accounts_still_register(
    org_world: Org,
) -> None:
    org = org_world
    org.moto.fake(
        "fault",
        action="Organizations.ListAccounts",
        code="AccessDeniedException",
        message="You don't have permissions to access this resource.",
    )
    config = org_config(org)
    config["accounts"] = [
        {"role_arn": f"arn:aws:iam::{org.accounts['A5']}:role/{MEMBER_ROLE}", "external_id": MEMBER_EXTERNAL_ID}
    ]
    (result,) = discover(config)
    root = scopes(result)[("sagemaker", "estate")]
    assert not root.ok
    assert root.error == (
        "cannot list the organization's accounts: AccessDeniedException "
        "(You don't have permissions to access this resource.)"
    )
    assert [(f.item, f.kind) for f in result.failures] == [("organization", "access_denied")]
    assert set(mlflow_findings(result)) == {org.arns["sandbox-server"]}


def test_management_role_that_cannot_be_assumed_fails_the_root(org_world: Org) -> None:
    org = org_world
    (result,) = discover(org_config(org, role_arn=f"arn:aws:iam::{DEFAULT_ACCOUNT}:role/no-such-role"))
    root = scopes(result)[("sagemaker", "estate")]
    assert not root.ok
    assert root.error is not None
    assert root.error.startswith(f"cannot assume role arn:aws:iam::{DEFAULT_ACCOUNT}:role/no-such-role: AccessDenied")
    assert result.findings == []


def test_new_accounts_are_found_next_cycle_suspended_ones_dropped_and_roles_not_assumed_again(
    org_world: Org,
) -> None:
    org = org_world
    fleets: list[AwsFleet] = []
    assumed: list[int] = []

    def change(discoverer: SageMakerDiscoverer) -> None:
        assert discoverer._fleet is not None
        fleets.append(discoverer._fleet)
        assumed.append(discoverer._fleet.assume_role_calls)
        org.moto.fake("strict-roles", on=False)  # seeding assumes a bootstrap role
        org.add_member("A7", "dev")
        org.moto.fake("strict-roles", on=True)
        org.mlflow("tracking-server", "A7", "eu-west-1", "newcomer")
        org.moto.client("organizations").close_account(AccountId=org.accounts["A1"])

    def assume_calls() -> int:
        calls = org.moto.fake("stats")["calls"]
        return sum(n for k, n in calls.items() if k.startswith("STS.AssumeRole"))

    before = assume_calls()
    first, second = discover(org_config(org), change)
    ids = org.accounts
    assert ids["A1"] in accounts_looked_at(first)
    assert accounts_looked_at(second) == {ids[k] for k in ("management", "A2", "A3", "A4", "A5", "A7")}
    assert org.arns["newcomer"] in mlflow_findings(second)
    assert org.arns["team-a"] not in mlflow_findings(second)
    # One AssumeRole per reachable account in the first cycle (reader + 5 members, A4 refused);
    # the second cycle reuses them and assumes only into the new account (A4 is asked again).
    assert assumed == [1 + 5]
    assert fleets[0].assume_role_calls == 1 + 5 + 1
    asked = assume_calls() - before
    # Seeding A7 assumed once (bootstrap); the discoverer: cycle 1 reader + 6 members, cycle 2
    # A4 again and A7.
    assert asked == 1 + (1 + 6) + 2


def test_assumed_role_credentials_are_refreshed_before_they_expire(moto_server: MotoServer) -> None:
    moto_server.require_auth(float("inf"))
    moto_server.reset()
    from datetime import UTC, datetime, timedelta

    now = [datetime.now(UTC)]
    aws = AwsClients(endpoint_url=moto_server.url, connect_timeout=5, read_timeout=10, max_attempts=1)
    fleet = AwsFleet(aws, max_pool_connections=4, time_fetcher=lambda: now[0])
    account = SageMakerConfig.model_validate(
        {
            "type": "sagemaker",
            "name": "x",
            "regions": ["us-east-1"],
            "accounts": [{"role_arn": "arn:aws:iam::444455556666:role/r"}],
        }
    ).accounts[0]
    try:
        for _ in range(3):
            fleet.new_cycle()
            fleet.open(account, ["us-east-1"], service="sagemaker", secrets=[])
        assert fleet.assume_role_calls == 1  # moto's credentials last an hour: reused
        now[0] += timedelta(minutes=52)  # inside botocore's 15-minute advisory refresh window
        fleet.new_cycle()
        opened = fleet.open(account, ["us-east-1"], service="sagemaker", secrets=[])
        assert fleet.assume_role_calls == 2
        assert opened.account_id == "444455556666"
    finally:
        fleet.close()


def test_managed_mlflow_listings_follow_next_token_pages(org_world: Org) -> None:
    org = org_world
    org.moto.fake("page-size", n=2)
    for i in range(5):
        org.mlflow("tracking-server", "A3", "us-east-1", f"srv-{i}", status=["Created", "Stopped", "Deleting"][i % 3])
    for i in range(3):
        org.mlflow("app", "A3", "us-east-1", f"app-{i}")
    (result,) = discover(org_config(org, include_accounts=[org.accounts["A3"]]))
    found = mlflow_findings(result)
    assert set(found) == {org.arns[n] for n in ("srv-0", "srv-1", "srv-3", "srv-4", "app-0", "app-1", "app-2")}
    calls = org.moto.fake("stats")["calls"]
    a3 = org.accounts["A3"]
    assert calls[f"SageMaker.ListMlflowTrackingServers {a3} us-east-1"] == 3  # 2 + 2 + 1
    assert calls[f"SageMaker.ListMlflowApps {a3} us-east-1"] == 2
    assert calls[f"SageMaker.DescribeMlflowTrackingServer {a3} us-east-1"] == 4  # not the Deleting one


def test_throttled_managed_mlflow_is_retried_and_fails_its_region_only_when_it_persists(org_world: Org) -> None:
    org = org_world
    a1 = org.accounts["A1"]
    org.moto.fake(
        "fault",
        action="SageMaker.ListMlflowTrackingServers",
        account=a1,
        region="us-east-1",
        code="ThrottlingException",
        message="Rate exceeded",
        times=1,
    )
    (once,) = discover(org_config(org, include_accounts=[a1]))
    assert once.ok, once.failures
    assert org.arns["team-a"] in mlflow_findings(once)

    org.moto.fake(
        "fault",
        action="SageMaker.ListMlflowTrackingServers",
        account=a1,
        region="us-east-1",
        code="ThrottlingException",
        message="Rate exceeded",
    )
    config = org_config(org, include_accounts=[a1])
    config["max_attempts"] = 2
    (always,) = discover(config)
    region = scopes(always)[("sagemaker", "estate", a1, "us-east-1")]
    assert not region.ok
    assert region.error == (
        "managed MLflow: throttled (ThrottlingException on ListMlflowTrackingServers after 2 attempts)"
    )
    assert [(f.item, f.kind) for f in always.failures] == [(f"{a1}/us-east-1", "throttled")]
    # The usage finding of that region and the other region's App still register.
    assert {f.key for f in always.findings} == {f"{a1}/us-east-1", org.arns["team-a-app"]}


def test_access_denied_in_one_account_fails_that_account_only(org_world: Org) -> None:
    org = org_world
    a2 = org.accounts["A2"]
    org.moto.fake(
        "fault",
        action="SageMaker.ListMlflowTrackingServers",
        account=a2,
        code="AccessDeniedException",
        message=f"User: arn:aws:sts::{a2}:assumed-role/{MEMBER_ROLE}/mlsvc-discover is not authorized",
    )
    (result,) = discover(org_config(org))
    failed = {f.item: f for f in result.failures}
    assert {f"{a2}/us-east-1", f"{a2}/eu-west-1"} <= set(failed)
    assert failed[f"{a2}/eu-west-1"].kind == "access_denied"
    assert failed[f"{a2}/eu-west-1"].reason.startswith("managed MLflow: AccessDeniedException")
    assert set(mlflow_findings(result)) == {org.arns[n] for n in ("team-a", "team-a-app", "sandbox-server")}


def test_sagemaker_usage_and_managed_mlflow_switch_independently(org_world: Org) -> None:
    org = org_world
    a1 = org.accounts["A1"]
    only_mlflow = {**org_config(org, include_accounts=[a1]), "sagemaker_usage": False}
    (result,) = discover(only_mlflow)
    assert {f.kind for f in result.findings} == {ServiceType.MLFLOW}
    only_usage = {**org_config(org, include_accounts=[a1]), "managed_mlflow": {"enabled": False}}
    (result,) = discover(only_usage)
    assert {f.kind for f in result.findings} == {ServiceType.SAGEMAKER}
    calls = org.moto.fake("stats")["calls"]
    assert calls.get(f"SageMaker.ListModels {a1} us-east-1") == 1  # only the second run listed models


# --- end to end, through the CLI -------------------------------------------------------------------


def test_organization_example_end_to_end_registers_exactly_the_estate_and_sync_follows_it(
    org_world: Org,
    om_standin: OpenMetadataStandIn,
    om_token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    org = org_world
    ids = org.accounts
    example = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "organization.example.yaml").read_text())
    estate = example["discoverers"][0]
    assert estate["type"] == "sagemaker"
    estate["endpoint_url"] = org.moto.url
    estate["regions"] = REGIONS
    estate["organization"].update(
        role_arn=f"arn:aws:iam::{DEFAULT_ACCOUNT}:role/{READER_ROLE}",
        role_arn_template=f"arn:{{partition}}:iam::{{account_id}}:role/{MEMBER_ROLE}",
        exclude_ous=[org.ous["sandbox"]],
    )
    example.update(owner_id="org", policy="sync", stale_after=1, max_delete_fraction=1.0)
    example["server"] = {"enabled": False}
    # Each `--once` is a new process: the scopes of earlier cycles live in the state file.
    example["state"] = {"path": str(tmp_path / "state.json")}
    path = tmp_path / "org.yaml"
    path.write_text(yaml.safe_dump(example), encoding="utf-8")
    monkeypatch.setenv("OPENMETADATA_HOST", om_standin.base_url)
    monkeypatch.setenv("OPENMETADATA_JWT_TOKEN", om_token)
    monkeypatch.setenv("MLSVC_MEMBER_EXTERNAL_ID", MEMBER_EXTERNAL_ID)

    def cycle() -> tuple[int, dict[str, Any]]:
        code = main(["discover", "--once", "--config", str(path), "--output", "json"])
        return code, json.loads(capsys.readouterr().out)

    code, report = cycle()
    assert code == 1  # A4 has no role: a partial failure
    live = {n: s for n, s in om_standin.services.items() if not s.get("deleted")}
    expected = {
        f"sagemaker-mlflow-{ids['A1']}-us-east-1-team-a": org.arns["team-a"],
        f"sagemaker-mlflow-app-{ids['A1']}-eu-west-1-team-a-app": org.arns["team-a-app"],
        f"sagemaker-mlflow-{ids['A2']}-eu-west-1-paused": org.arns["paused"],
    }
    assert {n: s["serviceType"] for n, s in live.items()} == {
        **dict.fromkeys(expected, "Mlflow"),
        f"sagemaker-{ids['A1']}-us-east-1": "SageMaker",
    }
    for name, arn in expected.items():
        config = live[name]["connection"]["config"]
        assert config == {"type": "Mlflow", "trackingUri": arn, "registryUri": arn}
    assert {f["item"]: f["kind"] for f in report["failures"]} == {
        f"arn:aws:iam::{ids['A4']}:role/{MEMBER_ROLE}": "access_denied"
    }
    assert MEMBER_EXTERNAL_ID not in json.dumps(report)

    # Between cycles: a server is deleted, A2 is suspended, and the organization can no longer be
    # listed for one cycle (nothing may be deleted then), then can again.
    org.moto.fake("delete", kind="tracking-server", account=ids["A1"], region="us-east-1", name="team-a")
    org.moto.client("organizations").close_account(AccountId=ids["A2"])
    # exclude_ous makes the agent walk the OU tree, which starts with ListRoots.
    org.moto.fake("fault", action="Organizations.ListRoots", code="AccessDeniedException", message="denied", times=1)
    code, report = cycle()
    assert code == 1
    assert report["failures"][0]["item"] == "organization"
    assert set(live) == {n for n, s in om_standin.services.items() if not s.get("deleted")}  # nothing deleted

    code, report = cycle()
    now_live = {n for n, s in om_standin.services.items() if not s.get("deleted")}
    assert now_live == {
        f"sagemaker-mlflow-app-{ids['A1']}-eu-west-1-team-a-app",
        f"sagemaker-{ids['A1']}-us-east-1",
    }


def test_an_aws_cn_account_is_reached_in_its_own_partition(moto_server: MotoServer) -> None:
    moto_server.require_auth(float("inf"))
    moto_server.reset()
    account = "555566667777"
    arn = moto_server.fake("tracking-server", account=account, region="cn-north-1", name="cn-server")["arn"]
    config = {
        "type": "sagemaker",
        "name": "china",
        "endpoint_url": moto_server.url,
        "regions": ["cn-north-1"],
        "accounts": [{"role_arn": f"arn:aws-cn:iam::{account}:role/{MEMBER_ROLE}"}],
    }
    (result,) = discover(config)
    assert result.ok, result.failures
    assert arn == f"arn:aws-cn:sagemaker:cn-north-1:{account}:mlflow-tracking-server/cn-server"
    assert set(mlflow_findings(result)) == {arn}
    calls = moto_server.fake("stats")["calls"]
    assert any(k.startswith("STS.AssumeRole") and k.endswith(" cn-north-1") for k in calls), calls


def test_the_fake_holds_requests_and_answers_to_botocores_model() -> None:
    from testing.aws_fake import ModelViolation, check_request, check_response

    good = {
        "TrackingServerSummaries": [
            {
                "TrackingServerArn": "arn:aws:sagemaker:us-east-1:111111111111:mlflow-tracking-server/a",
                "TrackingServerName": "a",
                "TrackingServerStatus": "Stopped",
                "CreationTime": 1764400000.0,
            }
        ]
    }
    check_response("ListMlflowTrackingServers", good)
    bad_status = {"TrackingServerSummaries": [{**good["TrackingServerSummaries"][0], "TrackingServerStatus": "Gone"}]}
    with pytest.raises(ModelViolation, match="is not one of"):
        check_response("ListMlflowTrackingServers", bad_status)
    with pytest.raises(ModelViolation, match="not a member"):
        check_response("ListMlflowApps", {"Apps": []})
    with pytest.raises(ModelViolation, match=r"outside 1\.\.100"):
        check_request("ListMlflowTrackingServers", {"MaxResults": 101})
