"""Kubernetes label selectors: parse once (config errors name the bad part), match locally.

The syntax is kube-apiserver's (``k8s.io/apimachinery/pkg/labels``): comma-separated
requirements, each ``key=value``, ``key==value``, ``key!=value``, ``key in (a,b)``,
``key notin (a,b)``, ``key`` (exists) or ``!key`` (does not exist). The same string is sent to
the API server as ``labelSelector`` when the server can do the filtering; :meth:`LabelSelector.matches`
applies it locally when the discoverer must list everything anyway (opt-in annotations cannot be
selected server-side).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["LabelSelector", "Requirement", "parse_selector"]

# A qualified name with an optional DNS-subdomain prefix, as Kubernetes allows for label keys.
_KEY = r"(?:[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
_KEY_RE = re.compile(rf"^{_KEY}$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")
_REQ_RE = re.compile(
    r"^(?:(?P<absent>!)\s*(?P<akey>[^\s=!,()]+)"
    r"|(?P<key>[^\s=!,()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s=!,()]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)$"
)


@dataclass(frozen=True)
class Requirement:
    """One requirement: ``op`` is one of ``=``, ``!=``, ``in``, ``notin``, ``exists``, ``!``."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # != and notin match objects without the key, as the API server does.
        return not present or value not in self.values


@dataclass(frozen=True)
class LabelSelector:
    """A parsed selector; ``text`` is its canonical form for the API's ``labelSelector``."""

    text: str
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _split(text: str) -> list[str]:
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _key(key: str, text: str) -> str:
    if not _KEY_RE.match(key):
        raise ValueError(f"label selector {text!r}: {key!r} is not a valid label key")
    return key


def _value(value: str, text: str) -> str:
    if not _VALUE_RE.match(value):
        raise ValueError(f"label selector {text!r}: {value!r} is not a valid label value")
    return value


def parse_selector(text: str) -> LabelSelector:
    """Parse ``text``; ValueError names the requirement that is wrong."""
    if not text.strip():
        raise ValueError("a label selector must not be empty; write e.g. app.kubernetes.io/name=mlflow")
    reqs: list[Requirement] = []
    shown: list[str] = []
    for part in _split(text):
        m = _REQ_RE.match(part)
        if not part or m is None:
            raise ValueError(
                f"label selector {text!r}: cannot read {part!r}; use key=value, key!=value, "
                "key in (a,b), key notin (a,b), key or !key"
            )
        if m["absent"]:
            reqs.append(Requirement(_key(m["akey"], text), "!"))
            shown.append(f"!{m['akey']}")
        elif m["op"]:
            op = "=" if m["op"] in ("=", "==") else "!="
            reqs.append(Requirement(_key(m["key"], text), op, frozenset({_value(m["value"], text)})))
            shown.append(f"{m['key']}{op}{m['value']}")
        elif m["setop"]:
            values = [v.strip() for v in m["values"].split(",")]
            for v in values:
                _value(v, text)
            reqs.append(Requirement(_key(m["key"], text), m["setop"], frozenset(values)))
            shown.append(f"{m['key']} {m['setop']} ({','.join(sorted(set(values)))})")
        else:
            reqs.append(Requirement(_key(m["key"], text), "exists"))
            shown.append(m["key"])
    return LabelSelector(",".join(shown), tuple(reqs))
