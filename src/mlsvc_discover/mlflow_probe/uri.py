"""MLflow tracking URIs: validation, normalisation, credentials in the URI.

Public seam (any discoverer that finds candidate MLflow URIs uses it):

- :func:`parse_tracking_uri` -> :class:`ParsedUri`: validate one http(s) URI and normalise it
  (``clean``: lower-case scheme and host, IDNA host names as punycode, IPv6 hosts in their
  compressed form, explicit port, no userinfo, no trailing slash; the path prefix is kept as
  written, case included). Raises ValueError quoting the URI redacted.
- :func:`normalise_tracking_uri`: ``(clean uri, username, password)``.
- :func:`clean_registry_uri` and :func:`registry_uri_secrets`: a registry URI as it may be
  published, and the secrets it holds.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from mlsvc_discover._http import misplaced_userinfo, redact_uri, strip_userinfo

__all__ = [
    "ENCODE_HINT",
    "ParsedUri",
    "clean_registry_uri",
    "normalise_tracking_uri",
    "parse_tracking_uri",
    "registry_uri_secrets",
]

_HOST_RE = re.compile(r"^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$")
ENCODE_HINT = "if it belongs to the password, percent-encode the password (@ %40, / %2F, ? %3F, # %23, : %3A)"


@dataclass(frozen=True)
class ParsedUri:
    """One validated tracking URI; ``clean`` is its credential-free normal form (the key)."""

    clean: str
    scheme: str
    host: str
    port: int
    path: str
    username: str | None
    password: str | None = field(repr=False)
    raw_password: str | None = field(repr=False)


def parse_tracking_uri(uri: str) -> ParsedUri:  # noqa: PLR0912 - one check per way a URI can be wrong
    """Validate and normalise one tracking URI; ValueError messages quote it redacted."""
    shown = repr(redact_uri(uri))
    text = uri.strip()
    if not text:
        raise ValueError("a tracking URI must not be empty")
    if re.search(r"[\s\x00-\x1f\x7f]", text):
        # urlsplit silently drops tabs and newlines; refuse instead of probing something else.
        raise ValueError(f"{shown} contains whitespace or control characters")
    if misplaced_userinfo(text):
        # Else urlsplit reads "http://u:pa/ss@h" as host "u", and the password ends up in the path.
        raise ValueError(f"{shown} has '@' after the host; {ENCODE_HINT}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{shown} is not a valid URI ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{shown} must start with http:// or https://")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"{shown} has no host; write e.g. http://mlflow.example.com:5000")
    if ":" in host or host.startswith("["):
        try:
            # One spelling per address ([0:0::1] and [::1] are one server): the compressed form.
            host = ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise ValueError(f"{shown} has an invalid IPv6 host") from None
    else:
        try:
            ascii_host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise ValueError(f"{shown} has an invalid host name") from None
        if not _HOST_RE.match(ascii_host):
            raise ValueError(f"{shown} has an invalid host name")
        host = ascii_host
    if port == 0:
        raise ValueError(f"{shown} has port 0")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"{shown} must not have a query or fragment; give the server's base URL")
    if port is None:
        port = 443 if scheme == "https" else 80
    username, raw_password = parts.username, parts.password
    if (username is not None or raw_password is not None) and not (username and raw_password):
        raise ValueError(f"{shown} has incomplete credentials; give both user and password, or use `auth`")
    path = parts.path.rstrip("/")
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ParsedUri(
        clean=f"{scheme}://{netloc}{path}",
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        username=unquote(username) if username else None,
        password=unquote(raw_password) if raw_password else None,
        raw_password=raw_password or None,
    )


def normalise_tracking_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``(clean uri, username, password)`` of an http(s) tracking URI.

    The clean URI has a lower-case scheme and host, an explicit port, no userinfo and no
    trailing slash, so two spellings of one server get one key. User and password come back
    percent-decoded. Raises ValueError (naming the URI redacted) when it cannot be probed.
    """
    parsed = parse_tracking_uri(uri)
    return parsed.clean, parsed.username, parsed.password


def clean_registry_uri(uri: str) -> str:
    """A registry URI as it may be published: normalised when http(s), credentials stripped always."""
    if urlsplit(uri.strip()).scheme.lower() in ("http", "https"):
        return parse_tracking_uri(uri).clean
    if misplaced_userinfo(uri.strip()):
        raise ValueError(f"registry_uri {redact_uri(uri.strip())!r} has '@' after the host; {ENCODE_HINT}")
    return strip_userinfo(uri.strip())


def registry_uri_secrets(uri: str | None) -> list[str]:
    if not uri:
        return []
    try:
        raw = urlsplit(uri.strip()).password
    except ValueError:
        return []
    return [raw, unquote(raw)] if raw else []
