"""AWS regions: validating configured region lists, and resolving ``all``.

Public seam:

- :data:`RegionsSpec`: a region list or ``"all"``; :func:`check_regions`, the ``mode="before"``
  validator of such a field (one readable line per mistake).
- :data:`PARTITION_HOME`: where STS and EC2 are asked when no region is configured.
- :func:`enabled_regions`: ``all`` resolved for one account and service, i.e. the regions that
  offer the service in the partition (botocore's endpoint data) intersected with the regions
  the account has enabled (EC2 ``DescribeRegions``), in AWS's order. Blocking.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from mlsvc_discover.aws.errors import translate_aws_error
from mlsvc_discover.aws.session import AwsClients, call

if TYPE_CHECKING:
    from botocore.session import Session

__all__ = ["PARTITION_HOME", "REGION_RE", "RegionsSpec", "check_regions", "enabled_regions"]

REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")

# One per partition because a partition's credentials are worthless in another's endpoints.
PARTITION_HOME = {"aws": "us-east-1", "aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}

RegionsSpec = list[str] | Literal["all"]


def check_regions(value: Any) -> Any:
    """Check region names before the union is tried, so the error is one readable line."""
    if value == "all" or value is None:
        return value
    if isinstance(value, str):
        raise ValueError(f"{value!r} is not a list of regions; write [{value}] or `all`")
    if not isinstance(value, list | tuple):
        raise ValueError("expected a list of region names such as [us-east-1, eu-west-1], or `all`")
    if not value:
        raise ValueError("the region list is empty; list at least one region or write `all`")
    seen: list[str] = []
    for i, region in enumerate(value):
        if not isinstance(region, str) or not REGION_RE.fullmatch(region):
            raise ValueError(f"item {i}: {region!r} is not an AWS region name; write e.g. us-east-1 or eu-west-1")
        if region not in seen:
            seen.append(region)
    return seen


def enabled_regions(
    *,
    aws: AwsClients,
    session: Session,
    lock: threading.Lock,
    home: str,
    partition: str,
    account_id: str,
    secrets: Iterable[str],
    service: str,
) -> list[str]:
    """Regions offering ``service`` in the partition that the account has enabled, in AWS's order.

    Raises :class:`~mlsvc_discover.aws.errors.AwsProbeError` when the enabled regions cannot be read.
    """
    offered = session.get_available_regions(service, partition_name=partition)
    try:
        ec2 = aws.client(session, lock, "ec2", home)
        try:
            answer = call(ec2, "describe_regions", AllRegions=False)
        finally:
            ec2.close()
    except Exception as exc:
        where = f"cannot list the enabled regions of account {account_id}"
        raise translate_aws_error(exc, where=where, secrets=secrets) from exc
    # AllRegions=False already leaves disabled opt-in regions out on AWS; the status check
    # also holds where an implementation (moto) returns every region regardless.
    enabled = {r["RegionName"] for r in answer.get("Regions", []) if r.get("OptInStatus") != "not-opted-in"}
    return [r for r in offered if r in enabled]
