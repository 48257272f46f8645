"""AWS Organizations as an account source: which member accounts to look at, every cycle.

Public seam:

- :class:`OrganizationConfig`: how to reach the management (or delegated-administrator) account
  (the :class:`~mlsvc_discover.aws.accounts.AwsCredentialsConfig` fields), which accounts to
  keep (OU and account include/exclude lists), and how to reach each member (a role name or an
  ARN template, an external id).
- :func:`list_member_accounts`: blocking; lists the organization's accounts (paginated
  ``ListAccounts``, or a recursive walk of ``ListRoots`` / ``ListOrganizationalUnitsForParent`` /
  ``ListAccountsForParent`` when OU lists are set), keeps the active ones, applies the filters
  and returns :class:`MemberAccount` records. Raises
  :class:`~mlsvc_discover.aws.errors.AwsProbeError` when the organization cannot be listed.
- :func:`account_is_active`: ``State == ACTIVE``; ``Status`` only when ``State`` is absent
  (AWS retires ``Status`` on 2026-09-09).
- :func:`partition_of_region` and :func:`member_role_arn`.
- :data:`ORGANIZATIONS_OPERATIONS`: every Organizations operation this module calls (the README's
  IAM policy is checked against it).

Accounts are listed afresh each cycle, so accounts added to the organization are looked at on
the next cycle and suspended or closed ones are dropped, without a restart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, field_validator, model_validator

from mlsvc_discover.aws.accounts import AwsCredentialsConfig, check_external_id, check_session_name
from mlsvc_discover.aws.errors import translate_aws_error
from mlsvc_discover.aws.regions import PARTITION_HOME
from mlsvc_discover.discoverers.base import ServiceMetadata

if TYPE_CHECKING:
    from botocore.client import BaseClient

__all__ = [
    "ORGANIZATIONS_OPERATIONS",
    "MemberAccount",
    "OrganizationConfig",
    "account_is_active",
    "list_member_accounts",
    "member_role_arn",
    "partition_of_region",
]

ORGANIZATIONS_OPERATIONS = ("ListAccounts", "ListRoots", "ListOrganizationalUnitsForParent", "ListAccountsForParent")

_ACCOUNT_ID_RE = re.compile(r"^\d{12}$")
# A root (r-) or an OU (ou-<root part>-<ou part>), as Organizations writes them.
_PARENT_ID_RE = re.compile(r"^(r-[0-9a-z]{4,32}|ou-[0-9a-z]{4,32}-[a-z0-9]{8,32})$")
_ROLE_NAME_RE = re.compile(r"^[\w+=,.@/-]{1,512}$", re.ASCII)
_TEMPLATE_FIELDS = frozenset({"partition", "account_id"})
_PAGE_SIZE = 20  # the largest MaxResults Organizations' list calls accept


def partition_of_region(region: str | None) -> str:
    """The partition a region belongs to (``aws`` when unknown)."""
    if region and region.startswith("cn-"):
        return "aws-cn"
    if region and region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


class OrganizationConfig(AwsCredentialsConfig):
    """The accounts of one AWS organization, listed every cycle.

    The credentials fields (``profile``, ``role_arn``, ``external_id``, ``session_name``) reach
    the management account or a delegated administrator for Organizations; every active member
    account is then reached through ``member_role_name`` or ``role_arn_template``.
    """

    include_ous: list[str] = Field(
        default_factory=list,
        description="Only accounts under these OUs or roots (ids such as `ou-ab12-cdef3456` or `r-ab12`), "
        "at any depth; empty = the whole organization (combined with include_accounts: either matches).",
    )
    exclude_ous: list[str] = Field(
        default_factory=list, description="Leave out accounts under these OUs (at any depth); wins over include_ous."
    )
    include_accounts: list[str] = Field(
        default_factory=list, description="Only these account ids (12 digits), plus those under include_ous."
    )
    exclude_accounts: list[str] = Field(
        default_factory=list, description="Leave out these account ids (12 digits); wins over every include."
    )
    member_role_name: str | None = Field(
        default=None,
        description="Name (with path, if any) of the role assumed in every member account, e.g. `mlsvc-discover`; "
        "the same as role_arn_template `arn:{partition}:iam::{account_id}:role/<name>`.",
    )
    role_arn_template: str | None = Field(
        default=None,
        description="ARN of the role assumed in each member account, with `{partition}` and `{account_id}`, "
        "e.g. `arn:{partition}:iam::{account_id}:role/mlsvc-discover`.",
    )
    member_external_id: SecretStr | None = Field(
        default=None, description="ExternalId the member roles' trust policies require. Secret."
    )
    member_session_name: str = Field(
        default="mlsvc-discover", description="RoleSessionName used in member accounts; shows in their CloudTrail."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels for name and metadata templates of these accounts' services."
    )
    metadata: ServiceMetadata | None = Field(
        default=None, description="Metadata for these accounts' services, overriding the discoverer's `defaults`."
    )

    @field_validator("include_ous", "exclude_ous")
    @classmethod
    def _check_parents(cls, value: list[str]) -> list[str]:
        for i, parent in enumerate(value):
            if not _PARENT_ID_RE.fullmatch(parent):
                raise ValueError(f"item {i}: {parent!r} is not an OU or root id; write e.g. ou-ab12-cdef3456 or r-ab12")
        return list(dict.fromkeys(value))

    @field_validator("include_accounts", "exclude_accounts")
    @classmethod
    def _check_account_ids(cls, value: list[str]) -> list[str]:
        for i, account in enumerate(value):
            if not _ACCOUNT_ID_RE.fullmatch(str(account)):
                raise ValueError(f"item {i}: {account!r} is not an account id; write its 12 digits, in quotes")
        return list(dict.fromkeys(value))

    @field_validator("member_role_name")
    @classmethod
    def _check_role_name(cls, value: str | None) -> str | None:
        if value is not None and not _ROLE_NAME_RE.fullmatch(value.strip("/")):
            raise ValueError(
                f"{value!r} is not an IAM role name; use letters, digits and + = , . @ _ - (and / for paths)"
            )
        return value

    @field_validator("role_arn_template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        fields = set(re.findall(r"\{([^{}]*)\}", value))
        if "account_id" not in fields or fields - _TEMPLATE_FIELDS:
            raise ValueError(
                f"{value!r}: the template must contain {{account_id}} and may contain {{partition}}, nothing else; "
                "e.g. arn:{partition}:iam::{account_id}:role/mlsvc-discover"
            )
        sample = value.format(partition="aws", account_id="123456789012")
        if not re.fullmatch(r"arn:aws:iam::123456789012:role/[\w+=,.@/-]{1,512}", sample, re.ASCII):
            raise ValueError(
                f"{value!r} does not give an IAM role ARN; "
                "e.g. arn:{partition}:iam::{account_id}:role/mlsvc-discover"
            )
        return value

    @field_validator("member_external_id")
    @classmethod
    def _check_member_external_id(cls, value: SecretStr | None) -> SecretStr | None:
        return check_external_id(value, key="member_external_id")

    @field_validator("member_session_name")
    @classmethod
    def _check_member_session_name(cls, value: str) -> str:
        return check_session_name(value)

    @model_validator(mode="after")
    def _one_way_into_members(self) -> OrganizationConfig:
        if (self.member_role_name is None) == (self.role_arn_template is None):
            raise ValueError(
                "set exactly one of member_role_name (e.g. mlsvc-discover) and role_arn_template "
                "(e.g. arn:{partition}:iam::{account_id}:role/mlsvc-discover)"
            )
        both = set(self.include_accounts) & set(self.exclude_accounts)
        if both:
            raise ValueError(f"account(s) {', '.join(sorted(both))} are both included and excluded; keep one")
        return self

    @property
    def walks_ous(self) -> bool:
        return bool(self.include_ous or self.exclude_ous)

    def role_arn_for(self, account_id: str, partition: str) -> str:
        return member_role_arn(self.role_arn_template, self.member_role_name, account_id, partition)


def member_role_arn(template: str | None, role_name: str | None, account_id: str, partition: str) -> str:
    if template is None:
        template = f"arn:{{partition}}:iam::{{account_id}}:role/{(role_name or '').strip('/')}"
    return template.format(partition=partition, account_id=account_id)


def account_is_active(account: Mapping[str, Any]) -> bool:
    """``State == ACTIVE``; the older ``Status`` decides only when ``State`` is absent."""
    state = account.get("State")
    if state is None:
        state = account.get("Status")
    return state == "ACTIVE"


@dataclass(frozen=True)
class MemberAccount:
    """One active member account selected by the filters."""

    account_id: str
    name: str
    partition: str
    parents: tuple[str, ...]  # root and OU ids above it, nearest last; empty without an OU walk


def _pages(client: BaseClient, operation: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
    paginator = client.get_paginator(operation)
    for page in paginator.paginate(PaginationConfig={"PageSize": _PAGE_SIZE}, **params):
        yield from page.get(key) or []


def _partition_from_arn(arn: str | None, default: str) -> str:
    parts = (arn or "").split(":")
    return parts[1] if len(parts) > 1 and parts[0] == "arn" and parts[1] else default


def _walk(client: BaseClient, exclude: frozenset[str]) -> Iterator[tuple[dict[str, Any], tuple[str, ...]]]:
    """Every account with its ancestors, depth first; excluded OUs are not entered at all."""
    stack: list[tuple[str, tuple[str, ...]]] = [
        (str(root["Id"]), (str(root["Id"]),)) for root in _pages(client, "list_roots", "Roots")
    ]
    while stack:
        parent, path = stack.pop()
        if parent in exclude:
            continue
        for account in _pages(client, "list_accounts_for_parent", "Accounts", ParentId=parent):
            yield account, path
        for ou in _pages(client, "list_organizational_units_for_parent", "OrganizationalUnits", ParentId=parent):
            stack.append((str(ou["Id"]), (*path, str(ou["Id"]))))


def select(config: OrganizationConfig, account_id: str, parents: tuple[str, ...]) -> bool:
    """Whether the filters keep an (active) account; pure."""
    if account_id in config.exclude_accounts or set(parents) & set(config.exclude_ous):
        return False
    if not config.include_ous and not config.include_accounts:
        return True
    return account_id in config.include_accounts or bool(set(parents) & set(config.include_ous))


def list_member_accounts(
    client_for: Callable[[str], BaseClient],
    config: OrganizationConfig,
    *,
    partition: str,
    secrets: list[str],
) -> list[MemberAccount]:
    """The organization's active accounts that the filters keep, sorted by id. Blocking.

    ``client_for(region)`` gives an Organizations client of the management account;
    ``partition`` is the one the credentials belong to (accounts' ARNs win when present).
    Raises :class:`~mlsvc_discover.aws.errors.AwsProbeError` when any listing fails: a partial
    list would make every account left out look gone.
    """
    try:
        client = client_for(PARTITION_HOME.get(partition, "us-east-1"))
        if config.walks_ous:
            listed = list(_walk(client, frozenset(config.exclude_ous)))
        else:
            listed = [(account, ()) for account in _pages(client, "list_accounts", "Accounts")]
    except Exception as exc:
        raise translate_aws_error(exc, where="cannot list the organization's accounts", secrets=secrets) from exc
    found: dict[str, MemberAccount] = {}
    for account, parents in listed:
        account_id = str(account.get("Id", ""))
        if not _ACCOUNT_ID_RE.fullmatch(account_id) or not account_is_active(account):
            continue
        if select(config, account_id, parents):
            found[account_id] = MemberAccount(
                account_id=account_id,
                name=str(account.get("Name") or ""),
                partition=_partition_from_arn(account.get("Arn"), partition),
                parents=parents,
            )
    return [found[k] for k in sorted(found)]
