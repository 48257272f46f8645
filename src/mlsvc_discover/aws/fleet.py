"""Clients and credentials reused across accounts and cycles: what makes a fleet of accounts cheap.

Public seam:

- :class:`AwsFleet`: one per discoverer, kept between cycles. It holds one botocore client per
  (service, region) for the whole fleet, and per account a credentials object that botocore
  refreshes before it expires (``DeferredRefreshableCredentials`` whose refresher calls STS
  ``AssumeRole``). ``open(config, regions, service=...)`` gives a :class:`FleetAccount`;
  ``run(account, fn, *args)`` runs blocking AWS work as that account; ``sweep()`` forgets the
  accounts not opened since the last sweep (an account that left the organization).
- :func:`offered_regions`: regions offering a service in a partition (botocore's endpoint data).

Why one client per region, not per account: a botocore client costs about 10 ms of CPU and
0.6-0.8 MB to build (most of it its generated class), so 200 accounts x 4 regions rebuilt every
cycle was most of a cycle's CPU, and kept alive it would be 600 MB. A client's credentials are
only read when a request is signed, in the thread making the call; the fleet's clients hold a
credentials object that answers with the credentials of the account the current thread works
for (:meth:`AwsFleet.run` sets it). Requests to one regional endpoint also share one connection
pool, as they would from one host.

Blocking; call from worker threads. botocore is imported inside functions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from mlsvc_discover.aws.accounts import AwsCredentialsConfig
from mlsvc_discover.aws.errors import translate_aws_error
from mlsvc_discover.aws.organization import partition_of_region
from mlsvc_discover.aws.regions import PARTITION_HOME, RegionsSpec
from mlsvc_discover.aws.session import AwsClients, AwsKeys, call

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.session import Session

__all__ = ["AwsFleet", "FleetAccount", "offered_regions"]

T = TypeVar("T")


class _ThreadCredentials:
    """Credentials that are those of the account the calling thread works for.

    botocore's signer only calls ``get_frozen_credentials()``; that is all this provides.
    """

    method = "mlsvc-discover-fleet"

    def __init__(self) -> None:
        self._local = threading.local()

    @contextmanager
    def using(self, credentials: Any) -> Iterator[None]:
        # A stack: refreshing one account's role runs STS as the source account, inside a call
        # made as the member account.
        stack: list[Any] = self._local.__dict__.setdefault("stack", [])
        stack.append(credentials)
        try:
            yield
        finally:
            stack.pop()

    def get_deferred_property(self, name: str) -> Callable[[], None]:
        # botocore asks for the account id when it builds a client, for account-based endpoints
        # (DynamoDB only). A client here serves many accounts, so it has no account id.
        return lambda: None

    def get_frozen_credentials(self) -> Any:
        stack: list[Any] = self._local.__dict__.get("stack", [])
        if not stack:
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()
        return stack[-1].get_frozen_credentials()


def _fixed_resolver(credentials: Any) -> Any:
    """A botocore credential resolver that always answers ``credentials``."""
    from botocore.credentials import CredentialProvider, CredentialResolver

    class _Fixed(CredentialProvider):
        METHOD = _ThreadCredentials.method

        def load(self) -> Any:
            return credentials

    return CredentialResolver(providers=[_Fixed()])


@dataclass
class FleetAccount:
    """An account whose credentials worked this cycle: its id, partition and regions."""

    account_id: str
    partition: str
    regions: list[str]
    credentials: Any  # botocore credentials (refreshable for assumed roles)

    def keys(self) -> AwsKeys | None:
        """The credentials in use right now (they change when botocore refreshes them)."""
        frozen = self.credentials.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            return None
        return AwsKeys(frozen.access_key, frozen.secret_key, frozen.token)


def offered_regions(session: Session, service: str, partition: str) -> list[str]:
    return list(session.get_available_regions(service, partition_name=partition))


class AwsFleet:
    """Shared clients and per-account refreshable credentials of one discoverer; see the module doc."""

    def __init__(self, aws: AwsClients, *, max_pool_connections: int, time_fetcher: Callable[[], Any] | None = None):
        from botocore.config import Config

        self.aws = aws
        self._config = aws.client_config.merge(Config(max_pool_connections=max(10, max_pool_connections)))
        self._thread_credentials = _ThreadCredentials()
        self._session = aws.session()
        # Clients of the fleet session sign with _ThreadCredentials, whatever the environment holds.
        self._session.register_component("credential_provider", _fixed_resolver(self._thread_credentials))
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], BaseClient] = {}
        self._roles: dict[tuple[str | None, str, str | None, str], Any] = {}
        self._used: set[tuple[str | None, str, str | None, str]] = set()
        self._bases: dict[str | None, tuple[Session, threading.Lock]] = {}
        self._time_fetcher = time_fetcher
        self.assume_role_calls = 0  # how often STS AssumeRole ran: a measure of reuse

    # -- clients

    def client(self, service: str, region: str) -> BaseClient:
        key = (service, region)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._session.create_client(
                    service, region_name=region, endpoint_url=self.aws.endpoint_url, config=self._config
                )
                self.aws.attach_deadline(client, self._session.get_config_variable("ca_bundle"))
                self._clients[key] = client
            return client

    @property
    def session(self) -> Session:
        return self._session

    def run(self, credentials: Any, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` with the fleet's clients signing as ``credentials``; blocking."""
        with self._thread_credentials.using(credentials):
            return fn(*args, **kwargs)

    # -- credentials

    def new_cycle(self) -> None:
        """Forget the source sessions (profiles are read again) and the accounts not opened since."""
        with self._lock:
            self._bases.clear()
            for key in set(self._roles) - self._used:
                del self._roles[key]
            self._used.clear()

    def _base_credentials(self, profile: str | None) -> Any:
        """Credentials of a profile (or the ambient chain), read once per cycle."""
        with self._lock:
            base = self._bases.get(profile)
            if base is None:
                base = (self.aws.session(profile), threading.Lock())
                self._bases[profile] = base
        session, lock = base
        with lock:
            credentials = session.get_credentials()
        if credentials is None:
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()
        return credentials

    def home_region(self, profile: str | None) -> str | None:
        """The region set for a profile (or the environment), if any."""
        with self._lock:
            base = self._bases.get(profile)
        session = base[0] if base else self.aws.session(profile)
        return cast("str | None", session.get_config_variable("region"))

    def _role_credentials(self, config: AwsCredentialsConfig, home: str) -> Any:
        """The role's refreshable credentials: cached, or assumed now (raising botocore's errors)."""
        from botocore.credentials import RefreshableCredentials

        arn = cast("str", config.role_arn)
        external_id = config.external_id.get_secret_value() if config.external_id else None
        key = (config.profile, arn, external_id, config.session_name)
        with self._lock:
            self._used.add(key)
            cached = self._roles.get(key)
        if cached is not None:
            return cached
        params: dict[str, Any] = {"RoleArn": arn, "RoleSessionName": config.session_name}
        if external_id:
            params["ExternalId"] = external_id
        profile = config.profile

        def refresh() -> dict[str, Any]:
            source = self._base_credentials(profile)
            sts = self.client("sts", home)
            answer = self.run(source, call, sts, "assume_role", **params)
            with self._lock:
                self.assume_role_calls += 1
            creds = answer["Credentials"]
            return {
                "access_key": creds["AccessKeyId"],
                "secret_key": creds["SecretAccessKey"],
                "token": creds.get("SessionToken"),
                "expiry_time": creds["Expiration"].isoformat(),
            }

        # The first AssumeRole runs here, so a refused role is an ordinary error of this
        # account; later ones run inside botocore when less than 15 minutes are left.
        first = refresh()
        kwargs: dict[str, Any] = {}
        if self._time_fetcher is not None:
            kwargs["time_fetcher"] = self._time_fetcher
        credentials = RefreshableCredentials(
            access_key=first["access_key"],
            secret_key=first["secret_key"],
            token=first["token"],
            expiry_time=datetime.fromisoformat(first["expiry_time"]),
            refresh_using=refresh,
            method="assume-role",
            **kwargs,
        )
        with self._lock:
            return self._roles.setdefault(key, credentials)

    def _forget(self, config: AwsCredentialsConfig) -> None:
        external_id = config.external_id.get_secret_value() if config.external_id else None
        with self._lock:
            self._roles.pop((config.profile, cast("str", config.role_arn), external_id, config.session_name), None)

    def open(
        self, config: AwsCredentialsConfig, regions: RegionsSpec, *, service: str, secrets: list[str]
    ) -> FleetAccount:
        """Credentials, id, partition and regions of one account; raises AwsProbeError. Blocking.

        Assumed-role credentials are reused from earlier cycles until botocore refreshes them.
        ``secrets`` receives the external id and the keys in use, for redaction.
        """
        external_id = config.external_id.get_secret_value() if config.external_id else None
        if external_id:
            secrets.append(external_id)
        configured = regions if isinstance(regions, list) else None
        if config.role_arn:
            partition = config.role_arn.split(":")[1]
            home = configured[0] if configured and partition_of_region(configured[0]) == partition else None
            home = home or PARTITION_HOME.get(partition, "us-east-1")
            try:
                credentials = self._role_credentials(config, home)
                frozen = credentials.get_frozen_credentials()  # assumes the role unless still fresh
            except Exception as exc:
                self._forget(config)  # the next cycle asks STS again instead of a broken object
                raise translate_aws_error(exc, where=f"cannot assume role {config.role_arn}", secrets=secrets) from exc
            account_id = cast("str", config.role_account_id)
        else:
            try:
                session_region = self.home_region(config.profile)
                credentials = self._base_credentials(config.profile)
                home = (configured[0] if configured else None) or session_region or "us-east-1"
                identity = self.run(credentials, call, self.client("sts", home), "get_caller_identity")
                frozen = credentials.get_frozen_credentials()
            except Exception as exc:
                where = f"cannot identify the account of {config.label}"
                raise translate_aws_error(exc, where=where, secrets=secrets) from exc
            account_id = str(identity["Account"])
            partition = str(identity.get("Arn", "arn:aws:")).split(":")[1] or "aws"
            if configured is None and session_region is None:
                home = PARTITION_HOME.get(partition, "us-east-1")
        secrets.extend(v for v in (frozen.access_key, frozen.secret_key, frozen.token) if v)
        if configured is not None:
            resolved = list(configured)
        else:
            resolved = self._enabled_regions(credentials, home, partition, account_id, service=service, secrets=secrets)
        return FleetAccount(account_id=account_id, partition=partition, regions=resolved, credentials=credentials)

    def _enabled_regions(
        self, credentials: Any, home: str, partition: str, account_id: str, *, service: str, secrets: list[str]
    ) -> list[str]:
        offered = offered_regions(self._session, service, partition)
        try:
            answer = self.run(credentials, call, self.client("ec2", home), "describe_regions", AllRegions=False)
        except Exception as exc:
            where = f"cannot list the enabled regions of account {account_id}"
            raise translate_aws_error(exc, where=where, secrets=secrets) from exc
        # AllRegions=False already leaves disabled opt-in regions out on AWS; the status check
        # also holds where an implementation (moto) returns every region regardless.
        enabled = {r["RegionName"] for r in answer.get("Regions", []) if r.get("OptInStatus") != "not-opted-in"}
        return [r for r in offered if r in enabled]

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            self._roles.clear()
            self._bases.clear()
        for client in clients:
            client.close()
