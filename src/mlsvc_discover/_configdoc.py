"""Render the configuration reference (every key, its type, default and description) as Markdown.

The README's reference section is written by ``python -m mlsvc_discover._configdoc --write
README.md`` and a
test fails when it drifts from the models, so every key stays documented.
"""

from __future__ import annotations

import enum
import sys
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    elif origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _models_in(arg)


def _type_name(annotation: Any) -> str:  # noqa: PLR0911 - one return per kind of type
    """A reader's name for a type: `duration`, `list of str`, `mlflow \\| sagemaker`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        if any(getattr(getattr(m, "func", None), "__name__", "") == "parse_duration" for m in args[1:]):
            return "duration (e.g. 30s, 15m)"
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} (optional)" if type(None) in args else text
    if origin in (list, tuple, set, frozenset):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping of str to str" if args == (str, str) else "mapping"
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return " \\| ".join(f"`{m.value}`" for m in annotation)
        if issubclass(annotation, BaseModel):
            return "mapping"
        return {"SecretStr": "secret str", "Path": "path", "UUID": "uuid"}.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "**required**"
    if isinstance(value, BaseModel):
        return "(section)"
    if value in ((), [], {}):
        return "empty"
    return f"`{value}`"


def _rows(model: type[BaseModel], prefix: str, seen: set[type[BaseModel]]) -> Iterator[str]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        kind = _type_name(field.annotation)
        if any(getattr(getattr(m, "func", None), "__name__", "") == "parse_duration" for m in field.metadata):
            kind = "duration (e.g. 30s, 15m)"
        yield f"| `{key}` | {kind} | {_default(field)} | {desc} |"
        for sub in _models_in(field.annotation):
            if sub in seen:
                continue
            list_like = "list of" in _type_name(field.annotation)
            yield from _rows(sub, f"{key}[]." if list_like else f"{key}.", seen | {sub})


def render() -> str:
    from mlsvc_discover.config import AgentConfig
    from mlsvc_discover.discoverers.registry import available, discoverer_class

    header = "| key | type | default | description |\n|---|---|---|---|"
    parts = [START, "", "### Agent", "", header]
    parts += [r for r in _rows(AgentConfig, "", {AgentConfig}) if not r.startswith("| `discoverers")]
    parts.append("| `discoverers` | list | empty | Discoverer instances; each has a `type` and a unique `name`. |")
    for kind in available():
        model = discoverer_class(kind).config_model
        parts += ["", f"### Discoverer `{kind}` (`discoverers[].type: {kind}`)", "", header]
        parts += list(_rows(model, "", {model}))
    parts += ["", END]
    return "\n".join(parts)


def update(text: str) -> str:
    """``text`` (the README) with its reference section replaced by a fresh rendering."""
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return head + render() + tail


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--write"] and len(args) == 2:
        from pathlib import Path

        path = Path(args[1])
        path.write_text(update(path.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    sys.stdout.write(render() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
