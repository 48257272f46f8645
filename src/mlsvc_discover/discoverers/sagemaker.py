"""The ``sagemaker`` discoverer: SageMaker use per AWS (account, region), and SageMaker-managed MLflow.

Accounts are the configured ``accounts`` and, with ``organization``, every active account of an
AWS organization, listed afresh each cycle (:mod:`mlsvc_discover.aws.organization`). For every
account it obtains credentials (a named profile, the ambient chain, and optionally an assumed
role on top), works out the regions to look at, and in each region:

- ``sagemaker_usage``: reads the first non-empty page of models, model package groups and
  endpoints. A region counts as "in use" when any of the three is non-empty; only those are
  reported unless ``register_empty``. One ``SageMaker`` finding per such region.
- ``managed_mlflow``: lists managed MLflow tracking servers and MLflow Apps
  (:mod:`mlsvc_discover.aws.managed_mlflow`); one ``Mlflow`` finding per present resource.

Clients and assumed-role credentials live in an :class:`~mlsvc_discover.aws.fleet.AwsFleet`
kept between cycles.

Credentials, sessions, regions and error translation are the shared AWS parts in
:mod:`mlsvc_discover.aws`; this module holds only what is SageMaker's: its config, the three
listings, and how accounts and regions become scopes and findings. botocore is synchronous, so
all AWS work runs in a thread pool owned by the discoverer.

Failures never escape :meth:`SageMakerDiscoverer.discover`: they become a failed scope and an
:class:`ItemFailure` whose reason names the account or region and never any key or token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from mlsvc_discover._duration import Duration
from mlsvc_discover._errors import MappingError
from mlsvc_discover._templates import check_template
from mlsvc_discover._threads import DaemonThreadPool
from mlsvc_discover.aws import (
    AwsAccount,
    AwsClients,
    AwsProbeError,
    RegionsSpec,
    check_endpoint_url,
    check_regions,
    clean_aws_text,
    first_page,
    translate_aws_error,
)
from mlsvc_discover.aws.fleet import AwsFleet, FleetAccount
from mlsvc_discover.aws.managed_mlflow import ManagedMlflow, list_managed_mlflow
from mlsvc_discover.aws.organization import (
    MemberAccount,
    OrganizationConfig,
    list_member_accounts,
    partition_of_region,
)
from mlsvc_discover.aws.regions import PARTITION_HOME
from mlsvc_discover.discoverers.base import (
    Discoverer,
    DiscovererConfig,
    DiscoveryResult,
    Finding,
    ItemFailure,
    Scope,
    ScopeOutcome,
    ServiceMetadata,
    ServiceType,
    StrictModel,
)

# AwsAccount and AwsProbeError live in mlsvc_discover.aws; re-exported for existing imports.
__all__ = ["AwsAccount", "AwsProbeError", "ManagedMlflowConfig", "SageMakerConfig", "SageMakerDiscoverer"]

log = logging.getLogger(__name__)

# (operation, key of the items in a page, attribute name in the finding)
_LISTINGS = (
    ("list_models", "Models", "models"),
    ("list_model_package_groups", "ModelPackageGroupSummaryList", "model_package_groups"),
    ("list_endpoints", "Endpoints", "endpoints"),
)
_PAGE_SIZE = 100  # the largest MaxResults all three list calls accept
# The SageMaker operations behind the `sagemaker_usage` finding (the README's IAM policy lists them).
USAGE_OPERATIONS = ("ListModels", "ListModelPackageGroups", "ListEndpoints")


def _template(value: str) -> str:
    try:
        check_template(value)
    except MappingError as exc:
        raise ValueError(str(exc)) from None
    return value


class ManagedMlflowConfig(StrictModel):
    """SageMaker-managed MLflow: tracking servers and MLflow Apps, each an `Mlflow` service."""

    enabled: bool = Field(
        default=True, description="List managed MLflow tracking servers and MLflow Apps in every (account, region)."
    )
    tracking_servers: bool = Field(default=True, description="Register MLflow tracking servers.")
    apps: bool = Field(default=True, description="Register serverless MLflow Apps.")
    name_template: str = Field(
        default="sagemaker-mlflow-{account}-{region}-{server}",
        description="Service name of a tracking server; placeholders: account, region, server, mlflow_version, "
        "status, resource, discoverer, account_name and the account's labels.",
    )
    app_name_template: str = Field(
        default="sagemaker-mlflow-app-{account}-{region}-{server}",
        description="Service name of an MLflow App; the same placeholders (server is the App's name).",
    )
    metadata: ServiceMetadata | None = Field(
        default=None,
        description="Metadata for managed MLflow services, over the discoverer's `defaults` and the account's.",
    )

    @field_validator("name_template", "app_name_template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        return _template(value)


class SageMakerConfig(DiscovererConfig):
    """Config of a ``sagemaker`` discoverer: which accounts and regions, and how hard to push AWS."""

    type: Literal["sagemaker"] = Field(description="Always `sagemaker`.")
    regions: list[str] | Literal["all"] = Field(
        description="Regions to look at in every account (accounts can override): a list such as "
        "[us-east-1, eu-west-1], or `all` for every region that offers SageMaker and is enabled for the account.",
    )
    organization: OrganizationConfig | None = Field(
        default=None,
        description="Also look at every active account of an AWS organization, listed afresh every cycle "
        "(explicit `accounts` win for the same account id).",
    )
    accounts: list[AwsAccount] = Field(
        default_factory=list,
        validate_default=True,
        description="AWS accounts to look at (at least one, unless `organization` is set).",
    )
    sagemaker_usage: bool = Field(
        default=True,
        description="Register a `SageMaker` service per (account, region) holding models, package groups or endpoints.",
    )
    managed_mlflow: ManagedMlflowConfig = Field(
        default_factory=ManagedMlflowConfig,
        description="Register SageMaker-managed MLflow tracking servers and Apps as `Mlflow` services.",
    )
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
    read_timeout: Duration = Field(
        default=15.0,
        gt=0,
        description="Timeout of each read from an AWS endpoint (one socket read, not a whole answer).",
    )
    call_timeout: Duration = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Total deadline of one attempt of one AWS call: connecting, sending and reading the whole "
        "answer together; an endpoint that trickles its answer fails the attempt here.",
    )
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
        return check_regions(value)

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint_url(cls, value: str | None) -> str | None:
        return check_endpoint_url(value)

    @field_validator("accounts")
    @classmethod
    def _check_accounts(cls, accounts: list[AwsAccount], info: ValidationInfo) -> list[AwsAccount]:
        # `regions` and `organization` are declared before `accounts`: in info.data when valid.
        if not accounts and info.data.get("organization") is None:
            raise ValueError("list at least 1 item in accounts, or configure organization")
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

    @model_validator(mode="after")
    def _something_to_find(self) -> SageMakerConfig:
        if not self.sagemaker_usage and not self.managed_mlflow.enabled:
            raise ValueError("sagemaker_usage and managed_mlflow.enabled are both off: switch one on")
        return self


@dataclass(frozen=True)
class _RegionCounts:
    counts: dict[str, int]
    complete: bool
    mlflow: list[ManagedMlflow] = field(default_factory=list)
    mlflow_error: AwsProbeError | None = None


@dataclass
class _AccountOutcome:
    index: int
    origin: str  # accounts[i], or "organization"
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
    """Finds SageMaker use per (account, region), and SageMaker-managed MLflow servers and Apps.

    Accounts are the configured ``accounts`` plus, with ``organization``, the active member
    accounts listed every cycle. Credentials and clients live in an :class:`AwsFleet` kept
    between cycles (assumed-role credentials refresh before they expire).

    ``SageMaker`` finding attributes: ``account_id``, ``region``, ``role_arn``, ``session_name``,
    ``profile``, ``endpoint_url``, ``external_id_set``, ``models``, ``model_package_groups``,
    ``endpoints`` (items on the first non-empty page of each listing, at most 100),
    ``counts_complete`` (false when a listing had more pages than were read) and, only with
    ``send_access_keys``, ``access_keys`` = ``{"access_key_id": str, "secret_access_key":
    SecretStr, "session_token": SecretStr | None}``.

    ``Mlflow`` finding attributes (managed MLflow): ``tracking_uri`` and ``registry_uri`` (both
    the resource ARN), ``arn``, ``resource`` (``tracking-server`` or ``app``), ``account_id``,
    ``region``, ``status``, ``mlflow_version``, ``url`` (tracking servers' UI). Key: the ARN;
    scope: ``(sagemaker, <name>, <account>, <region>)``.
    """

    config_model: ClassVar[type[DiscovererConfig]] = SageMakerConfig

    def __init__(self, config: SageMakerConfig) -> None:
        super().__init__(config)
        self._executor: DaemonThreadPool | None = None
        self._aws: AwsClients | None = None
        self._fleet: AwsFleet | None = None
        self._aws_lock = threading.Lock()
        # Account ids of profile/ambient accounts seen in earlier cycles: when such an account
        # fails later, its scope still carries the id, so its services stay protected by it.
        self._known_ids: dict[int, str] = {}
        self._run_secrets: tuple[str, ...] = ()
        # Member entries by (account id, name, partition): built once, not per cycle.
        self._members: dict[tuple[str, str, str], AwsAccount] = {}

    # -- lifecycle

    def _pool(self) -> DaemonThreadPool:
        if self._executor is None:
            cfg = self.config
            # Daemon threads: a call still in flight ends by its own deadline and never delays exit.
            self._executor = DaemonThreadPool(
                max_workers=cfg.max_accounts_concurrency * cfg.max_concurrency_per_account,
                thread_name_prefix=f"sagemaker-{cfg.name}",
            )
        return self._executor

    def _runtime(self) -> AwsClients:
        with self._aws_lock:
            if self._aws is None:
                cfg = self.config
                self._aws = AwsClients(
                    endpoint_url=cfg.endpoint_url,
                    connect_timeout=cfg.connect_timeout,
                    read_timeout=cfg.read_timeout,
                    max_attempts=cfg.max_attempts,
                    call_timeout=cfg.call_timeout,
                    max_pool_connections=cfg.max_accounts_concurrency * cfg.max_concurrency_per_account,
                )
            return self._aws

    def _fleet_now(self) -> AwsFleet:
        """The fleet kept between cycles (built on first use, in a worker thread)."""
        aws = self._runtime()
        with self._aws_lock:
            if self._fleet is None:
                cfg = self.config
                self._fleet = AwsFleet(
                    aws, max_pool_connections=cfg.max_accounts_concurrency * cfg.max_concurrency_per_account
                )
            return self._fleet

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # Not waited for: a call in flight ends by its own call_timeout (per attempt) in a
            # daemon thread, and must not hold up the end of a cycle or of the process.
            executor.shutdown(wait=False, cancel_futures=True)
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            await asyncio.to_thread(fleet.close)

    def secrets(self) -> Sequence[str]:
        cfg = self.config
        external = [a.external_id.get_secret_value() for a in cfg.accounts if a.external_id is not None]
        org = cfg.organization
        if org is not None:
            external += [s.get_secret_value() for s in (org.external_id, org.member_external_id) if s is not None]
        return tuple(dict.fromkeys([*external, *self._run_secrets]))

    # -- discovery

    async def discover(self) -> DiscoveryResult:
        cfg = self.config
        loop = asyncio.get_running_loop()
        fleet = await loop.run_in_executor(self._pool(), self._fleet_now)
        fleet.new_cycle()
        gate = asyncio.Semaphore(cfg.max_accounts_concurrency)
        entries = [(f"accounts[{i}]", a) for i, a in enumerate(cfg.accounts)]
        org_failure: ItemFailure | None = None
        org_secrets: list[str] = []
        if cfg.organization is not None:
            try:
                members = await loop.run_in_executor(self._pool(), self._list_members, org_secrets)
            except Exception as exc:
                probe = exc if isinstance(exc, AwsProbeError) else self._unexpected(exc, "organization")
                org_failure = ItemFailure(self.name, "organization", probe.reason, probe.kind)
            else:
                # Explicit entries win: an account they reach is not looked at twice.
                explicit = {a.role_account_id for a in cfg.accounts if a.role_account_id}
                explicit |= set(self._known_ids.values())
                entries += [("organization", self._member(m)) for m in members if m.account_id not in explicit]
        outcomes = await self.gather_scopes(
            [self._account(i, origin, a, gate) for i, (origin, a) in enumerate(entries)],
            failures=lambda o: len(o.failures),
            unit="accounts",
        )
        self._run_secrets = tuple(dict.fromkeys([*org_secrets, *(s for o in outcomes for s in o.secrets)]))
        return self._assemble(list(outcomes), org_failure)

    def _list_members(self, secrets: list[str]) -> list[MemberAccount]:
        """The organization's selected active accounts; raises AwsProbeError. Blocking."""
        org = self.config.organization
        assert org is not None
        fleet = self._fleet_now()
        if org.role_arn:
            home = PARTITION_HOME.get(org.role_arn.split(":")[1], "us-east-1")
        else:
            home = fleet.home_region(org.profile) or "us-east-1"
        management = fleet.open(org, [home], service="organizations", secrets=secrets)
        partition = management.partition or partition_of_region(home)
        members = fleet.run(
            management.credentials,
            list_member_accounts,
            lambda region: fleet.client("organizations", region),
            org,
            partition=partition,
            secrets=secrets,
        )
        log.debug("sagemaker %s: organization lists %d selected active account(s)", self.name, len(members))
        return members

    def _member(self, member: MemberAccount) -> AwsAccount:
        org = self.config.organization
        assert org is not None
        key = (member.account_id, member.name, member.partition)
        entry = self._members.get(key)
        if entry is None:
            fields: dict[str, Any] = {
                "role_arn": org.role_arn_for(member.account_id, member.partition),
                "session_name": org.member_session_name,
                "labels": {"account_name": member.name, **org.labels},
                "metadata": org.metadata,
            }
            if org.member_external_id is not None:
                fields["external_id"] = org.member_external_id
            entry = self._members[key] = AwsAccount.model_validate(fields)
        return entry

    def _regions_of(self, account: AwsAccount) -> RegionsSpec:
        return account.regions if account.regions is not None else self.config.regions

    async def _account(self, index: int, origin: str, account: AwsAccount, gate: asyncio.Semaphore) -> _AccountOutcome:
        cfg = self.config
        loop = asyncio.get_running_loop()
        async with gate:
            known_id = account.role_account_id or self._known_ids.get(index)
            secrets: list[str] = []
            try:
                opened = await loop.run_in_executor(self._pool(), self._open_account, account, secrets)
            except Exception as exc:
                probe = exc if isinstance(exc, AwsProbeError) else self._unexpected(exc, account.label)
                scope = (*self.root_scope, known_id or account.label)
                return _AccountOutcome(
                    index=index,
                    origin=origin,
                    account=account,
                    account_id=known_id,
                    scope=ScopeOutcome(scope=scope, ok=False, error=probe.reason),
                    failures=[ItemFailure(self.name, account.label, probe.reason, probe.kind)],
                    secrets=secrets,
                )
            if origin.startswith("accounts["):
                self._known_ids[index] = opened.account_id
            outcome = _AccountOutcome(
                index=index,
                origin=origin,
                account=account,
                account_id=opened.account_id,
                scope=ScopeOutcome(scope=(*self.root_scope, opened.account_id), ok=True),
                secrets=secrets,
            )
            region_gate = asyncio.Semaphore(cfg.max_concurrency_per_account)

            async def check(region: str) -> _RegionCounts | AwsProbeError:
                async with region_gate:
                    try:
                        return await loop.run_in_executor(self._pool(), self._check_region, opened, region, secrets)
                    except AwsProbeError as exc:
                        return exc
                    except Exception as exc:
                        return self._unexpected(exc, f"{opened.account_id}/{region}")

            results = await asyncio.gather(*(check(r) for r in opened.regions))
        keys = opened.keys() if account.send_access_keys else None
        for region, res in zip(opened.regions, results, strict=True):
            scope = (*self.root_scope, opened.account_id, region)
            item = f"{opened.account_id}/{region}"
            if isinstance(res, AwsProbeError):
                outcome.region_scopes.append(ScopeOutcome(scope=scope, ok=False, error=res.reason))
                outcome.failures.append(ItemFailure(self.name, item, res.reason, res.kind))
                continue
            if res.mlflow_error is not None:
                # The usage findings of this region stand; the failed scope keeps the region's
                # managed MLflow services (and its usage service) from being judged gone.
                reason = f"managed MLflow: {res.mlflow_error.reason}"
                outcome.region_scopes.append(ScopeOutcome(scope=scope, ok=False, error=reason))
                outcome.failures.append(ItemFailure(self.name, item, reason, res.mlflow_error.kind))
            else:
                outcome.region_scopes.append(ScopeOutcome(scope=scope, ok=True))
            if cfg.sagemaker_usage and (cfg.register_empty or any(res.counts.values())):
                outcome.findings.append(self._finding(account, opened, region, res, keys))
            outcome.findings.extend(self._mlflow_finding(account, opened, region, m) for m in res.mlflow)
        return outcome

    def _unexpected(self, exc: Exception, item: str) -> AwsProbeError:
        # A bug or an unforeseen library error: one account or region must not sink the others.
        log.debug("sagemaker %s: unexpected error for %s", self.name, item, exc_info=True)
        return AwsProbeError(
            f"unexpected {type(exc).__name__}: {clean_aws_text(str(exc), self.secrets())}", kind="error"
        )

    def _labels(self, account: AwsAccount, account_id: str, region: str) -> dict[str, str]:
        return {"account": account_id, "region": region, "discoverer": self.name, **account.labels}

    def _finding(
        self, account: AwsAccount, opened: FleetAccount, region: str, res: _RegionCounts, keys: Any
    ) -> Finding:
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
        if account.send_access_keys and keys is not None:
            attributes["access_keys"] = {
                "access_key_id": keys.access_key_id,
                "secret_access_key": SecretStr(keys.secret_access_key),
                "session_token": SecretStr(keys.session_token) if keys.session_token else None,
            }
        return Finding(
            kind=ServiceType.SAGEMAKER,
            source=self.name,
            scope=(*self.root_scope, opened.account_id, region),
            key=f"{opened.account_id}/{region}",
            attributes=attributes,
            labels=self._labels(account, opened.account_id, region),
            metadata=self.config.defaults.merged(account.metadata),
            name=account.name,
            name_template=cfg.name_template,
        )

    def _mlflow_finding(self, account: AwsAccount, opened: FleetAccount, region: str, m: ManagedMlflow) -> Finding:
        managed = self.config.managed_mlflow
        labels = {
            **self._labels(account, opened.account_id, region),
            "server": m.name,
            "mlflow_version": m.mlflow_version,
            "status": m.status,
            "resource": m.kind,
        }
        return Finding(
            kind=ServiceType.MLFLOW,
            source=self.name,
            scope=(*self.root_scope, opened.account_id, region),
            key=m.arn,
            attributes={
                "tracking_uri": m.arn,
                "registry_uri": m.arn,
                "arn": m.arn,
                "resource": m.kind,
                "account_id": opened.account_id,
                "region": region,
                "status": m.status,
                "mlflow_version": m.mlflow_version,
                "url": m.url,
            },
            labels=labels,
            metadata=self.config.defaults.merged(account.metadata).merged(managed.metadata),
            name_template=managed.name_template if m.kind == "tracking-server" else managed.app_name_template,
        )

    def _assemble(self, outcomes: list[_AccountOutcome], org_failure: ItemFailure | None = None) -> DiscoveryResult:
        result = DiscoveryResult(source=self.name)
        root_errors: list[str] = []
        if org_failure is not None:
            # Accounts left out of a failed listing would look gone: nothing may be deleted.
            root_errors.append(org_failure.reason)
            result.failures.append(org_failure)
        # Two entries can reach the same account (a profile and a role into it, say). Each
        # (account, region) is reported once, and a scope reported twice fails if either entry
        # failed: a failure in one entry must keep protecting that account's services.
        account_scopes: dict[Scope, ScopeOutcome] = {}
        region_scopes: dict[Scope, ScopeOutcome] = {}
        found_by: dict[tuple[ServiceType, str], str] = {}
        for o in outcomes:
            if o.account_id is None:
                # Without an id the failed scope cannot cover this account's earlier services, so
                # the root fails too: nothing of this discoverer may be judged missing this cycle.
                root_errors.append(f"account {o.account.label} could not be identified")
            _keep_worse(account_scopes, o.scope)
            for scope in o.region_scopes:
                _keep_worse(region_scopes, scope)
            for finding in o.findings:
                ident = (finding.kind, finding.key)
                if ident in found_by:
                    reason = f"{finding.key} is also reached by {found_by[ident]}; reported once"
                    result.ignored.append(ItemFailure(self.name, o.account.label, reason, "error"))
                    continue
                found_by[ident] = o.origin
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

    def _open_account(self, account: AwsAccount, secrets: list[str]) -> FleetAccount:
        """Credentials, account id and regions of one account; raises AwsProbeError."""
        opened = self._fleet_now().open(account, self._regions_of(account), service="sagemaker", secrets=secrets)
        log.debug("sagemaker %s: account %s, %d region(s)", self.name, opened.account_id, len(opened.regions))
        return opened

    def _check_region(self, opened: FleetAccount, region: str, secrets: list[str]) -> _RegionCounts:
        fleet = self._fleet_now()
        cfg = self.config
        counts: dict[str, int] = {}
        complete = True
        try:
            client = fleet.client("sagemaker", region)
            if cfg.sagemaker_usage:
                for operation, key, attribute in _LISTINGS:
                    counts[attribute], more = fleet.run(
                        opened.credentials, first_page, client, operation, key, page_size=_PAGE_SIZE
                    )
                    complete = complete and not more
        except Exception as exc:
            raise translate_aws_error(exc, where=None, secrets=secrets, region_call=True) from exc
        managed = cfg.managed_mlflow
        if not managed.enabled:
            return _RegionCounts(counts=counts, complete=complete)
        try:
            found = fleet.run(
                opened.credentials,
                list_managed_mlflow,
                client,
                tracking_servers=managed.tracking_servers,
                apps=managed.apps,
            )
        except Exception as exc:
            probe = translate_aws_error(exc, where=None, secrets=secrets, region_call=True)
            if not cfg.sagemaker_usage:
                raise probe from exc
            return _RegionCounts(counts=counts, complete=complete, mlflow_error=probe)
        return _RegionCounts(counts=counts, complete=complete, mlflow=found)
