"""Pytest fixtures for the OpenMetadata stand-in (loaded by tests/conftest.py).

Each test gets its own fresh server: starting one takes about a millisecond, and a shared one
would let writes of one test leak into the counts and listings of the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testing.openmetadata import OpenMetadataStandIn, Principal, schema_validator

__all__ = [
    "OM_BOT_NAME",
    "OM_TOKEN",
    "make_standin",
    "om_any",
    "om_standin",
    "om_standin_bulk",
    "om_standin_nobulk",
    "om_token",
    "schema_validator",
]

OM_TOKEN = "om-test-bot-token-7f3a"  # a fake token only the stand-in knows
OM_BOT_NAME = "ingestion-bot"


def make_standin(*, bulk_enabled: bool = False, **kwargs: object) -> OpenMetadataStandIn:
    """A started stand-in that knows :data:`OM_TOKEN` as the bot ``ingestion-bot``.

    Like a real server by default (no bulk route); ``bulk_enabled=True`` serves the seed's
    ``PUT .../bulk``.
    """
    standin = OpenMetadataStandIn(
        bulk_enabled=bulk_enabled,
        tokens={OM_TOKEN: Principal(OM_BOT_NAME, is_bot=True)},
        **kwargs,  # type: ignore[arg-type]
    )
    return standin.start()


def _serve(standin: OpenMetadataStandIn) -> Iterator[OpenMetadataStandIn]:
    try:
        yield standin
    finally:
        standin.stop()
    if standin.internal_errors:
        pytest.fail("OpenMetadata stand-in internal errors:\n" + "\n".join(standin.internal_errors))


@pytest.fixture(scope="session")
def om_token() -> str:
    """The bearer token of the test bot registered in every stand-in fixture."""
    return OM_TOKEN


@pytest.fixture(params=["real", "bulk"])
def om_standin(request: pytest.FixtureRequest, om_token: str) -> Iterator[OpenMetadataStandIn]:
    """A fresh stand-in, once like a real server (no bulk route) and once with the seed's bulk route.

    Fails the test if the server hit an internal error.
    """
    yield from _serve(make_standin(bulk_enabled=request.param == "bulk"))


@pytest.fixture
def om_standin_nobulk(om_token: str) -> Iterator[OpenMetadataStandIn]:
    """A fresh stand-in like the real server: no bulk route (500 "HTTP 405 Method Not Allowed")."""
    yield from _serve(make_standin(bulk_enabled=False))


@pytest.fixture
def om_standin_bulk(om_token: str) -> Iterator[OpenMetadataStandIn]:
    """A fresh stand-in with the seed's bulk route (no released server has it)."""
    yield from _serve(make_standin(bulk_enabled=True))


@pytest.fixture(params=["bulk", "nobulk"])
def om_any(request: pytest.FixtureRequest, om_token: str) -> Iterator[OpenMetadataStandIn]:
    """Runs the test against both kinds of server: with and without ``PUT .../bulk``."""
    yield from _serve(make_standin(bulk_enabled=request.param == "bulk"))
