"""Logging: one event per line, text or JSON, with every known secret redacted.

Redaction is a filter on the handler, so it also covers messages of libraries (httpx, botocore,
apscheduler) and exception tracebacks. Secrets are the values the agent was configured with;
``user:password@`` in any URL is masked too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

__all__ = ["REDACTED", "RedactingFilter", "add_secrets", "configure_logging", "redact"]

REDACTED = "***"
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each secret value, URL password and bearer token replaced by ``***``."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    return _BEARER.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Formats the record's message once, redacted, so no handler sees a secret."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = set(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict) and extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line.replace("\n", "\\n")


_handler: logging.Handler | None = None
_filter: RedactingFilter | None = None


def configure_logging(
    level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = (), stream: TextIO | None = None
) -> RedactingFilter:
    """(Re)configure the root logger; ``MLSVC_DISCOVER_LOG_LEVEL`` overrides ``level``."""
    global _handler, _filter
    level = os.environ.get("MLSVC_DISCOVER_LOG_LEVEL", level).upper()
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    flt = RedactingFilter(secrets)
    handler.addFilter(flt)
    root.addHandler(handler)
    root.setLevel(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")
    # Libraries log every request at INFO (URLs, never headers); our own events say what matters.
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "botocore", "boto3", "urllib3", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _handler, _filter = handler, flt
    return flt


def add_secrets(values: Iterable[str]) -> None:
    """Teach the active log filter secrets learned while running (assumed-role keys, uris_file passwords)."""
    if _filter is not None:
        _filter.secrets.update(v for v in values if v)
