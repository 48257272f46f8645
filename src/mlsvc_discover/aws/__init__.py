"""Shared AWS plumbing for discoverers: errors, sessions and clients, regions, accounts.

Every module here is blocking botocore work meant for worker threads, except the config models
and validators. An AWS discoverer is one module under ``discoverers/`` that imports these parts:

- :mod:`mlsvc_discover.aws.errors`: :class:`AwsProbeError`, :func:`translate_aws_error`
  (botocore error -> kind + safe reason), :func:`clean_aws_text`, :func:`redact_userinfo`.
- :mod:`mlsvc_discover.aws.session`: :class:`AwsClients` (shared data loader, client config with
  timeouts and retries, ``endpoint_url``), :class:`AwsKeys`, :func:`call`, :func:`first_page`,
  :func:`check_endpoint_url`.
- :mod:`mlsvc_discover.aws.regions`: :data:`RegionsSpec`, :func:`check_regions`,
  :func:`enabled_regions` (``all`` = offered by the service in the partition and enabled for
  the account), :data:`PARTITION_HOME`.
- :mod:`mlsvc_discover.aws.accounts`: :class:`AwsCredentialsConfig`, :class:`AwsAccount`,
  :func:`open_account` -> :class:`OpenAccount` (account id, session, regions, keys).
- :mod:`mlsvc_discover.aws.organization`: :class:`OrganizationConfig`, :func:`list_member_accounts`
  (the active accounts of an AWS organization, filtered by OU and account id).
- :mod:`mlsvc_discover.aws.fleet`: :class:`AwsFleet`, clients shared per (service, region) and
  refreshable assumed-role credentials kept between cycles.
- :mod:`mlsvc_discover.aws.managed_mlflow`: :func:`list_managed_mlflow` (SageMaker-managed MLflow
  tracking servers and MLflow Apps of one account and region).

botocore is imported only inside functions, so importing this package stays cheap.
"""

from __future__ import annotations

from mlsvc_discover.aws.accounts import AwsAccount, AwsCredentialsConfig, OpenAccount, open_account
from mlsvc_discover.aws.errors import AwsProbeError, clean_aws_text, redact_userinfo, translate_aws_error
from mlsvc_discover.aws.regions import PARTITION_HOME, RegionsSpec, check_regions, enabled_regions
from mlsvc_discover.aws.session import AwsClients, AwsKeys, call, check_endpoint_url, first_page

__all__ = [
    "PARTITION_HOME",
    "AwsAccount",
    "AwsClients",
    "AwsCredentialsConfig",
    "AwsKeys",
    "AwsProbeError",
    "OpenAccount",
    "RegionsSpec",
    "call",
    "check_endpoint_url",
    "check_regions",
    "clean_aws_text",
    "enabled_regions",
    "first_page",
    "open_account",
    "redact_userinfo",
    "translate_aws_error",
]
