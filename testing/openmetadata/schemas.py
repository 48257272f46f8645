"""The vendored OpenMetadata 2.0.7 JSON Schemas as validators, and the 400 messages a schema
violation gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from testing.openmetadata._common import INVALID_FORMAT

# Vendored copies of the OpenMetadata 2.0.7 schemas (see schemas/README.md for their origin).
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


def _multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """``multipleOf`` in decimal arithmetic.

    The entity schema says ``version`` is a multiple of 0.1; in binary floats 0.3 / 0.1 is
    2.9999999999999996, so jsonschema's own check rejects versions 0.3, 0.6, 0.7... that the
    real server sends every day. Comparing the decimal spellings matches what the schema means.
    """
    if not validator.is_type(instance, "number") or isinstance(instance, bool):
        return
    if Decimal(repr(instance)) % Decimal(repr(divisor)) != 0:
        yield ValidationError(f"{instance!r} is not a multiple of {divisor}")


_Validator = validators.extend(Draft202012Validator, validators={"multipleOf": _multiple_of})


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its local ``$ref``s replaced by their targets (recursive ones kept).

    Resolving a ``$ref`` through ``referencing`` costs more than checking what it points to;
    inlined, an entity validates in about half the time, which the benchmark notices.
    """
    defs: dict[str, Any] = schema.get("$defs", {})

    def walk(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [walk(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] not in seen:
            target = walk(defs[ref[8:]], seen | {ref[8:]})
            siblings = {k: walk(v, seen) for k, v in node.items() if k != "$ref"}
            return {"allOf": [target], **siblings} if siblings else target
        return {k: v if k == "$defs" else walk(v, seen) for k, v in node.items()}

    inlined: dict[str, Any] = walk(schema, frozenset())
    return inlined


@cache
def schema_validator(name: str) -> Any:
    """The cached validator of ``testing/openmetadata/schemas/<name>`` (``.schema.json`` optional).

    A Draft 2020-12 validator with format checks (uuid, date-time) whose ``multipleOf`` compares
    decimals, so that entity versions such as 0.3 validate as they should (see ``_multiple_of``).
    Thread-safe: the server's handler threads share it.
    """
    file_name = name if name.endswith(".json") else f"{name}.schema.json"
    schema = json.loads((SCHEMA_DIR / file_name).read_text(encoding="utf-8"))
    _Validator.check_schema(schema)
    return _Validator(_inline_refs(schema), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _create_validator() -> Any:
    return schema_validator("CreateMlModelServiceRequest")


def _entity_validator() -> Any:
    return schema_validator("MlModelService")


def _bulk_validator() -> Any:
    return schema_validator("BulkOperationResult")


def _request_error_message(error: ValidationError) -> str:
    """The message upstream gives for a schema violation.

    Jackson rejects unknown keys, bad enums and wrong types while parsing ("Invalid request
    format"); bean validation reports missing and over-long fields as ``[field ...]``.
    """
    if not error.path:
        if error.validator == "required":
            missing = [key for key in error.validator_value if key not in error.instance]
            return f"[{missing[0] if missing else 'field'} must not be null]"
    elif len(error.path) == 1 and error.validator in ("minLength", "maxLength"):
        return f"[{error.path[0]} size must be between 1 and 256]"
    return INVALID_FORMAT


def _schema_problem(kind: str, error: ValidationError) -> str:
    # Never the instance itself: it may hold a secret and this text ends up in test output.
    where = "/".join(str(p) for p in error.absolute_path) or "<root>"
    rule = "/".join(str(p) for p in error.absolute_schema_path)
    return f"{kind} failed schema validation at {where}: {error.validator} ({rule})"
