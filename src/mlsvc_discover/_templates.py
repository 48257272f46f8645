"""Service-name templates: checking and filling ``{label}`` placeholders; pure, no I/O.

A leaf module so that config validation (``discoverers.base``) and the mapper share one template
language without the config layer importing the mapper.

Public: :func:`check_template` (the placeholders of a template, or MappingError when it can
never give a name) and :func:`render_name` (a valid service name from a template and labels).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import string
from collections.abc import Mapping

from mlsvc_discover._errors import MappingError
from mlsvc_discover.openmetadata.models import NAME_MAX, validate_service_name

__all__ = ["check_template", "render_name"]

# Label values are squeezed into this alphabet before they fill a name template, so that no
# host, path or label can smuggle `::`, control characters or quotes into a service name.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_FORMATTER = string.Formatter()


def _safe_label(value: str) -> str:
    if ":" in value:
        # An IPv6 literal would lose its colons and collide ("::1" and "1::" both gave "1"):
        # all eight groups, in hex without leading zeros, keep every address distinct.
        try:
            address = ipaddress.IPv6Address(value)
        except ValueError:
            pass
        else:
            number = int(address)
            groups = [f"{(number >> (16 * (7 - i))) & 0xFFFF:x}" for i in range(8)]
            value = "-".join([*groups, *([address.scope_id] if address.scope_id else [])])
    return _UNSAFE.sub("-", value).strip("-") or "x"


def check_template(template: str) -> list[str]:
    """The placeholders of a name template; MappingError when the template can never give a name.

    Checks what does not depend on a finding: the syntax, that placeholders are plain names,
    and that conversions and format specs work on a string and cannot blow a name up. Config
    loading runs it too, so such a template is a config error, not a failure per finding.
    """
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise MappingError(f"name template {template!r} is invalid: {exc}") from exc
    fields: list[str] = []
    for _, f, spec, conversion in parsed:
        if f is None:
            continue
        if f == "" or not f.isidentifier():
            raise MappingError(
                f"name template {template!r} uses placeholder {{{f}}}; use named placeholders such as {{host}}"
            )
        if conversion not in (None, "r", "s", "a"):
            raise MappingError(
                f"name template {template!r} uses {{{f}!{conversion}}}; the only conversions are !r, !s and !a"
            )
        # A nested placeholder would take its width from a label, and a width of 10**9 would
        # build a gigabyte string before the name is cut to 256 characters.
        if spec and ("{" in spec or any(int(n) > NAME_MAX for n in re.findall(r"\d+", spec))):
            raise MappingError(
                f"name template {template!r}: {{{f}:{spec}}} has a nested or over-wide format spec; use {{{f}}}"
            )
        try:
            format("label", spec or "")
        except ValueError as exc:
            raise MappingError(f"name template {template!r}: {{{f}:{spec}}} is not a string format: {exc}") from None
        fields.append(f)
    return fields


def render_name(template: str, labels: Mapping[str, str], *, key: str) -> str:
    """Fill ``template`` from ``labels`` and return a valid service name.

    Raises MappingError naming the missing placeholder and the labels there are, or the rule
    the result breaks. A name longer than 256 characters is cut and given a hash of ``key``
    so that two long names stay distinct.
    """
    safe = {k: _safe_label(v) for k, v in labels.items()}
    safe.setdefault("key", _safe_label(key))
    for f in check_template(template):
        if f not in safe:
            raise MappingError(
                f"name template {template!r} uses {{{f}}}, which this finding does not have; "
                f"available: {', '.join(sorted(safe))}"
            )
    try:
        name = template.format_map(safe)
    except (ValueError, TypeError) as exc:  # check_template should have caught it; never crash a cycle
        raise MappingError(f"name template {template!r} cannot be filled: {exc}") from None
    if len(name) > NAME_MAX:
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        name = f"{name[: NAME_MAX - 11]}-{digest}"
    try:
        return validate_service_name(name)
    except ValueError as exc:
        raise MappingError(f"name template {template!r} gives an invalid name: {exc}") from exc
