"""The ``sagemaker`` discoverer: one ML model service per AWS (account, region) that uses SageMaker.

For every configured account it obtains credentials (a named profile, the ambient chain, and
optionally an assumed role on top), works out the regions to look at, and in each region reads
the first non-empty page of models, model package groups and endpoints. A region counts as "in
use" when any of the three is non-empty; only those are reported unless ``register_empty``.

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

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from mlsvc_discover._duration import Duration
from mlsvc_discover._threads import DaemonThreadPool
from mlsvc_discover.aws import (
    AwsAccount,
    AwsClients,
    AwsProbeError,
    OpenAccount,
    RegionsSpec,
    check_endpoint_url,
    check_regions,
    clean_aws_text,
    first_page,
    open_account,
    translate_aws_error,
)
from mlsvc_discover.sources.base import (
    Discoverer,
    DiscovererConfig,
    DiscoveryResult,
    Finding,
    ItemFailure,
    PlatformKind,
    Scope,
    ScopeOutcome,
)

# AwsAccount and AwsProbeError live in mlsvc_discover.aws; re-exported for existing imports.
__all__ = ["AwsAccount", "AwsProbeError", "SageMakerConfig", "SageMakerDiscoverer"]

log = logging.getLogger(__name__)

# (operation, key of the items in a page, attribute name in the finding)
_LISTINGS = (
    ("list_models", "Models", "models"),
    ("list_model_package_groups", "ModelPackageGroupSummaryList", "model_package_groups"),
    ("list_endpoints", "Endpoints", "endpoints"),
)
_PAGE_SIZE = 100  # the largest MaxResults all three list calls accept


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
        self._executor: DaemonThreadPool | None = None
        self._aws: AwsClients | None = None
        self._aws_lock = threading.Lock()
        # Account ids of profile/ambient accounts seen in earlier cycles: when such an account
        # fails later, its scope still carries the id, so its services stay protected by it.
        self._known_ids: dict[int, str] = {}
        self._run_secrets: tuple[str, ...] = ()

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

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # Not waited for: a call in flight ends by its own call_timeout (per attempt) in a
            # daemon thread, and must not hold up the end of a cycle or of the process.
            executor.shutdown(wait=False, cancel_futures=True)

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

    def _regions_of(self, account: AwsAccount) -> RegionsSpec:
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
        return AwsProbeError(
            f"unexpected {type(exc).__name__}: {clean_aws_text(str(exc), self.secrets())}", kind="error"
        )

    def _finding(self, account: AwsAccount, opened: OpenAccount, region: str, res: _RegionCounts) -> Finding:
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
            metadata=self.config.defaults.merged(account.metadata),
            name=account.name,
            name_template=cfg.name_template,
        )

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

    def _open_account(self, account: AwsAccount) -> OpenAccount:
        """Credentials, account id and regions of one account; raises AwsProbeError."""
        opened = open_account(self._runtime(), account, self._regions_of(account), service="sagemaker")
        log.debug("sagemaker %s: account %s, %d region(s)", self.name, opened.account_id, len(opened.regions))
        return opened

    def _check_region(self, opened: OpenAccount, region: str) -> _RegionCounts:
        aws = self._runtime()
        secrets = opened.keys.values() if opened.keys else []
        counts: dict[str, int] = {}
        complete = True
        try:
            client = aws.client(opened.session, opened.lock, "sagemaker", region)
            try:
                for operation, key, attribute in _LISTINGS:
                    counts[attribute], more = first_page(client, operation, key, page_size=_PAGE_SIZE)
                    complete = complete and not more
            finally:
                client.close()
        except Exception as exc:
            raise translate_aws_error(exc, where=None, secrets=secrets, region_call=True) from exc
        return _RegionCounts(counts=counts, complete=complete)
