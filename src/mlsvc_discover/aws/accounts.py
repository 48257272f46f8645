"""AWS accounts: credentials config, and opening an account (who it is, which regions).

Public seam for every AWS discoverer (an Organizations account source, a SageMaker-managed
MLflow lister, ...):

- :class:`AwsCredentialsConfig`: how to get credentials for one account (``profile`` or the
  ambient chain, optionally ``role_arn`` assumed on top with ``external_id`` and
  ``session_name``); ``label`` names it in reasons, ``role_account_id`` is the role's account.
- :class:`AwsAccount`: credentials plus ``regions``, ``metadata``, ``labels``, ``name`` and
  ``send_access_keys``, the per-account entry of an AWS discoverer's ``accounts`` list.
- :func:`open_account`: blocking; obtains the credentials (assuming the role if any), the
  account id (from the role ARN, else STS ``GetCallerIdentity``) and the regions to look at
  (the configured list, or ``all`` resolved by :func:`~mlsvc_discover.aws.regions.enabled_regions`
  for the given service). Returns an :class:`OpenAccount`; raises
  :class:`~mlsvc_discover.aws.errors.AwsProbeError` whose reason names the account, never a key.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import Field, SecretStr, field_validator, model_validator

from mlsvc_discover.aws.errors import translate_aws_error
from mlsvc_discover.aws.regions import PARTITION_HOME, RegionsSpec, check_regions, enabled_regions
from mlsvc_discover.aws.session import AwsClients, AwsKeys, call
from mlsvc_discover.discoverers.base import ServiceMetadata, StrictModel
from mlsvc_discover.openmetadata.models import validate_service_name

if TYPE_CHECKING:
    from botocore.session import Session

__all__ = [
    "AwsAccount",
    "AwsCredentialsConfig",
    "OpenAccount",
    "check_external_id",
    "check_session_name",
    "open_account",
]

# re.ASCII: AWS's \w is ASCII-only; Python's would also accept any Unicode letter.
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$", re.ASCII)
_SESSION_NAME_RE = re.compile(r"^[\w+=,.@-]{2,64}$", re.ASCII)
_EXTERNAL_ID_RE = re.compile(r"^[\w+=,.@:/-]{2,1224}$", re.ASCII)


def check_session_name(value: str) -> str:
    """A role session name as STS accepts it, or a ValueError saying the rule."""
    if not _SESSION_NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid role session name; use 2 to 64 characters from letters, digits and + = , . @ _ -"
        )
    return value


def check_external_id(value: SecretStr | None, *, key: str = "external_id") -> SecretStr | None:
    """An external id as STS accepts it; the message names ``key`` and never echoes the secret."""
    if value is not None and not _EXTERNAL_ID_RE.fullmatch(value.get_secret_value()):
        raise ValueError(f"{key} must be 2 to 1224 characters from letters, digits and + = , . @ : / _ -")
    return value


class AwsCredentialsConfig(StrictModel):
    """How to get credentials for one AWS account.

    Credentials come from ``profile`` when set, else from the ambient chain (environment,
    container or instance role). With ``role_arn`` those credentials assume the role and the
    role's temporary credentials are used instead.
    """

    role_arn: str | None = Field(
        default=None,
        description="IAM role to assume, e.g. `arn:aws:iam::123456789012:role/mlsvc-discover`; "
        "its account is the one looked at.",
    )
    external_id: SecretStr | None = Field(
        default=None, description="ExternalId the role's trust policy requires (only with role_arn). Secret."
    )
    session_name: str = Field(
        default="mlsvc-discover",
        description="RoleSessionName of the assumed role (2-64 characters of letters, digits and `+=,.@_-`); "
        "shows in CloudTrail.",
    )
    profile: str | None = Field(
        default=None,
        description="Named profile of the AWS config files to take credentials from; unset uses the ambient chain.",
    )

    @field_validator("role_arn")
    @classmethod
    def _check_role_arn(cls, value: str | None) -> str | None:
        if value is not None and not _ROLE_ARN_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an IAM role ARN; expected arn:aws:iam::<12-digit account id>:role/<name>, "
                "e.g. arn:aws:iam::123456789012:role/mlsvc-discover"
            )
        return value

    @field_validator("session_name")
    @classmethod
    def _check_session_name(cls, value: str) -> str:
        return check_session_name(value)

    @field_validator("external_id")
    @classmethod
    def _check_external_id(cls, value: SecretStr | None) -> SecretStr | None:
        return check_external_id(value)

    @field_validator("profile")
    @classmethod
    def _check_profile(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("profile is empty; name a profile of the AWS config files or remove the key")
        return value

    @model_validator(mode="after")
    def _role_only_options(self) -> AwsCredentialsConfig:
        if self.role_arn is None:
            if self.external_id is not None:
                raise ValueError("external_id is only used with role_arn; add role_arn or remove external_id")
            if "session_name" in self.model_fields_set:
                raise ValueError("session_name is only used with role_arn; add role_arn or remove session_name")
        return self

    @property
    def label(self) -> str:
        """How the account is named in reasons before (or without) knowing its id."""
        if self.role_arn and self.profile:
            return f"{self.role_arn} (via profile {self.profile})"
        if self.role_arn:
            return self.role_arn
        if self.profile:
            return f"profile {self.profile}"
        return "default credentials"

    @property
    def role_account_id(self) -> str | None:
        return self.role_arn.split(":")[4] if self.role_arn else None


class AwsAccount(AwsCredentialsConfig):
    """One AWS account to look at: its credentials, and what its services look like.

    Credentials come from ``profile`` when set, else from the ambient chain (environment,
    container or instance role). With ``role_arn`` those credentials assume the role and the
    role's temporary credentials are used instead.
    """

    regions: list[str] | Literal["all"] | None = Field(
        default=None, description="Regions of this account, overriding the discoverer's `regions`."
    )
    metadata: ServiceMetadata | None = Field(
        default=None, description="Metadata for this account's services, overriding the discoverer's `defaults`."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels for name and metadata templates of this account's services."
    )
    name: str | None = Field(
        default=None,
        description="Explicit service name; only when the account has exactly one region (else use name_template).",
    )
    send_access_keys: bool = Field(
        default=False,
        description="Put the access key id, secret key and session token used into the service's awsConfig. "
        "Off by default: anyone who can read the service in OpenMetadata could use them.",
    )

    @field_validator("regions", mode="before")
    @classmethod
    def _check_regions(cls, value: Any) -> Any:
        return check_regions(value)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        return None if value is None else validate_service_name(value)


@dataclass
class OpenAccount:
    """An account whose credentials worked: who it is and which regions to look at.

    ``session`` and ``lock`` go to :meth:`AwsClients.client` for every client of this account;
    ``keys`` are the credentials in use (``None`` when botocore could not freeze them).
    """

    account_id: str
    session: Session
    lock: threading.Lock
    regions: list[str]
    keys: AwsKeys | None


def open_account(aws: AwsClients, account: AwsCredentialsConfig, regions: RegionsSpec, *, service: str) -> OpenAccount:
    """Credentials, account id and regions of one account; raises AwsProbeError. Blocking.

    ``regions`` is the configured list or ``all`` (resolved for ``service``: offered there and
    enabled for the account).
    """
    configured = regions
    external_id = account.external_id.get_secret_value() if account.external_id else None
    secrets = [external_id] if external_id else []
    try:
        base = aws.session(account.profile)
        session_region = cast("str | None", base.get_config_variable("region"))
    except Exception as exc:
        raise translate_aws_error(exc, where=f"cannot use {account.label}", secrets=secrets) from exc
    lock = threading.Lock()
    keys: AwsKeys | None = None

    if account.role_arn:
        partition = account.role_arn.split(":")[1]
        home = configured[0] if isinstance(configured, list) else PARTITION_HOME.get(partition, session_region)
        params: dict[str, Any] = {"RoleArn": account.role_arn, "RoleSessionName": account.session_name}
        if external_id:
            params["ExternalId"] = external_id
        where = f"cannot assume role {account.role_arn}"
        creds = _sts(aws, base, lock, home, "assume_role", where=where, secrets=secrets, **params)["Credentials"]
        keys = AwsKeys(creds["AccessKeyId"], creds["SecretAccessKey"], creds.get("SessionToken"))
        session = aws.session(keys=keys)
        account_id = cast("str", account.role_account_id)
    else:
        home = configured[0] if isinstance(configured, list) else session_region
        where = f"cannot identify the account of {account.label}"
        identity = _sts(aws, base, lock, home, "get_caller_identity", where=where, secrets=secrets)
        try:
            frozen = base.get_credentials()
            frozen_keys = frozen.get_frozen_credentials() if frozen is not None else None
        except Exception as exc:
            raise translate_aws_error(exc, where=where, secrets=secrets) from exc
        account_id = str(identity["Account"])
        partition = str(identity.get("Arn", "arn:aws:")).split(":")[1] or "aws"
        if not isinstance(configured, list) and home is None:
            home = PARTITION_HOME.get(partition)
        if frozen_keys is not None and frozen_keys.access_key and frozen_keys.secret_key:
            keys = AwsKeys(frozen_keys.access_key, frozen_keys.secret_key, frozen_keys.token)
        session = base
    secrets.extend(keys.values() if keys else [])

    if isinstance(configured, list):
        resolved = list(configured)
    else:
        resolved = enabled_regions(
            aws=aws,
            session=session,
            lock=lock,
            home=home or "us-east-1",
            partition=partition,
            account_id=account_id,
            secrets=secrets,
            service=service,
        )
    return OpenAccount(account_id=account_id, session=session, lock=lock, regions=resolved, keys=keys)


def _sts(
    aws: AwsClients,
    session: Session,
    lock: threading.Lock,
    region: str | None,
    operation: str,
    *,
    where: str,
    secrets: list[str],
    **params: Any,
) -> dict[str, Any]:
    """One STS call on a client of its own; raises AwsProbeError prefixed with ``where``."""
    try:
        sts = aws.client(session, lock, "sts", region or "us-east-1")
        try:
            return call(sts, operation, **params)
        finally:
            sts.close()
    except Exception as exc:
        raise translate_aws_error(exc, where=where, secrets=secrets) from exc
