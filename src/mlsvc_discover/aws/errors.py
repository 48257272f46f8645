"""AWS errors as data: botocore exceptions become :class:`AwsProbeError` with a kind and a safe reason.

Public seam for every AWS discoverer:

- :class:`AwsProbeError` (a :class:`~mlsvc_discover._errors.ProbeError`): ``reason`` (one line,
  no keys, tokens or passwords) and ``kind``, one of ``access_denied``, ``expired_credentials``,
  ``region_unavailable``, ``throttled``, ``timeout``, ``unreachable``, ``error``.
- :func:`translate_aws_error`: the one place botocore errors are translated, to be used as
  ``raise translate_aws_error(exc, where=..., secrets=...) from exc``.
- :func:`clean_aws_text` and :func:`redact_userinfo`: make foreign text safe to put in a reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mlsvc_discover._errors import ProbeError

__all__ = ["AwsProbeError", "clean_aws_text", "redact_userinfo", "translate_aws_error"]

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
USERINFO_RE = re.compile(r"(://)[^/@\s]+@")
_REASON_LIMIT = 300


class AwsProbeError(ProbeError):
    """An AWS account or region could not be looked at; ``kind`` is a short category.

    Kinds: ``access_denied``, ``expired_credentials`` (expired, invalid or missing credentials),
    ``region_unavailable``, ``throttled``, ``timeout`` (an attempt passed its total deadline),
    ``unreachable``, ``error``.
    """

    def __init__(self, reason: str, *, kind: str) -> None:
        self.kind = kind
        super().__init__(reason)


def redact_userinfo(text: str) -> str:
    return USERINFO_RE.sub(r"\1***@", text)


def clean_aws_text(text: str, secrets: Iterable[str]) -> str:
    """Text from AWS made safe and short enough to put in a reason."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    text = redact_userinfo(_ACCESS_KEY_ID_RE.sub("***", text))
    text = " ".join(text.split())
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 1] + "…"


def translate_aws_error(
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
        ReadTimeoutError,
    )

    kind = "error"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "UnknownError")
        message = clean_aws_text(str(error.get("Message") or ""), secrets)
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
    elif isinstance(exc, ReadTimeoutError) and "deadline" in (info := dict(getattr(exc, "kwargs", {}))):
        # AwsCallDeadlineExceeded (aws.deadline), told apart without importing urllib3 here.
        kind = "timeout"
        where_to = redact_userinfo(str(info["endpoint_url"])) if info.get("endpoint_url") else "the AWS endpoint"
        detail = f"no complete answer from {where_to} within {info['deadline']:g}s (call_timeout, per attempt)"
    elif isinstance(exc, ConnectionError | HTTPClientError):
        kind = "unreachable"
        url = getattr(exc, "kwargs", {}).get("endpoint_url")
        target = redact_userinfo(str(url)) if url else "the AWS endpoint"
        detail = f"cannot reach {target} ({type(exc).__name__})"
    elif isinstance(exc, NoCredentialsError | PartialCredentialsError):
        kind = "expired_credentials"
        detail = f"no usable AWS credentials found ({type(exc).__name__})"
    elif isinstance(exc, ProfileNotFound):
        detail = f"profile {exc.kwargs.get('profile')!r} is not in the AWS config files"
    else:
        detail = f"{type(exc).__name__}: {clean_aws_text(str(exc), secrets)}"
    return AwsProbeError(f"{where}: {detail}" if where else detail, kind=kind)
