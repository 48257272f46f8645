"""The ``sagemaker`` discoverer: one ML model service per AWS (account, region) that uses SageMaker.

For every configured account it obtains credentials (a named profile, the ambient chain, and
optionally an assumed role on top), works out the regions to look at, and in each region reads
the first non-empty page of models, model package groups and endpoints. A region counts as "in
use" when any of the three is non-empty; only those are reported unless ``register_empty``.

botocore is synchronous, so all AWS work runs in a thread pool owned by the discoverer. botocore
is imported lazily, inside those threads: the agent must answer its first probe within a second
and a config without SageMaker must never pay for importing it. botocore is used directly rather
than through boto3 because boto3 adds nothing here but an import, and because sharing one
botocore data loader across every session in the process saves parsing the large SageMaker service
model again for each account and cycle (about 150 ms of CPU each); a boto3 session would also append to
the shared loader's search path every time one is created.

Failures never escape :meth:`SageMakerDiscoverer.discover`: they become a failed scope and an
:class:`ItemFailure` whose reason names the account or region and never any key or token.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from mlsvc_discover._errors import ProbeError
from mlsvc_discover.config import Duration
from mlsvc_discover.openmetadata.models import validate_service_name
from mlsvc_discover.sources.base import (
    Discoverer,
    DiscovererConfig,
    DiscoveryResult,
    Finding,
    ItemFailure,
    PlatformKind,
    Scope,
    ScopeOutcome,
    ServiceMetadata,
    StrictModel,
)

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.config import Config
    from botocore.loaders import Loader
    from botocore.session import Session

__all__ = ["AwsAccount", "AwsProbeError", "SageMakerConfig", "SageMakerDiscoverer"]

log = logging.getLogger(__name__)

# re.ASCII: AWS's \w is ASCII-only; Python's would also accept any Unicode letter.
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$", re.ASCII)
_SESSION_NAME_RE = re.compile(r"^[\w+=,.@-]{2,64}$", re.ASCII)
_EXTERNAL_ID_RE = re.compile(r"^[\w+=,.@:/-]{2,1224}$", re.ASCII)
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")

# Where STS and EC2 are asked when no region is configured; one per partition because a
# partition's credentials are worthless in another's endpoints.
_PARTITION_HOME = {"aws": "us-east-1", "aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}

# (operation, key of the items in a page, attribute name in the finding)
_LISTINGS = (
    ("list_models", "Models", "models"),
    ("list_model_package_groups", "ModelPackageGroupSummaryList", "model_package_groups"),
    ("list_endpoints", "Endpoints", "endpoints"),
)
_PAGE_SIZE = 100  # the largest MaxResults all three list calls accept

_ACCESS_DENIED = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess", "AuthorizationError"}
)
_BAD_CREDENTIALS = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "InvalidToken",
        "MissingAuthenticationToken",
        "AuthFailure",
    }
)
# In a region call, after STS has just accepted the same credentials, these mean the region
# itself refuses them: an opt-in region that is not enabled answers exactly like this.
_REGION_REFUSED = frozenset(
    {"UnrecognizedClientException", "InvalidClientTokenId", "AuthFailure", "OptInRequired", "InvalidRegion"}
)
_THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
    }
)

# Access key ids are not secret in AWS's eyes but identify a credential; keep them out of text.
_ACCESS_KEY_ID_RE = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b")
_USERINFO_RE = re.compile(r"(://)[^/@\s]+@")
_REASON_LIMIT = 300


# --- configuration -----------------------------------------------------------------------------


def _regions_before(value: Any) -> Any:
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
        if not isinstance(region, str) or not _REGION_RE.fullmatch(region):
            raise ValueError(f"item {i}: {region!r} is not an AWS region name; write e.g. us-east-1 or eu-west-1")
        if region not in seen:
            seen.append(region)
    return seen


class AwsAccount(StrictModel):
    """One AWS account to look at, and how to get credentials for it.

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
        if not _SESSION_NAME_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid role session name; use 2 to 64 characters from letters, digits "
                "and + = , . @ _ -"
            )
        return value

    @field_validator("external_id")
    @classmethod
    def _check_external_id(cls, value: SecretStr | None) -> SecretStr | None:
        # The value is secret: the message describes the rule and never echoes it.
        if value is not None and not _EXTERNAL_ID_RE.fullmatch(value.get_secret_value()):
            raise ValueError("external_id must be 2 to 1224 characters from letters, digits and + = , . @ : / _ -")
        return value

    @field_validator("profile")
    @classmethod
    def _check_profile(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("profile is empty; name a profile of the AWS config files or remove the key")
        return value

    @field_validator("regions", mode="before")
    @classmethod
    def _check_regions(cls, value: Any) -> Any:
        return _regions_before(value)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        return None if value is None else validate_service_name(value)

    @model_validator(mode="after")
    def _role_only_options(self) -> AwsAccount:
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


class SageMakerConfig(DiscovererConfig):
    """Config of a ``sagemaker`` discoverer: which accounts and regions, and how hard to push AWS."""

    type: Literal["sagemaker"] = Field(description="Always `sagemaker`.")
    regions: list[str] | Literal["all"] = Field(
        description="Regions to look at in every account (accounts can override): a list such as "
        "[us-east-1, eu-west-1], or `all` for every region that offers SageMaker and is enabled for the account.",
    )
    accounts: list[AwsAccount] = Field(min_length=1, description="AWS accounts to look at (at least one).")
    register_empty: bool = Field(
        default=False,
        description="Also register (account, region) pairs with no models, model package groups or endpoints.",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="One URL for every AWS call (STS, SageMaker, EC2), e.g. a moto server; unset uses AWS's endpoints.",
    )
    max_concurrency_per_account: int = Field(
        default=4, ge=1, le=64, description="Regions checked at once per account; keeps SageMaker from throttling."
    )
    max_accounts_concurrency: int = Field(default=16, ge=1, le=256, description="Accounts looked at at once.")
    connect_timeout: Duration = Field(default=5.0, gt=0, description="Timeout to connect to an AWS endpoint.")
    read_timeout: Duration = Field(default=15.0, gt=0, description="Timeout waiting for an AWS answer.")
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Attempts per AWS call, first one included (botocore `standard` retry mode: throttling, "
        "5xx and connection errors are retried with backoff).",
    )

    @field_validator("regions", mode="before")
    @classmethod
    def _check_regions(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("list the regions to look at, e.g. [us-east-1, eu-west-1], or write `all`")
        return _regions_before(value)

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{_redact_userinfo(value)!r} is not an http(s) URL; write e.g. http://127.0.0.1:5000")
        if _USERINFO_RE.search(value):
            # AWS requests are signed; a password in the URL would only leak into logs and the catalog.
            raise ValueError("endpoint_url must not contain user:password@; AWS calls are signed with the credentials")
        return value.rstrip("/")

    @field_validator("accounts")
    @classmethod
    def _check_accounts(cls, accounts: list[AwsAccount], info: ValidationInfo) -> list[AwsAccount]:
        # `regions` is declared before `accounts`, so it is in info.data when it was valid.
        default_regions = info.data.get("regions")
        seen: dict[tuple[str | None, str | None], int] = {}
        names: dict[str, int] = {}
        for i, account in enumerate(accounts):
            ident = (account.role_arn, account.profile)
            if ident in seen:
                raise ValueError(f"accounts[{i}] uses the same role_arn and profile as accounts[{seen[ident]}]")
            seen[ident] = i
            if account.name is None:
                continue
            if account.name in names:
                raise ValueError(
                    f"accounts[{i}].name: {account.name!r} is already the name of accounts[{names[account.name]}]"
                )
            names[account.name] = i
            regions = account.regions if account.regions is not None else default_regions
            if regions is None:
                continue
            if regions == "all" or len(regions) != 1:
                what = "`all` regions" if regions == "all" else f"{len(regions)} regions"
                raise ValueError(
                    f"accounts[{i}].name: an explicit name needs exactly one region, but this account has {what}; "
                    "use name_template (e.g. `sagemaker-{account}-{region}`) or give the account one region"
                )
        return accounts


# --- errors ------------------------------------------------------------------------------------


class AwsProbeError(ProbeError):
    """An AWS account or region could not be looked at; ``kind`` is a short category.

    Kinds: ``access_denied``, ``expired_credentials`` (expired, invalid or missing credentials),
    ``region_unavailable``, ``throttled``, ``unreachable``, ``error``.
    """

    def __init__(self, reason: str, *, kind: str) -> None:
        self.kind = kind
        super().__init__(reason)


def _redact_userinfo(text: str) -> str:
    return _USERINFO_RE.sub(r"\1***@", text)


def _clean(text: str, secrets: Iterable[str]) -> str:
    """Text from AWS made safe and short enough to put in a reason."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _redact_userinfo(_ACCESS_KEY_ID_RE.sub("***", text))
    text = " ".join(text.split())
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 1] + "…"


def _translate(
    exc: Exception, *, where: str | None, secrets: Iterable[str], region_call: bool = False
) -> AwsProbeError:
    """Turn a botocore error into an :class:`AwsProbeError` with a category and a safe reason.

    ``where`` prefixes the reason (e.g. ``cannot assume role arn:...``); ``region_call`` says the
    credentials were already accepted by STS, which changes what an authentication error means.
    """
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    kind = "error"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "UnknownError")
        message = _clean(str(error.get("Message") or ""), secrets)
        operation = exc.operation_name
        attempts = int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) + 1
        if code in _THROTTLED:
            kind = "throttled"
            detail = f"throttled ({code} on {operation} after {attempts} attempt{'s' if attempts > 1 else ''})"
        elif code in _ACCESS_DENIED:
            kind = "access_denied"
            detail = f"{code} ({message})" if message else code
        elif region_call and code in _REGION_REFUSED:
            kind = "region_unavailable"
            detail = f"region not enabled for this account or it refuses the credentials ({code} on {operation})"
        elif code in _BAD_CREDENTIALS:
            # No message: a signature error's message can quote the canonical request, token included.
            kind = "expired_credentials"
            detail = f"credentials expired or invalid ({code})"
        else:
            detail = f"{code} on {operation}: {message}" if message else f"{code} on {operation}"
    elif isinstance(exc, ConnectionError | HTTPClientError):
        kind = "unreachable"
        url = getattr(exc, "kwargs", {}).get("endpoint_url")
        target = _redact_userinfo(str(url)) if url else "the AWS endpoint"
        detail = f"cannot reach {target} ({type(exc).__name__})"
    elif isinstance(exc, NoCredentialsError | PartialCredentialsError):
        kind = "expired_credentials"
        detail = f"no usable AWS credentials found ({type(exc).__name__})"
    elif isinstance(exc, ProfileNotFound):
        detail = f"profile {exc.kwargs.get('profile')!r} is not in the AWS config files"
    else:
        detail = f"{type(exc).__name__}: {_clean(str(exc), secrets)}"
    return AwsProbeError(f"{where}: {detail}" if where else detail, kind=kind)


# --- AWS plumbing (runs in worker threads) -----------------------------------------------------


@dataclass(frozen=True)
class _Keys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None

    def values(self) -> list[str]:
        return [v for v in (self.access_key_id, self.secret_access_key, self.session_token) if v]


_loader_lock = threading.Lock()
_loader: Loader | None = None


def _shared_loader() -> Loader:
    """One botocore data loader for the process.

    The loader caches parsed service models (SageMaker's alone takes about 150 ms to parse);
    they are read-only, so every session of every discoverer instance can share them.
    """
    global _loader  # noqa: PLW0603 - a lazily built process-wide cache
    with _loader_lock:
        if _loader is None:
            from botocore.loaders import create_loader

            _loader = create_loader()
        return _loader


class _Aws:
    """botocore pieces shared by every account of one discoverer; built once, in a worker thread."""

    def __init__(self, config: SageMakerConfig) -> None:
        from botocore.config import Config

        self.loader = _shared_loader()
        self.endpoint_url = config.endpoint_url
        self.client_config: Config = Config(
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            # total_max_attempts counts the first try; botocore's "max_attempts" key counts retries.
            retries={"total_max_attempts": config.max_attempts, "mode": "standard"},
            user_agent_extra="mlsvc-discover",
        )

    def session(self, profile: str | None = None, keys: _Keys | None = None) -> Session:
        from botocore.session import Session

        session = Session(profile=profile)
        session.register_component("data_loader", self.loader)
        if keys is not None:
            session.set_credentials(keys.access_key_id, keys.secret_access_key, keys.session_token)
        return session

    def client(self, session: Session, lock: threading.Lock, service: str, region: str) -> BaseClient:
        # A botocore session is not thread-safe while it creates clients (credential resolution
        # and caches); the clients it returns are.
        with lock:
            return session.create_client(
                service, region_name=region, endpoint_url=self.endpoint_url, config=self.client_config
            )


def _call(client: BaseClient, operation: str, **params: Any) -> dict[str, Any]:
    # The stubs' BaseClient does not declare the generated operation methods.
    method = cast("Callable[..., dict[str, Any]]", getattr(client, operation))
    return method(**params)


def _first_page(client: BaseClient, operation: str, key: str) -> tuple[int, bool]:
    """Items on the first non-empty page, and whether more pages follow (counts are then partial)."""
    pages: Iterator[dict[str, Any]] = iter(
        client.get_paginator(operation).paginate(PaginationConfig={"PageSize": _PAGE_SIZE})
    )
    for page in pages:
        items = page.get(key) or []
        if items:
            return len(items), bool(page.get("NextToken"))
    return 0, False


@dataclass
class _OpenAccount:
    """An account whose credentials worked: who it is and which regions to look at."""

    account_id: str
    session: Session
    lock: threading.Lock
    regions: list[str]
    keys: _Keys | None


@dataclass(frozen=True)
class _RegionCounts:
    counts: dict[str, int]
    complete: bool


@dataclass
class _AccountOutcome:
    index: int
    account: AwsAccount
    account_id: str | None
    scope: ScopeOutcome
    failures: list[ItemFailure] = field(default_factory=list)
    region_scopes: list[ScopeOutcome] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)


def _keep_worse(outcomes: dict[Scope, ScopeOutcome], outcome: ScopeOutcome) -> None:
    current = outcomes.get(outcome.scope)
    if current is None or (current.ok and not outcome.ok):
        outcomes[outcome.scope] = outcome


# --- the discoverer ----------------------------------------------------------------------------


class SageMakerDiscoverer(Discoverer[SageMakerConfig]):
    """Finds the (account, region) pairs where SageMaker holds models, package groups or endpoints.

    Finding attributes: ``account_id``, ``region``, ``role_arn``, ``session_name``, ``profile``,
    ``endpoint_url``, ``external_id_set``, ``models``, ``model_package_groups``, ``endpoints``
    (items on the first non-empty page of each listing, at most 100), ``counts_complete`` (false
    when a listing had more pages than were read) and, only with ``send_access_keys``,
    ``access_keys`` = ``{"access_key_id": str, "secret_access_key": SecretStr,
    "session_token": SecretStr | None}``.
    """

    config_model: ClassVar[type[DiscovererConfig]] = SageMakerConfig

    def __init__(self, config: SageMakerConfig) -> None:
        super().__init__(config)
        self._executor: ThreadPoolExecutor | None = None
        self._aws: _Aws | None = None
        self._aws_lock = threading.Lock()
        # Account ids of profile/ambient accounts seen in earlier cycles: when such an account
        # fails later, its scope still carries the id, so its services stay protected by it.
        self._known_ids: dict[int, str] = {}
        self._run_secrets: tuple[str, ...] = ()

    # -- lifecycle

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            cfg = self.config
            self._executor = ThreadPoolExecutor(
                max_workers=cfg.max_accounts_concurrency * cfg.max_concurrency_per_account,
                thread_name_prefix=f"sagemaker-{cfg.name}",
            )
        return self._executor

    def _runtime(self) -> _Aws:
        with self._aws_lock:
            if self._aws is None:
                self._aws = _Aws(self.config)
            return self._aws

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # Off the event loop: threads in flight finish within botocore's own timeouts.
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    def secrets(self) -> Sequence[str]:
        external = [a.external_id.get_secret_value() for a in self.config.accounts if a.external_id is not None]
        return tuple(dict.fromkeys([*external, *self._run_secrets]))

    # -- discovery

    async def discover(self) -> DiscoveryResult:
        cfg = self.config
        gate = asyncio.Semaphore(cfg.max_accounts_concurrency)
        outcomes = await asyncio.gather(*(self._account(i, a, gate) for i, a in enumerate(cfg.accounts)))
        self._run_secrets = tuple(dict.fromkeys(s for o in outcomes for s in o.secrets))
        return self._assemble(list(outcomes))

    def _regions_of(self, account: AwsAccount) -> list[str] | Literal["all"]:
        return account.regions if account.regions is not None else self.config.regions

    async def _account(self, index: int, account: AwsAccount, gate: asyncio.Semaphore) -> _AccountOutcome:
        cfg = self.config
        loop = asyncio.get_running_loop()
        async with gate:
            known_id = account.role_account_id or self._known_ids.get(index)
            try:
                opened = await loop.run_in_executor(self._pool(), self._open_account, account)
            except Exception as exc:
                probe = exc if isinstance(exc, AwsProbeError) else self._unexpected(exc, account.label)
                scope = (*self.root_scope, known_id or account.label)
                return _AccountOutcome(
                    index=index,
                    account=account,
                    account_id=known_id,
                    scope=ScopeOutcome(scope=scope, ok=False, error=probe.reason),
                    failures=[ItemFailure(self.name, account.label, probe.reason, probe.kind)],
                )
            self._known_ids[index] = opened.account_id
            outcome = _AccountOutcome(
                index=index,
                account=account,
                account_id=opened.account_id,
                scope=ScopeOutcome(scope=(*self.root_scope, opened.account_id), ok=True),
                secrets=opened.keys.values() if opened.keys else [],
            )
            region_gate = asyncio.Semaphore(cfg.max_concurrency_per_account)

            async def check(region: str) -> _RegionCounts | AwsProbeError:
                async with region_gate:
                    try:
                        return await loop.run_in_executor(self._pool(), self._check_region, opened, region)
                    except AwsProbeError as exc:
                        return exc
                    except Exception as exc:
                        return self._unexpected(exc, f"{opened.account_id}/{region}")

            results = await asyncio.gather(*(check(r) for r in opened.regions))
        for region, res in zip(opened.regions, results, strict=True):
            scope = (*self.root_scope, opened.account_id, region)
            if isinstance(res, AwsProbeError):
                outcome.region_scopes.append(ScopeOutcome(scope=scope, ok=False, error=res.reason))
                outcome.failures.append(ItemFailure(self.name, f"{opened.account_id}/{region}", res.reason, res.kind))
                continue
            outcome.region_scopes.append(ScopeOutcome(scope=scope, ok=True))
            if cfg.register_empty or any(res.counts.values()):
                outcome.findings.append(self._finding(account, opened, region, res))
        return outcome

    def _unexpected(self, exc: Exception, item: str) -> AwsProbeError:
        # A bug or an unforeseen library error: one account or region must not sink the others.
        log.debug("sagemaker %s: unexpected error for %s", self.name, item, exc_info=True)
        return AwsProbeError(f"unexpected {type(exc).__name__}: {_clean(str(exc), self.secrets())}", kind="error")

    def _finding(self, account: AwsAccount, opened: _OpenAccount, region: str, res: _RegionCounts) -> Finding:
        cfg = self.config
        attributes: dict[str, Any] = {
            "account_id": opened.account_id,
            "region": region,
            "role_arn": account.role_arn,
            "session_name": account.session_name if account.role_arn else None,
            "profile": account.profile,
            "endpoint_url": cfg.endpoint_url,
            "external_id_set": account.external_id is not None,
            **res.counts,
            "counts_complete": res.complete,
        }
        if account.send_access_keys and opened.keys is not None:
            attributes["access_keys"] = {
                "access_key_id": opened.keys.access_key_id,
                "secret_access_key": SecretStr(opened.keys.secret_access_key),
                "session_token": SecretStr(opened.keys.session_token) if opened.keys.session_token else None,
            }
        return Finding(
            kind=PlatformKind.SAGEMAKER,
            source=self.name,
            scope=(*self.root_scope, opened.account_id, region),
            key=f"{opened.account_id}/{region}",
            attributes=attributes,
            labels={"account": opened.account_id, "region": region, "discoverer": self.name, **account.labels},
            metadata=self._metadata(account),
            name=account.name,
            name_template=cfg.name_template,
        )

    def _metadata(self, account: AwsAccount) -> ServiceMetadata:
        """The discoverer's defaults with every field the account sets replaced.

        Same rule as ``ServiceMetadata.merged``, which updates through ``model_copy`` and so
        leaves nested owners as plain dicts; validating the merged mapping keeps them OwnerRef.
        """
        defaults, override = self.config.defaults, account.metadata
        if override is None:
            return defaults
        return ServiceMetadata.model_validate({**defaults.model_dump(), **override.model_dump(exclude_none=True)})

    def _assemble(self, outcomes: list[_AccountOutcome]) -> DiscoveryResult:
        result = DiscoveryResult(source=self.name)
        root_errors: list[str] = []
        # Two entries can reach the same account (a profile and a role into it, say). Each
        # (account, region) is reported once, and a scope reported twice fails if either entry
        # failed: a failure in one entry must keep protecting that account's services.
        account_scopes: dict[Scope, ScopeOutcome] = {}
        region_scopes: dict[Scope, ScopeOutcome] = {}
        found_by: dict[str, int] = {}
        for o in outcomes:
            if o.account_id is None:
                # Without an id the failed scope cannot cover this account's earlier services, so
                # the root fails too: nothing of this discoverer may be judged missing this cycle.
                root_errors.append(f"account {o.account.label} could not be identified")
            _keep_worse(account_scopes, o.scope)
            for scope in o.region_scopes:
                _keep_worse(region_scopes, scope)
            for finding in o.findings:
                if finding.key in found_by:
                    reason = f"{finding.key} is also reached by accounts[{found_by[finding.key]}]; reported once"
                    result.skipped.append(ItemFailure(self.name, o.account.label, reason, "error"))
                    continue
                found_by[finding.key] = o.index
                result.findings.append(finding)
            result.failures.extend(o.failures)
        root_error = "; ".join(root_errors) if root_errors else None
        result.scopes = [
            ScopeOutcome(scope=self.root_scope, ok=root_error is None, error=root_error),
            *account_scopes.values(),
            *region_scopes.values(),
        ]
        return result

    # -- blocking work, in the pool

    def _open_account(self, account: AwsAccount) -> _OpenAccount:
        """Credentials, account id and regions of one account; raises AwsProbeError."""
        aws = self._runtime()
        configured = self._regions_of(account)
        external_id = account.external_id.get_secret_value() if account.external_id else None
        secrets = [external_id] if external_id else []
        try:
            base = aws.session(account.profile)
            session_region = cast("str | None", base.get_config_variable("region"))
        except Exception as exc:
            raise _translate(exc, where=f"cannot use {account.label}", secrets=secrets) from exc
        lock = threading.Lock()
        keys: _Keys | None = None

        if account.role_arn:
            partition = account.role_arn.split(":")[1]
            home = configured[0] if isinstance(configured, list) else _PARTITION_HOME.get(partition, session_region)
            params: dict[str, Any] = {"RoleArn": account.role_arn, "RoleSessionName": account.session_name}
            if external_id:
                params["ExternalId"] = external_id
            try:
                sts = aws.client(base, lock, "sts", home or "us-east-1")
                try:
                    creds = _call(sts, "assume_role", **params)["Credentials"]
                finally:
                    sts.close()
            except Exception as exc:
                raise _translate(exc, where=f"cannot assume role {account.role_arn}", secrets=secrets) from exc
            keys = _Keys(creds["AccessKeyId"], creds["SecretAccessKey"], creds.get("SessionToken"))
            session = aws.session(keys=keys)
            account_id = cast("str", account.role_account_id)
        else:
            home = configured[0] if isinstance(configured, list) else session_region
            try:
                sts = aws.client(base, lock, "sts", home or "us-east-1")
                try:
                    identity = _call(sts, "get_caller_identity")
                finally:
                    sts.close()
                frozen = base.get_credentials()
                frozen_keys = frozen.get_frozen_credentials() if frozen is not None else None
            except Exception as exc:
                raise _translate(exc, where=f"cannot identify the account of {account.label}", secrets=secrets) from exc
            account_id = str(identity["Account"])
            partition = str(identity.get("Arn", "arn:aws:")).split(":")[1] or "aws"
            if not isinstance(configured, list) and home is None:
                home = _PARTITION_HOME.get(partition)
            if frozen_keys is not None and frozen_keys.access_key and frozen_keys.secret_key:
                keys = _Keys(frozen_keys.access_key, frozen_keys.secret_key, frozen_keys.token)
            session = base
        secrets.extend(keys.values() if keys else [])

        if isinstance(configured, list):
            regions = list(configured)
        else:
            regions = self._enabled_regions(
                aws=aws,
                session=session,
                lock=lock,
                home=home or "us-east-1",
                partition=partition,
                account_id=account_id,
                secrets=secrets,
            )
        log.debug("sagemaker %s: account %s, %d region(s)", self.name, account_id, len(regions))
        return _OpenAccount(account_id=account_id, session=session, lock=lock, regions=regions, keys=keys)

    def _enabled_regions(
        self,
        *,
        aws: _Aws,
        session: Session,
        lock: threading.Lock,
        home: str,
        partition: str,
        account_id: str,
        secrets: list[str],
    ) -> list[str]:
        """Regions offering SageMaker in the partition that the account has enabled, in AWS's order."""
        offered = session.get_available_regions("sagemaker", partition_name=partition)
        try:
            ec2 = aws.client(session, lock, "ec2", home)
            try:
                answer = _call(ec2, "describe_regions", AllRegions=False)
            finally:
                ec2.close()
        except Exception as exc:
            where = f"cannot list the enabled regions of account {account_id}"
            raise _translate(exc, where=where, secrets=secrets) from exc
        # AllRegions=False already leaves disabled opt-in regions out on AWS; the status check
        # also holds where an implementation (moto) returns every region regardless.
        enabled = {r["RegionName"] for r in answer.get("Regions", []) if r.get("OptInStatus") != "not-opted-in"}
        return [r for r in offered if r in enabled]

    def _check_region(self, opened: _OpenAccount, region: str) -> _RegionCounts:
        aws = self._runtime()
        secrets = opened.keys.values() if opened.keys else []
        counts: dict[str, int] = {}
        complete = True
        try:
            client = aws.client(opened.session, opened.lock, "sagemaker", region)
            try:
                for operation, key, attribute in _LISTINGS:
                    counts[attribute], more = _first_page(client, operation, key)
                    complete = complete and not more
            finally:
                client.close()
        except Exception as exc:
            raise _translate(exc, where=None, secrets=secrets, region_call=True) from exc
        return _RegionCounts(counts=counts, complete=complete)
