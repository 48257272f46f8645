"""botocore sessions and clients for AWS discoverers (blocking: call from worker threads).

Public seam:

- :class:`AwsClients`: the botocore pieces one discoverer shares across its accounts (the
  process-wide data loader, one client ``Config`` with timeouts and retries, an optional
  ``endpoint_url``, and with ``call_timeout`` a total deadline per call attempt, see
  :mod:`mlsvc_discover.aws.deadline`). ``session(profile=..., keys=...)`` builds a botocore session;
  ``client(session, lock, service, region)`` a client, under the session's lock.
- :class:`AwsKeys`: a set of credentials; ``values()`` lists them for log redaction.
- :func:`call`: call a botocore operation by name; :func:`first_page`: size of the first
  non-empty page of a paginated listing.
- :func:`check_endpoint_url`: the validator of an ``endpoint_url`` config field.

botocore is imported lazily, inside these functions: the agent must answer its first probe
within a second, and a config without AWS must never pay for importing it. botocore is used
directly rather than through boto3 because boto3 adds nothing here but an import, and because
sharing one botocore data loader across every session in the process saves parsing a large
service model again for each account and cycle; a boto3 session would also append to the
shared loader's search path every time one is created.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from mlsvc_discover.aws.errors import USERINFO_RE, redact_userinfo

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.config import Config
    from botocore.loaders import Loader
    from botocore.session import Session

    from mlsvc_discover.aws.deadline import DeadlineSender

__all__ = ["AwsClients", "AwsKeys", "call", "check_endpoint_url", "first_page", "shared_loader"]


@dataclass(frozen=True)
class AwsKeys:
    """Credentials in use; never printed (the dataclass repr is only used in tests on fakes)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None

    def values(self) -> list[str]:
        return [v for v in (self.access_key_id, self.secret_access_key, self.session_token) if v]


_loader_lock = threading.Lock()
_loader: Loader | None = None


def shared_loader() -> Loader:
    """One botocore data loader for the process.

    The loader caches parsed service models (see bench/README.md for what parsing costs);
    they are read-only, so every session of every discoverer instance can share them.
    """
    global _loader  # noqa: PLW0603 - a lazily built process-wide cache
    with _loader_lock:
        if _loader is None:
            from botocore.loaders import create_loader

            _loader = create_loader()
        return _loader


class AwsClients:
    """botocore pieces shared by every account of one discoverer; build it in a worker thread."""

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
        call_timeout: float | None = None,
        max_pool_connections: int = 10,
    ) -> None:
        from botocore.config import Config

        self.loader = shared_loader()
        self.endpoint_url = endpoint_url
        self._sender: DeadlineSender | None = None
        if call_timeout is not None:
            from mlsvc_discover.aws.deadline import DeadlineSender

            self._sender = DeadlineSender(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                deadline=call_timeout,
                max_pool_connections=max_pool_connections,
            )
        self.client_config: Config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # total_max_attempts counts the first try; botocore's "max_attempts" key counts retries.
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            user_agent_extra="mlsvc-discover",
        )

    def session(self, profile: str | None = None, keys: AwsKeys | None = None) -> Session:
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
            client = session.create_client(
                service, region_name=region, endpoint_url=self.endpoint_url, config=self.client_config
            )
            ca_bundle = cast("str | None", session.get_config_variable("ca_bundle"))
        self.attach_deadline(client, ca_bundle)
        return client

    def attach_deadline(self, client: BaseClient, ca_bundle: str | None) -> None:
        """Give ``client`` the total per-attempt deadline (``call_timeout``), if one is set.

        Every client that talks to AWS must go through here, including clients built outside
        :meth:`client` (the account fleet's shared clients).
        """
        if self._sender is not None:
            # The stubs type handlers as returning None; before-send handlers may return the response.
            handler = cast("Callable[..., None]", functools.partial(self._sender, ca_bundle=ca_bundle))
            client.meta.events.register("before-send", handler)


def call(client: BaseClient, operation: str, **params: Any) -> dict[str, Any]:
    """``client.<operation>(**params)``; raises botocore's errors (translate them at the caller)."""
    # The stubs' BaseClient does not declare the generated operation methods.
    method = cast("Callable[..., dict[str, Any]]", getattr(client, operation))
    return method(**params)


def first_page(client: BaseClient, operation: str, key: str, *, page_size: int) -> tuple[int, bool]:
    """Items on the first non-empty page, and whether more pages follow (counts are then partial)."""
    pages: Iterator[dict[str, Any]] = iter(
        client.get_paginator(operation).paginate(PaginationConfig={"PageSize": page_size})
    )
    for page in pages:
        items = page.get(key) or []
        if items:
            return len(items), bool(page.get("NextToken"))
    return 0, False


def check_endpoint_url(value: str | None) -> str | None:
    """Validate an ``endpoint_url`` config value: http(s), no userinfo; trailing slash dropped."""
    if value is None:
        return None
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{redact_userinfo(value)!r} is not an http(s) URL; write e.g. http://127.0.0.1:5000")
    if USERINFO_RE.search(value):
        # AWS requests are signed; a password in the URL would only leak into logs and the catalog.
        raise ValueError("endpoint_url must not contain user:password@; AWS calls are signed with the credentials")
    return value.rstrip("/")
