"""Faults tests inject into matching requests: :class:`FaultRule` (status, ``Retry-After``,
delay, reset, per-item bulk failures, a canned ``respond``, a ``trickle``) and the stand-in's
fault book.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from testing.openmetadata._common import StandInBase, _error_body, _reason, _Reply


@dataclass
class FaultRule:
    """A fault injected into matching requests.

    Matching: ``method`` ("PUT", or alternatives "PUT|POST"; None = any), ``path`` (regex searched
    in the URL path), ``name`` (only requests whose JSON body is an object with that ``name``).
    ``times`` limits how many requests the rule affects (None = no limit); ``rate`` affects each
    matching request with that probability, drawn from the stand-in's seeded RNG.

    Actions, in order: wait ``delay`` seconds; then answer ``status`` (with ``message`` or the
    standard phrase, and ``Retry-After: retry_after`` when set), or reset the connection
    (``reset``), or handle the request normally. With ``reset_after_items=k`` the request is
    applied first (a bulk: only its first k items) and then the connection is reset, so the
    client never learns what was written. ``bulk_item_failures`` makes the named items of a bulk
    request fail with (status, message) while the others are applied.
    """

    method: str | None = None
    path: str = ".*"
    name: str | None = None
    times: int | None = None
    rate: float | None = None
    status: int | None = None
    message: str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    reset: bool = False
    reset_after_items: int | None = None
    bulk_item_failures: dict[str, tuple[int, str]] = field(default_factory=dict)
    # A hostile server: ``respond(query, body)`` returns (status, JSON body) sent as it is, unchecked.
    respond: Callable[[dict[str, str], Any], tuple[int, Any]] | None = None
    # Send the answer this many bytes per second (a trickling server); None = at once.
    trickle: float | None = None
    hits: int = 0

    def __post_init__(self) -> None:
        if self.rate is not None and not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {self.rate}")
        if self.times is not None and self.times < 0:
            raise ValueError(f"times must be >= 0, got {self.times}")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status, got {self.status}")
        if self.reset_after_items is not None and self.reset_after_items < 0:
            raise ValueError("reset_after_items must be >= 0")
        self._path_re = re.compile(self.path)
        self._methods = None if self.method is None else frozenset(self.method.upper().split("|"))

    def reply_instead(self, query: dict[str, str], body: Any) -> _Reply | None:
        """The answer this fault gives in place of the server's (None: the server answers)."""
        if self.status is not None:
            headers: dict[str, str] = {}
            if self.retry_after is not None:
                retry = self.retry_after
                headers["Retry-After"] = str(int(retry)) if float(retry).is_integer() else str(retry)
            if self.status == 401:
                headers["WWW-Authenticate"] = "om-auth"
            message = self.message or _reason(self.status)
            return _Reply(self.status, _error_body(self.status, message), headers)
        if self.reset:
            return _Reply(0, reset=True)
        if self.respond is not None:
            status, answer = self.respond(query, body)
            return _Reply(status, answer, trickle=self.trickle)
        return None

    def matches(self, method: str, path: str, body: Any) -> bool:
        if self._methods is not None and method not in self._methods:
            return False
        if not self._path_re.search(path):
            return False
        return self.name is None or (isinstance(body, dict) and body.get("name") == self.name)


class FaultsMixin(StandInBase):
    """The fault book: rules tried in the order they were added, the first match wins."""

    def inject(self, rule: FaultRule) -> FaultRule:
        """Add a fault; rules are tried in the order they were added, the first match wins."""
        with self._lock:
            self._faults.append(rule)
        return rule

    def fail_items(self, failures: Mapping[str, tuple[int, str]], *, times: int | None = None) -> None:
        """Make the named services fail the same way whether written by bulk or one by one."""
        self.inject(FaultRule(method="PUT", path=r"/mlmodelServices/bulk$", bulk_item_failures=dict(failures)))
        for name, (status, message) in failures.items():
            self.inject(
                FaultRule(
                    method="PUT|POST", path=r"/mlmodelServices$", name=name, status=status, message=message, times=times
                )
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _pick_fault(self, method: str, path: str, body: Any) -> FaultRule | None:
        with self._lock:
            for rule in self._faults:
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                if not rule.matches(method, path, body):
                    continue
                if rule.rate is not None and self.random.random() >= rule.rate:
                    continue
                rule.hits += 1
                return rule
        return None
