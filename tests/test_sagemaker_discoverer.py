"""The ``sagemaker`` discoverer against a real ``moto_server`` (and a fault proxy in front of it).

What moto can do itself is done by moto: assuming roles into separate accounts, named profiles,
IAM enforcement (AccessDenied, unknown keys), region listings. What it cannot (throttling, a
region that refuses the credentials) comes from ``aws_fault_proxy``, a loopback HTTP server that
answers those calls with AWS-shaped errors, so botocore's real parsing and retrying still run.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from pydantic import SecretStr

from mlsvc_discover._errors import ConfigError
from mlsvc_discover.config import parse_config
from mlsvc_discover.discoverers.base import DiscoveryResult, Finding, ScopeOutcome, ServiceType
from mlsvc_discover.discoverers.sagemaker import SageMakerConfig, SageMakerDiscoverer
from testing.moto_fixtures import (
    ACCOUNT_A,
    ACCOUNT_B,
    DEFAULT_ACCOUNT,
    PROFILE,
    PROFILE_KEY_ID,
    PROFILE_SECRET,
    AwsFaultProxy,
    AwsWorld,
    IamEnforced,
    MotoServer,
    seed_models,
)

pytestmark = pytest.mark.timeout(60)

OWNER = "6f1c2a9e-8d4b-4c57-9a0e-3b2d1f0e9c8a"


def make_config(**overrides: Any) -> SageMakerConfig:
    raw: dict[str, Any] = {"type": "sagemaker", "name": "sm", "regions": ["us-east-1", "eu-west-1"], **overrides}
    return SageMakerConfig.model_validate(raw)


def world_config(world: AwsWorld, **overrides: Any) -> SageMakerConfig:
    accounts = [{"role_arn": world.role_arns[ACCOUNT_A]}, {"role_arn": world.role_arns[ACCOUNT_B]}]
    return make_config(**{"endpoint_url": world.endpoint_url, "accounts": accounts, **overrides})


def discover(config: SageMakerConfig, cycles: int = 1) -> tuple[SageMakerDiscoverer, list[DiscoveryResult]]:
    async def run() -> tuple[SageMakerDiscoverer, list[DiscoveryResult]]:
        discoverer = SageMakerDiscoverer(config)
        try:
            return discoverer, [await discoverer.discover() for _ in range(cycles)]
        finally:
            await discoverer.aclose()

    return asyncio.run(asyncio.wait_for(run(), timeout=45))


def discover_once(config: SageMakerConfig) -> DiscoveryResult:
    return discover(config)[1][0]


def by_key(result: DiscoveryResult) -> dict[str, Finding]:
    return {f.key: f for f in result.findings}


def scopes(result: DiscoveryResult) -> dict[tuple[str, ...], ScopeOutcome]:
    return {s.scope: s for s in result.scopes}


# --- discovery ---------------------------------------------------------------------------------


def test_two_accounts_two_regions_find_exactly_the_pairs_in_use(aws_world: AwsWorld) -> None:
    config = world_config(
        aws_world,
        defaults={"description": "SageMaker in {account}/{region}", "tags": ["Tier.Gold"]},
        name_template="sagemaker-{account}-{region}",
        accounts=[
            {"role_arn": aws_world.role_arns[ACCOUNT_A], "labels": {"team": "churn"}},
            {
                "role_arn": aws_world.role_arns[ACCOUNT_B],
                "session_name": "catalog-sync",
                "external_id": "ext-id-0123",
                "metadata": {"owners": [{"id": OWNER, "type": "team"}], "tags": ["Tier.Silver"]},
            },
        ],
    )
    result = discover_once(config)

    assert result.ok, result
    found = by_key(result)
    assert set(found) == {f"{a}/{r}" for a, r in aws_world.in_use}
    assert f"{ACCOUNT_A}/eu-west-1" not in found  # empty: not registered by default

    a = found[f"{ACCOUNT_A}/us-east-1"]
    assert a.kind is ServiceType.SAGEMAKER
    assert a.source == "sm"
    assert a.scope == ("sagemaker", "sm", ACCOUNT_A, "us-east-1")
    assert a.attributes == {
        "account_id": ACCOUNT_A,
        "region": "us-east-1",
        "role_arn": aws_world.role_arns[ACCOUNT_A],
        "session_name": "mlsvc-discover",
        "profile": None,
        "endpoint_url": aws_world.endpoint_url,
        "external_id_set": False,
        "models": 2,
        "model_package_groups": 0,
        "endpoints": 0,
        "counts_complete": True,
    }
    assert a.labels == {"account": ACCOUNT_A, "region": "us-east-1", "discoverer": "sm", "team": "churn"}
    assert a.metadata.description == "SageMaker in {account}/{region}"
    assert a.metadata.tags == ("Tier.Gold",)
    assert a.name is None
    assert a.name_template == "sagemaker-{account}-{region}"

    b_pkg, b_endpoint = found[f"{ACCOUNT_B}/us-east-1"], found[f"{ACCOUNT_B}/eu-west-1"]
    assert (b_pkg.attributes["model_package_groups"], b_pkg.attributes["models"]) == (1, 0)
    assert (b_endpoint.attributes["endpoints"], b_endpoint.attributes["models"]) == (1, 0)
    assert b_pkg.attributes["session_name"] == "catalog-sync"
    assert b_pkg.attributes["external_id_set"] is True
    assert "access_keys" not in b_pkg.attributes
    # The account's metadata replaces the defaults field by field.
    assert b_pkg.metadata.tags == ("Tier.Silver",)
    assert b_pkg.metadata.description == "SageMaker in {account}/{region}"
    assert b_pkg.metadata.owners is not None
    assert [(str(o.id), o.type) for o in b_pkg.metadata.owners] == [(OWNER, "team")]

    assert set(scopes(result)) == {
        ("sagemaker", "sm"),
        ("sagemaker", "sm", ACCOUNT_A),
        ("sagemaker", "sm", ACCOUNT_B),
        *(("sagemaker", "sm", acct, region) for acct, region in aws_world.contents),
    }
    assert all(s.ok for s in result.scopes)
    assert not result.failures


def test_register_empty_reports_all_four_pairs_with_zero_counts_for_the_empty_one(aws_world: AwsWorld) -> None:
    result = discover_once(world_config(aws_world, register_empty=True))

    found = by_key(result)
    assert set(found) == {f"{a}/{r}" for a, r in aws_world.contents}
    empty = found[f"{ACCOUNT_A}/eu-west-1"].attributes
    assert (empty["models"], empty["model_package_groups"], empty["endpoints"]) == (0, 0, 0)


def test_explicit_name_is_carried_for_a_single_region_account(aws_world: AwsWorld) -> None:
    config = world_config(
        aws_world,
        accounts=[{"role_arn": aws_world.role_arns[ACCOUNT_B], "regions": ["eu-west-1"], "name": "ranker-prod"}],
    )
    result = discover_once(config)

    assert [(f.key, f.name) for f in result.findings] == [(f"{ACCOUNT_B}/eu-west-1", "ranker-prod")]
    assert set(scopes(result)) == {
        ("sagemaker", "sm"),
        ("sagemaker", "sm", ACCOUNT_B),
        ("sagemaker", "sm", ACCOUNT_B, "eu-west-1"),
    }


def test_regions_all_looks_at_sagemaker_regions_the_account_has_enabled(
    aws_world: AwsWorld, moto_server: MotoServer
) -> None:
    import botocore.session

    offered = set(botocore.session.get_session().get_available_regions("sagemaker"))
    described = moto_server.client("ec2").describe_regions(AllRegions=False)["Regions"]
    enabled = {r["RegionName"] for r in described if r.get("OptInStatus") != "not-opted-in"}
    expected = offered & enabled
    # The intersection is not trivial: moto lists opt-in regions as "not-opted-in" even with
    # AllRegions=False, and other partitions' regions SageMaker's list here does not have.
    assert "ap-east-1" in offered - expected
    assert "us-gov-west-1" in enabled - expected
    assert {"us-east-1", "eu-west-1"} <= expected

    config = world_config(
        aws_world,
        regions="all",
        accounts=[{"role_arn": aws_world.role_arns[ACCOUNT_A]}],
        max_concurrency_per_account=16,
    )
    started = time.monotonic()
    result = discover_once(config)
    elapsed = time.monotonic() - started

    region_scopes = {s.scope[3] for s in result.scopes if len(s.scope) == 4}
    assert region_scopes == expected
    assert all(s.ok for s in result.scopes)
    assert [f.key for f in result.findings] == [f"{ACCOUNT_A}/us-east-1"]
    assert elapsed < 20, f"regions: all over {len(expected)} regions took {elapsed:.1f}s"


def test_profile_account_uses_the_profiles_credentials_and_reports_the_profile(
    aws_world: AwsWorld, moto_server: MotoServer
) -> None:
    # Keys moto does not know act as its default account.
    seed_models(moto_server, None, "us-east-1", ["default-account-model"])
    config = world_config(
        aws_world,
        regions=["us-east-1"],
        accounts=[
            {"profile": PROFILE, "send_access_keys": True},
            {"profile": PROFILE, "role_arn": aws_world.role_arns[ACCOUNT_A]},
        ],
    )
    result = discover_once(config)

    assert result.ok, result
    found = by_key(result)
    assert set(found) == {f"{DEFAULT_ACCOUNT}/us-east-1", f"{ACCOUNT_A}/us-east-1"}
    own = found[f"{DEFAULT_ACCOUNT}/us-east-1"].attributes
    assert (own["profile"], own["role_arn"], own["session_name"], own["models"]) == (PROFILE, None, None, 1)
    # The environment holds other keys ("testing"): these prove the profile's were used.
    assert own["access_keys"]["access_key_id"] == PROFILE_KEY_ID
    assert own["access_keys"]["secret_access_key"].get_secret_value() == PROFILE_SECRET
    assert own["access_keys"]["session_token"] is None
    via_role = found[f"{ACCOUNT_A}/us-east-1"].attributes
    assert (via_role["profile"], via_role["role_arn"]) == (PROFILE, aws_world.role_arns[ACCOUNT_A])
    assert ("sagemaker", "sm", DEFAULT_ACCOUNT) in scopes(result)


def test_access_denied_on_assume_role_fails_only_that_account(
    aws_world: AwsWorld, aws_iam_enforced: IamEnforced
) -> None:
    third = "arn:aws:iam::333333333333:role/mlsvc-discover"
    config = world_config(
        aws_world,
        accounts=[
            {"role_arn": aws_world.role_arns[ACCOUNT_A], "profile": aws_iam_enforced.allowed_profile},
            {"role_arn": aws_world.role_arns[ACCOUNT_B], "profile": aws_iam_enforced.denied_profile},
            {"role_arn": third, "profile": aws_iam_enforced.unknown_profile},
        ],
    )
    result = discover_once(config)

    assert [f.key for f in result.findings] == [f"{ACCOUNT_A}/us-east-1"]
    outcome = scopes(result)
    assert outcome[("sagemaker", "sm")].ok
    assert outcome[("sagemaker", "sm", ACCOUNT_A)].ok
    denied = outcome[("sagemaker", "sm", ACCOUNT_B)]
    assert not denied.ok
    assert denied.error is not None
    assert denied.error.startswith(f"cannot assume role {aws_world.role_arns[ACCOUNT_B]}: AccessDenied")
    unknown = outcome[("sagemaker", "sm", "333333333333")]
    assert unknown.error == f"cannot assume role {third}: credentials expired or invalid (InvalidClientTokenId)"
    failures = {f.item: f for f in result.failures}
    assert failures[f"{aws_world.role_arns[ACCOUNT_B]} (via profile iam-denied)"].kind == "access_denied"
    assert failures[f"{third} (via profile iam-unknown)"].kind == "expired_credentials"
    assert not any(len(s) == 4 and s[2] != ACCOUNT_A for s in outcome)


def test_throttled_region_fails_with_throttled_after_retries_and_others_are_found(
    aws_world: AwsWorld, aws_fault_proxy: AwsFaultProxy
) -> None:
    fault = aws_fault_proxy.fail("sagemaker", "eu-west-1", "ThrottlingException", "Rate exceeded")
    config = world_config(aws_world, endpoint_url=aws_fault_proxy.url, max_attempts=2)
    result = discover_once(config)

    assert set(by_key(result)) == {f"{ACCOUNT_A}/us-east-1", f"{ACCOUNT_B}/us-east-1"}
    outcome = scopes(result)
    for account in (ACCOUNT_A, ACCOUNT_B):
        region = outcome[("sagemaker", "sm", account, "eu-west-1")]
        assert not region.ok
        assert region.error == "throttled (ThrottlingException on ListModels after 2 attempts)"
        assert outcome[("sagemaker", "sm", account)].ok
        assert outcome[("sagemaker", "sm", account, "us-east-1")].ok
    assert outcome[("sagemaker", "sm")].ok
    assert {(f.item, f.kind) for f in result.failures} == {
        (f"{ACCOUNT_A}/eu-west-1", "throttled"),
        (f"{ACCOUNT_B}/eu-west-1", "throttled"),
    }
    assert fault.hits == 4  # botocore retried: two attempts in each of two accounts


def test_region_refusing_the_credentials_is_reported_unavailable(
    aws_world: AwsWorld, aws_fault_proxy: AwsFaultProxy
) -> None:
    # What SageMaker answers in an opt-in region the account has not enabled.
    aws_fault_proxy.fail(
        "sagemaker",
        "eu-west-1",
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
    config = world_config(aws_world, endpoint_url=aws_fault_proxy.url)
    result = discover_once(config)

    assert set(by_key(result)) == {f"{ACCOUNT_A}/us-east-1", f"{ACCOUNT_B}/us-east-1"}
    region = scopes(result)[("sagemaker", "sm", ACCOUNT_B, "eu-west-1")]
    assert region.error == (
        "region not enabled for this account or it refuses the credentials (UnrecognizedClientException on ListModels)"
    )
    assert {f.kind for f in result.failures} == {"region_unavailable"}


def test_unreachable_endpoint_fails_each_account_without_failing_the_root(moto_server: MotoServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, never listening: refused
    config = make_config(
        endpoint_url=closed,
        max_attempts=1,
        connect_timeout=1,
        accounts=[{"role_arn": f"arn:aws:iam::{ACCOUNT_A}:role/mlsvc-discover"}],
    )
    result = discover_once(config)

    assert not result.findings
    account = scopes(result)[("sagemaker", "sm", ACCOUNT_A)]
    role = f"arn:aws:iam::{ACCOUNT_A}:role/mlsvc-discover"
    assert account.error == f"cannot assume role {role}: cannot reach {closed}/ (EndpointConnectionError)"
    assert [f.kind for f in result.failures] == ["unreachable"]
    assert scopes(result)[("sagemaker", "sm")].ok  # the role ARN names the account: its scope covers it


def test_account_that_cannot_be_identified_fails_the_root_unless_its_id_was_seen_before(
    aws_world: AwsWorld, moto_server: MotoServer
) -> None:
    never = discover_once(world_config(aws_world, accounts=[{"profile": "no-such-profile"}]))
    assert not scopes(never)[("sagemaker", "sm")].ok
    assert not scopes(never)[("sagemaker", "sm", "profile no-such-profile")].ok
    assert (
        never.failures[0].reason == "cannot identify the account of profile no-such-profile: "
        "profile 'no-such-profile' is not in the AWS config files"
    )

    moto_server.write_profile("flaky", "AKIAFLAKYFLAKYFLAKY0", "flaky-secret-value-0123456789")
    config = world_config(aws_world, accounts=[{"profile": "flaky"}], register_empty=True)

    async def two_cycles() -> list[DiscoveryResult]:
        discoverer = SageMakerDiscoverer(config)
        try:
            first = await discoverer.discover()
            moto_server.remove_profile("flaky")
            return [first, await discoverer.discover()]
        finally:
            await discoverer.aclose()

    first, second = asyncio.run(asyncio.wait_for(two_cycles(), timeout=45))
    assert first.ok
    # Second cycle: the profile is gone, but the id from the first cycle keeps the scope precise.
    assert scopes(second)[("sagemaker", "sm")].ok
    assert not scopes(second)[("sagemaker", "sm", DEFAULT_ACCOUNT)].ok


def test_two_entries_reaching_one_account_report_each_region_once(aws_world: AwsWorld) -> None:
    role = aws_world.role_arns[ACCOUNT_A]
    config = world_config(
        aws_world,
        accounts=[{"role_arn": role, "regions": ["us-east-1"]}, {"role_arn": role, "profile": PROFILE}],
    )
    result = discover_once(config)

    assert [f.key for f in result.findings] == [f"{ACCOUNT_A}/us-east-1"]
    assert [(s.item, s.reason) for s in result.ignored] == [
        (f"{role} (via profile {PROFILE})", f"{ACCOUNT_A}/us-east-1 is also reached by accounts[0]; reported once")
    ]
    reported = [s.scope for s in result.scopes]
    assert len(reported) == len(set(reported))
    assert set(reported) == {
        ("sagemaker", "sm"),
        ("sagemaker", "sm", ACCOUNT_A),
        ("sagemaker", "sm", ACCOUNT_A, "us-east-1"),
        ("sagemaker", "sm", ACCOUNT_A, "eu-west-1"),
    }


def test_a_failing_entry_keeps_its_account_scope_failed_when_another_entry_reaches_it(
    aws_world: AwsWorld,
) -> None:
    role = aws_world.role_arns[ACCOUNT_A]
    config = world_config(aws_world, accounts=[{"role_arn": role}, {"role_arn": role, "profile": "no-such-profile"}])
    result = discover_once(config)

    assert [f.key for f in result.findings] == [f"{ACCOUNT_A}/us-east-1"]
    account = scopes(result)[("sagemaker", "sm", ACCOUNT_A)]
    assert not account.ok
    assert account.error is not None
    assert account.error.startswith(f"cannot assume role {role}: profile 'no-such-profile'")
    assert scopes(result)[("sagemaker", "sm")].ok


# --- secrets -----------------------------------------------------------------------------------


def test_access_keys_only_with_send_access_keys_and_never_in_text(aws_world: AwsWorld) -> None:
    config = world_config(
        aws_world,
        accounts=[
            {"role_arn": aws_world.role_arns[ACCOUNT_A], "send_access_keys": True, "external_id": "ext-secret-42"},
            {"role_arn": aws_world.role_arns[ACCOUNT_B]},
        ],
    )
    discoverer, (result,) = discover(config)

    found = by_key(result)
    keys = found[f"{ACCOUNT_A}/us-east-1"].attributes["access_keys"]
    assert keys["access_key_id"].startswith("ASIA")
    assert isinstance(keys["secret_access_key"], SecretStr)
    assert isinstance(keys["session_token"], SecretStr)
    assert all("access_keys" not in f.attributes for k, f in found.items() if k.startswith(ACCOUNT_B))
    secret, token = keys["secret_access_key"].get_secret_value(), keys["session_token"].get_secret_value()
    text = str(result) + repr(result) + str(config) + repr(config)
    for value in (secret, token, "ext-secret-42"):
        assert value not in text
    assert {secret, token, "ext-secret-42"} <= set(discoverer.secrets())


# --- configuration -----------------------------------------------------------------------------


def config_error(item: dict[str, Any]) -> ConfigError:
    base = {"type": "sagemaker", "name": "sm", "regions": ["us-east-1"], "accounts": [{}]}
    with pytest.raises(ConfigError) as info:
        parse_config({"discoverers": [{**base, **item}]}, env={})
    return info.value


def test_bad_role_arn_names_the_field_the_value_and_the_expected_form() -> None:
    err = config_error({"accounts": [{"role_arn": "arn:aws:iam::12345:role/x"}]})
    assert err.key == "discoverers[0].accounts[0].role_arn"
    assert "'arn:aws:iam::12345:role/x'" in str(err)
    assert "arn:aws:iam::<12-digit account id>:role/<name>" in str(err)


def test_bad_region_names_the_field_and_the_item() -> None:
    err = config_error({"regions": ["us-east-1", "europe"]})
    assert err.key == "discoverers[0].regions"
    assert "item 1: 'europe' is not an AWS region name" in str(err)
    assert config_error({"regions": "eu-west-1"}).key == "discoverers[0].regions"
    err = config_error({"accounts": [{"regions": ["US-EAST-1"]}]})
    assert err.key == "discoverers[0].accounts[0].regions"


def test_explicit_name_with_several_regions_is_refused_and_names_the_account() -> None:
    err = config_error({"regions": ["us-east-1", "eu-west-1"], "accounts": [{"name": "prod"}]})
    assert err.key == "discoverers[0].accounts"
    assert "accounts[0].name: an explicit name needs exactly one region" in str(err)
    assert "accounts[0].name" in str(config_error({"regions": "all", "accounts": [{"name": "prod"}]}))


def test_session_name_too_short_names_the_field() -> None:
    err = config_error({"accounts": [{"role_arn": "arn:aws:iam::123456789012:role/x", "session_name": "a"}]})
    assert err.key == "discoverers[0].accounts[0].session_name"
    assert "2 to 64 characters" in str(err)


def test_role_only_options_without_a_role_and_unknown_keys_are_refused() -> None:
    err = config_error({"accounts": [{"external_id": "some-ext-id"}]})
    assert err.key == "discoverers[0].accounts[0]"
    assert "external_id is only used with role_arn" in str(err)
    assert "some-ext-id" not in str(err)
    assert config_error({"accounts": [{"rolearn": "x"}]}).key == "discoverers[0].accounts[0].rolearn"
    assert config_error({"accounts": []}).key == "discoverers[0].accounts"
    assert config_error({"endpoint_url": "http://user:pw@moto:5000"}).key == "discoverers[0].endpoint_url"
    assert "pw" not in str(config_error({"endpoint_url": "http://user:pw@moto:5000"}))


def test_defaults_of_a_minimal_config() -> None:
    config = make_config(accounts=[{}])
    assert (config.max_concurrency_per_account, config.max_accounts_concurrency) == (4, 16)
    assert (config.connect_timeout, config.read_timeout, config.max_attempts) == (5.0, 15.0, 3)
    assert config.register_empty is False
    account = config.accounts[0]
    assert (account.role_arn, account.profile, account.session_name, account.send_access_keys) == (
        None,
        None,
        "mlsvc-discover",
        False,
    )
    assert make_config(accounts=[{}], read_timeout="1m").read_timeout == 60.0


# --- start-up cost -----------------------------------------------------------------------------


def test_importing_the_module_and_validating_a_config_does_not_import_boto3_or_botocore() -> None:
    code = textwrap.dedent(
        """
        import sys
        from mlsvc_discover.discoverers.sagemaker import SageMakerConfig, SageMakerDiscoverer
        config = SageMakerConfig.model_validate(
            {"type": "sagemaker", "name": "sm", "regions": "all", "accounts": [{}]}
        )
        SageMakerDiscoverer(config)
        print(sorted(m for m in ("boto3", "botocore") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"
