"""Least privilege: the README's IAM policies list exactly the AWS operations the code calls.

Also the pure parts of the organization source (filters, states, role templates, partitions)
and the config rules of the organization and managed-MLflow settings.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from botocore import xform_name
from botocore.loaders import create_loader
from pydantic import ValidationError

from mlsvc_discover.aws.managed_mlflow import (
    MANAGED_MLFLOW_OPERATIONS,
    PRESENT_APP_STATUSES,
    PRESENT_TRACKING_SERVER_STATUSES,
)
from mlsvc_discover.aws.organization import (
    ORGANIZATIONS_OPERATIONS,
    OrganizationConfig,
    account_is_active,
    partition_of_region,
    select,
)
from mlsvc_discover.discoverers.sagemaker import USAGE_OPERATIONS, SageMakerConfig

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"sts": "sts", "organizations": "organizations", "sagemaker": "sagemaker", "ec2": "ec2"}


def policy_actions() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Least privilege") : readme.index("### At fleet scale")]
    actions: set[str] = set()
    for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL):
        for statement in json.loads(block)["Statement"]:
            action = statement["Action"]
            actions.update([action] if isinstance(action, str) else action)
    return actions


def operations_called_by_the_code() -> set[str]:
    """``prefix:Operation`` for every botocore operation name written in src/ (snake or Camel case)."""
    loader = create_loader()
    by_name: dict[str, set[str]] = {}
    for service, prefix in SERVICES.items():
        for operation in loader.load_service_model(service, "service-2")["operations"]:
            for spelling in (operation, xform_name(operation)):
                by_name.setdefault(spelling, set()).add(f"{prefix}:{operation}")
    called: set[str] = set()
    # Only the modules that hold botocore clients: elsewhere a word like "search" (an HTML input
    # type on the status page) is not an AWS operation.
    package = ROOT / "src" / "mlsvc_discover"
    aws_modules = [*(package / "aws").rglob("*.py"), *(package / "discoverers").glob("sagemaker*.py")]
    for path in aws_modules:
        for literal in re.findall(r"[\"']([A-Za-z][A-Za-z0-9_]+)[\"']", path.read_text(encoding="utf-8")):
            called |= by_name.get(literal, set())
    return called


def test_the_readme_policy_lists_exactly_the_operations_the_code_calls() -> None:
    called = operations_called_by_the_code()
    listed = policy_actions()
    assert called - listed == set(), "called by the code but missing from the README's policies"
    assert listed - called == set(), "in the README's policies but never called: not least privilege"
    # The constants the discoverer documents itself with agree.
    assert {f"organizations:{o}" for o in ORGANIZATIONS_OPERATIONS} <= listed
    assert {f"sagemaker:{o}" for o in (*MANAGED_MLFLOW_OPERATIONS, *USAGE_OPERATIONS)} <= listed
    assert {"sts:AssumeRole", "ec2:DescribeRegions"} <= listed


def test_present_statuses_are_statuses_botocore_knows() -> None:
    shapes = create_loader().load_service_model("sagemaker", "service-2")["shapes"]
    servers = set(shapes["TrackingServerStatus"]["enum"])
    apps = set(shapes["MlflowAppStatus"]["enum"])
    assert servers >= PRESENT_TRACKING_SERVER_STATUSES
    assert apps >= PRESENT_APP_STATUSES
    assert servers - PRESENT_TRACKING_SERVER_STATUSES == {"Creating", "CreateFailed", "Deleting"}
    assert apps - PRESENT_APP_STATUSES == {"Creating", "CreateFailed", "Deleting", "Deleted"}


def test_botocore_models_state_next_to_the_retiring_status() -> None:
    account = create_loader().load_service_model("organizations", "service-2")["shapes"]["Account"]["members"]
    assert {"State", "Status"} <= set(account)


@pytest.mark.parametrize(
    ("account", "active"),
    [
        ({"State": "ACTIVE", "Status": "ACTIVE"}, True),
        ({"State": "SUSPENDED", "Status": "ACTIVE"}, False),  # State wins
        ({"State": "PENDING_CLOSURE"}, False),
        ({"State": "CLOSED"}, False),
        ({"Status": "ACTIVE"}, True),  # older answers without State
        ({"Status": "SUSPENDED"}, False),
        ({}, False),
    ],
)
def test_only_active_accounts_count_and_status_only_without_state(account: dict[str, str], active: bool) -> None:
    assert account_is_active(account) is active


def org(**fields: Any) -> OrganizationConfig:
    return OrganizationConfig.model_validate({"member_role_name": "mlsvc-discover", **fields})


def test_filters_include_at_any_depth_and_exclusions_win() -> None:
    parents = ("r-ab12", "ou-ab12-prod0001", "ou-ab12-eu000001")
    assert select(org(), "111111111111", parents)
    assert select(org(include_ous=["ou-ab12-prod0001"]), "111111111111", parents)
    assert not select(org(include_ous=["ou-ab12-dev00001"]), "111111111111", parents)
    assert select(org(include_ous=["ou-ab12-dev00001"], include_accounts=["111111111111"]), "111111111111", parents)
    assert not select(org(include_ous=["ou-ab12-prod0001"], exclude_ous=["ou-ab12-eu000001"]), "111111111111", parents)
    assert not select(org(exclude_accounts=["111111111111"]), "111111111111", parents)
    assert not select(org(include_accounts=["222222222222"]), "111111111111", ())


@pytest.mark.parametrize(
    ("fields", "arn"),
    [
        ({}, "arn:aws-cn:iam::111111111111:role/mlsvc-discover"),
        ({"member_role_name": "/team/reader"}, "arn:aws-cn:iam::111111111111:role/team/reader"),
        (
            {"member_role_name": None, "role_arn_template": "arn:{partition}:iam::{account_id}:role/x"},
            "arn:aws-cn:iam::111111111111:role/x",
        ),
    ],
)
def test_member_role_arns_follow_the_partition(fields: dict[str, Any], arn: str) -> None:
    assert org(**fields).role_arn_for("111111111111", "aws-cn") == arn


def test_partitions_come_from_regions() -> None:
    assert partition_of_region("cn-north-1") == "aws-cn"
    assert partition_of_region("us-gov-west-1") == "aws-us-gov"
    assert partition_of_region("eu-west-1") == "aws"
    assert partition_of_region(None) == "aws"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"member_role_name": None}, "set exactly one of member_role_name"),
        ({"role_arn_template": "arn:{partition}:iam::{account_id}:role/x"}, "set exactly one of member_role_name"),
        ({"member_role_name": None, "role_arn_template": "arn:aws:iam::{acct}:role/x"}, "must contain {account_id}"),
        ({"member_role_name": None, "role_arn_template": "arn:aws:iam::{account_id}:user/x"}, "IAM role ARN"),
        ({"include_ous": ["prod"]}, "is not an OU or root id"),
        ({"exclude_accounts": ["12345"]}, "is not an account id"),
        ({"include_accounts": ["111111111111"], "exclude_accounts": ["111111111111"]}, "both included and excluded"),
        ({"member_external_id": "x"}, "member_external_id must be 2 to 1224"),
        ({"colour": "blue"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_organization_settings_name_the_problem(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        org(**fields)
    assert message in str(info.value)


def test_sagemaker_config_needs_accounts_or_an_organization_and_something_to_find() -> None:
    base: dict[str, Any] = {"type": "sagemaker", "name": "s", "regions": ["us-east-1"]}
    with pytest.raises(ValidationError, match="at least 1 item in accounts, or configure organization"):
        SageMakerConfig.model_validate(base)
    ok = SageMakerConfig.model_validate({**base, "organization": {"member_role_name": "r"}})
    assert ok.managed_mlflow.enabled
    assert ok.sagemaker_usage
    with pytest.raises(ValidationError, match="switch one on"):
        SageMakerConfig.model_validate(
            {**base, "accounts": [{}], "sagemaker_usage": False, "managed_mlflow": {"enabled": False}}
        )
    with pytest.raises(ValidationError, match="uses placeholder"):
        SageMakerConfig.model_validate({**base, "accounts": [{}], "managed_mlflow": {"name_template": "m-{}"}})
