"""Errors raised by mlsvc-discover.

Every error the package raises on purpose derives from :class:`MlsvcDiscoverError`.
Foreign errors (httpx, botocore, yaml, pydantic) are translated at the boundary
with ``raise X(...) from exc`` so callers only ever catch these::

    MlsvcDiscoverError
    ├── ConfigError                 bad config or usage; exit code 2, nothing contacted
    ├── MappingError                a finding cannot become a valid CreateMlModelServiceRequest
    │   └── NameCollisionError      two findings map to one service name
    ├── StateError                  the state file cannot be written (fails the run under sync)
    │   └── StateLockedError        another agent holds the state file's lock
    ├── DiscoveryError              a discoverer scope failed (soft: the cycle goes on)
    │   └── ProbeError              one MLflow URI / AWS (account, region) failed
    └── OpenMetadataError           talking to OpenMetadata failed
        ├── OpenMetadataUnavailable connection error, timeout or 5xx after retries (soft)
        ├── OpenMetadataAuthError   401 / 403: stop writing for this cycle, no retry
        ├── OpenMetadataRequestError 400 / 404 / 409 / other 4xx: this item is wrong
        ├── OpenMetadataBadAnswer   an answer that cannot be read (shape, size, cursor loop)
        └── OpenMetadataSetupError  the ownership tag is missing and cannot be created

Messages never contain secrets: URIs are redacted before they are formatted in.
"""

from __future__ import annotations


class MlsvcDiscoverError(Exception):
    """Base class of every error raised by mlsvc-discover."""


class ConfigError(MlsvcDiscoverError):
    """The configuration or the command line is invalid.

    ``key`` names the offending config key (dotted path), when there is one.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class MappingError(MlsvcDiscoverError):
    """A finding cannot be turned into a valid service request."""


class NameCollisionError(MappingError):
    """Two distinct findings map to the same OpenMetadata service name."""


class StateError(MlsvcDiscoverError):
    """The state file (``state.path``) cannot be written; ``path`` names it."""

    def __init__(self, message: str, *, path: object = None) -> None:
        self.path = path
        super().__init__(message)


class StateLockedError(StateError):
    """Another agent holds the lock of the same state file."""


class DiscoveryError(MlsvcDiscoverError):
    """A discoverer (or one of its scopes) failed."""


class ProbeError(DiscoveryError):
    """One probe (an MLflow URI, an AWS account and region) failed; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class OpenMetadataError(MlsvcDiscoverError):
    """A request to OpenMetadata failed.

    ``status`` is the HTTP status when the server answered, else ``None``.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class OpenMetadataUnavailable(OpenMetadataError):
    """OpenMetadata could not be reached or kept failing (5xx, 429, timeouts) after retries."""


class OpenMetadataAuthError(OpenMetadataError):
    """OpenMetadata rejected the token (401) or the principal (403)."""


class OpenMetadataRequestError(OpenMetadataError):
    """OpenMetadata rejected one request (400, 404, 409, other 4xx)."""


class OpenMetadataBadAnswer(OpenMetadataError):
    """OpenMetadata answered something the agent cannot read: a body of the wrong shape, one
    larger than ``max_response_bytes``, or a listing whose cursor repeats. Never retried."""


class OpenMetadataSetupError(OpenMetadataError):
    """The agent's classification or marker tag is missing and the token may not create it."""
