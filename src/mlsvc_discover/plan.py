"""Plan: compare what the agent wants with what OpenMetadata holds. Pure functions, plain data.

Ownership. A service belongs to this agent when it carries the tag
``<ownership_classification>.<owner_id>`` (see :func:`mlsvc_discover.mapper.owner_tag_fqn`).
The tag lives in OpenMetadata, so ownership survives restarts and fresh containers. A desired
name taken by a service without the tag is a *conflict*: reported, never written.

Field ownership. The agent manages the connection keys it sets and the marker tag always, and
displayName, description, owners, domains and tags only when config sets them. The plan follows
the rules the OpenMetadata server applies to a bot's PUT: a non-empty stored displayName,
description, domains and dataProducts are kept (so the plan only fills them when empty, and a
difference it cannot apply is reported in ``Plan.kept``, never written every cycle), tags are
merged, and owners are replaced by a non-empty list (so the agent sends the stored owners plus
its own: additive). Values of unmanaged fields, ``ingestionRunner`` included (the server clears
it when a PUT lacks it), are copied from OpenMetadata into the update body, so a person's edit is
never reverted.

Two steps, as external-dns has them: :func:`diff` says what differs whatever the policy, and
:func:`apply_policy` then says what of it may be done (:func:`compute_plan` runs both).

Deletes (policy ``sync`` only). An owned service that is no longer found is deleted only when
the scope that produced it succeeded this cycle, after ``stale_after`` consecutive such misses,
and only when the cycle's deletions stay within ``max_delete_fraction`` of the owned services.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from mlsvc_discover.discoverers.base import Scope
from mlsvc_discover.mapper import DesiredService
from mlsvc_discover.openmetadata.entities import SECRET_KEYS, SECRET_MASK, CurrentService, mask_secrets

__all__ = [
    "Change",
    "History",
    "Looked",
    "Plan",
    "Policy",
    "apply_policy",
    "compute_plan",
    "diff",
    "scope_succeeded",
]

Policy = Literal["upsert-only", "create-only", "sync"]
Action = Literal["create", "update", "restore", "unchanged", "conflict", "delete", "hold"]


@dataclass(frozen=True)
class Change:
    """One line of the plan. ``body`` is what would be sent (None for deletes and no-ops)."""

    name: str
    action: Action
    reason: str
    source: str | None = None
    service_id: str | None = None
    fields: tuple[str, ...] = ()
    body: Mapping[str, Any] | None = None
    # Machine-readable reason (metrics, tests): e.g. "stale", "max_delete_fraction", "create_only".
    code: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "action": self.action, "reason": self.reason}
        if self.source:
            out["source"] = self.source
        if self.fields:
            out["fields"] = list(self.fields)
        if self.body is not None:
            out["body"] = mask_secrets(self.body)
        return out


@dataclass(frozen=True)
class Plan:
    """Plain data: what to create, update, restore and delete, and what is left alone."""

    create: tuple[Change, ...] = ()
    update: tuple[Change, ...] = ()
    restore: tuple[Change, ...] = ()
    delete: tuple[Change, ...] = ()
    unchanged: tuple[Change, ...] = ()
    conflicts: tuple[Change, ...] = ()
    # Held back by the policy (create-only differences, deletes past max_delete_fraction); see ``code``.
    held: tuple[Change, ...] = ()
    # Bookkeeping for the next cycle: consecutive misses and the scope of every owned service.
    misses: Mapping[str, int] = field(default_factory=dict)
    scopes: Mapping[str, Scope] = field(default_factory=dict)
    owned: int = 0
    # Differences the server would ignore (it keeps its value against a bot): (name, field).
    kept: tuple[tuple[str, str], ...] = ()

    @property
    def writes(self) -> tuple[Change, ...]:
        """Creates, updates and restores: what goes through the upsert path."""
        return self.restore + self.create + self.update

    def changes(self) -> tuple[Change, ...]:
        return self.create + self.update + self.restore + self.delete + self.unchanged + self.conflicts + self.held

    def to_dict(self) -> dict[str, Any]:
        return {
            "create": [c.to_dict() for c in self.create],
            "update": [c.to_dict() for c in self.update],
            "restore": [c.to_dict() for c in self.restore],
            "delete": [c.to_dict() for c in self.delete],
            "unchanged": len(self.unchanged),
            "conflicts": [c.to_dict() for c in self.conflicts],
            "held": [c.to_dict() for c in self.held],
            "kept_by_server": [{"name": n, "field": f} for n, f in self.kept],
        }


def scope_succeeded(scope: Scope | None, outcomes: Mapping[Scope, bool], *, all_ok: bool) -> bool:
    """Whether ``scope`` was looked at successfully this cycle.

    Every reported scope on the way from ``scope`` up to its root must have succeeded, and at
    least one must have been reported. A scope nobody reported (its discoverer was removed, or
    the agent restarted and has not seen the service since) counts only when the whole cycle
    succeeded: the agent cannot tell which part of the world would have found it.
    """
    if scope is None:
        return all_ok
    reported = False
    for i in range(len(scope), 0, -1):
        ok = outcomes.get(scope[:i])
        if ok is None:
            continue
        if not ok:
            return False
        reported = True
    return reported or all_ok


def _strip_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_strip_none(v) for v in value]
    return value


def _differs(desired: Any, current: Any) -> bool:
    """Does ``current`` differ from ``desired`` in a key that ``desired`` sets?"""
    if isinstance(desired, Mapping):
        if not isinstance(current, Mapping):
            return True
        for k, v in desired.items():
            if k in SECRET_KEYS and current.get(k) == SECRET_MASK:
                continue  # a masked secret cannot be compared; the server keeps it
            if _differs(v, current.get(k)):
                return True
        return False
    return bool(desired != current)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _diff_fields(want: DesiredService, body: Mapping[str, Any], cur: CurrentService) -> tuple[list[str], list[str]]:
    """(fields to write, fields that differ but the server keeps against a bot's PUT)."""
    fields: list[str] = []
    kept: list[str] = []
    if cur.service_type != body["serviceType"]:
        fields.append("serviceType")
    if _differs(_strip_none(body["connection"]["config"]), cur.connection):
        fields.append("connection")
    if "displayName" in want.managed and body.get("displayName") != cur.display_name:
        (kept if cur.display_name else fields).append("displayName")
    if "description" in want.managed and body.get("description") and body.get("description") != cur.description:
        (kept if cur.description else fields).append("description")
    if "owners" in want.managed:
        have = {(o["id"], o["type"]) for o in cur.owners}
        if any((o["id"], o["type"]) not in have for o in body.get("owners", [])):
            fields.append("owners")
    if "domains" in want.managed and tuple(body.get("domains", [])) != cur.domains:
        (kept if cur.domains else fields).append("domains")
    if any(t["tagFQN"] not in cur.tag_fqns for t in body.get("tags", [])):
        fields.append("tags")
    return fields, kept


def _update_body(want: DesiredService, body: Mapping[str, Any], cur: CurrentService) -> dict[str, Any]:
    """Desired managed values over current values of everything else, as the server applies them.

    What the server keeps against a bot (a non-empty displayName, description, domains,
    dataProducts) is sent as stored, and what it clears when absent (``ingestionRunner``) is
    sent back, so the body says exactly what the service will hold.
    """
    out: dict[str, Any] = {"name": want.name, "serviceType": body["serviceType"]}
    want_config = _strip_none(body["connection"]["config"])
    # Keys of another connection type would make the request invalid: a changed type is replaced.
    base = cur.connection if cur.connection.get("type") == want_config.get("type") else {}
    out["connection"] = {"config": _merge(base, want_config)}
    display = cur.display_name or (body.get("displayName") if "displayName" in want.managed else None)
    if display:
        out["displayName"] = display
    description = cur.description or (body.get("description") if "description" in want.managed else None)
    if description:
        out["description"] = description
    owners = [dict(o) for o in cur.owners]
    owners += [o for o in body.get("owners", []) if (o["id"], o["type"]) not in {(x["id"], x["type"]) for x in owners}]
    if owners:
        out["owners"] = owners
    domains = list(cur.domains) or (body.get("domains") if "domains" in want.managed else None)
    if domains:
        out["domains"] = list(domains)
    if cur.data_products:
        out["dataProducts"] = list(cur.data_products)
    tags = [dict(t) for t in cur.tags]
    tags += [t for t in body.get("tags", []) if t["tagFQN"] not in cur.tag_fqns]
    out["tags"] = tags
    if cur.ingestion_runner is not None:
        out["ingestionRunner"] = dict(cur.ingestion_runner)
    if cur.style is not None:
        out["style"] = dict(cur.style)
    return out


@dataclass(frozen=True)
class History:
    """The previous plan's bookkeeping: consecutive misses and the scope of each owned service."""

    misses: Mapping[str, int] = field(default_factory=dict)
    scopes: Mapping[str, Scope] = field(default_factory=dict)


@dataclass(frozen=True)
class Looked:
    """What this cycle looked at: each scope's success, and whether every scope succeeded."""

    outcomes: Mapping[Scope, bool] = field(default_factory=dict)
    all_ok: bool = False


def diff(
    desired: Mapping[str, DesiredService],
    current: Mapping[str, CurrentService],
    *,
    owner_tag: str,
    looked: Looked,
    history: History,
    stale_after: int,
    protected: frozenset[str] | set[str] = frozenset(),
) -> Plan:
    """What differs, whatever the policy. Pure: same input, same plan.

    Every difference is an ``update``; an owned service missing for ``stale_after`` cycles in
    scopes that succeeded is a ``delete`` (code ``stale``), one not yet stale an ``unchanged``
    line (code ``missing``). :func:`apply_policy` then decides what of it may be done.
    """
    prev_misses = dict(history.misses)
    scopes: dict[str, Scope] = dict(history.scopes)
    create: list[Change] = []
    update: list[Change] = []
    restore: list[Change] = []
    unchanged: list[Change] = []
    conflicts: list[Change] = []
    kept: list[tuple[str, str]] = []

    for name in sorted(desired):
        want = desired[name]
        body = want.body()
        cur = current.get(name)
        if cur is None:
            create.append(Change(name, "create", "not in OpenMetadata", want.source, body=body))
            scopes[name] = want.scope
            continue
        if owner_tag not in cur.tag_fqns:
            conflicts.append(
                Change(
                    name,
                    "conflict",
                    f"a service named {name!r} exists without this agent's tag {owner_tag}; left alone "
                    "(rename it, or set an explicit name or name_template for this finding)",
                    want.source,
                    service_id=cur.id,
                )
            )
            continue
        scopes[name] = want.scope
        fields, kept_fields = _diff_fields(want, body, cur)
        kept += [(name, f) for f in kept_fields]
        if cur.deleted:
            restore.append(
                Change(
                    name,
                    "restore",
                    "found again after a soft delete",
                    want.source,
                    service_id=cur.id,
                    fields=tuple(fields),
                    body=_update_body(want, body, cur),
                )
            )
        elif not fields:
            unchanged.append(Change(name, "unchanged", "up to date", want.source, service_id=cur.id))
        else:
            update.append(
                Change(
                    name,
                    "update",
                    f"differs in {', '.join(fields)}",
                    want.source,
                    service_id=cur.id,
                    fields=tuple(fields),
                    body=_update_body(want, body, cur),
                )
            )

    owned = [c for c in current.values() if owner_tag in c.tag_fqns and not c.deleted]
    new_misses: dict[str, int] = {}
    delete: list[Change] = []
    for cur in sorted(owned, key=lambda c: c.name):
        if cur.name in desired or cur.name in protected:
            continue
        count = prev_misses.get(cur.name, 0)
        seen = scope_succeeded(scopes.get(cur.name), looked.outcomes, all_ok=looked.all_ok)
        if seen:
            count += 1
        # else: the scope failed this cycle; hold the count, neither reset nor advance it,
        # and delete nothing from it whatever the count says.
        new_misses[cur.name] = count
        if seen and count >= stale_after:
            reason = f"not found for {count} consecutive cycles in a scope that succeeded"
            delete.append(Change(cur.name, "delete", reason, service_id=cur.id, code="stale"))
        else:
            reason = f"not found ({count} of {stale_after} misses before delete)" + (
                "" if seen else "; its scope failed this cycle, so it is kept"
            )
            unchanged.append(Change(cur.name, "unchanged", reason, service_id=cur.id, code="missing"))
    # Forget scopes of services that are gone for good.
    live = {c.name for c in owned} | set(desired)
    return Plan(
        create=tuple(create),
        update=tuple(update),
        restore=tuple(restore),
        delete=tuple(delete),
        unchanged=tuple(unchanged),
        conflicts=tuple(conflicts),
        misses=new_misses,
        scopes={k: v for k, v in scopes.items() if k in live},
        owned=len(owned),
        kept=tuple(kept),
    )


def apply_policy(plan: Plan, policy: Policy, *, max_delete_fraction: float) -> Plan:
    """The policy applied after the diff, as external-dns's ``Policy.Apply`` does.

    ``create-only`` holds updates back; only ``sync`` deletes (and lists what is missing);
    deletions beyond ``max_delete_fraction`` of the owned services are all held back.
    """
    update, held = plan.update, plan.held
    if policy == "create-only":
        held += tuple(
            Change(
                c.name,
                "hold",
                "differs, but policy is create-only",
                c.source,
                c.service_id,
                c.fields,
                code="create_only",
            )
            for c in update
        )
        update = ()
    if policy != "sync":
        unchanged = tuple(c for c in plan.unchanged if c.code != "missing")
        return replace(plan, update=update, held=held, delete=(), unchanged=unchanged)
    delete = plan.delete
    limit = math.floor(max_delete_fraction * plan.owned + 1e-9)
    if delete and len(delete) > limit:
        reason = (
            f"{len(delete)} deletions would exceed max_delete_fraction {max_delete_fraction} of "
            f"{plan.owned} owned services (at most {limit}); nothing deleted this cycle"
        )
        held += tuple(
            Change(c.name, "hold", reason, service_id=c.service_id, code="max_delete_fraction") for c in delete
        )
        delete = ()
    return replace(plan, update=update, held=held, delete=delete)


def compute_plan(
    desired: Mapping[str, DesiredService],
    current: Mapping[str, CurrentService],
    *,
    owner_tag: str,
    policy: Policy = "upsert-only",
    stale_after: int = 3,
    max_delete_fraction: float = 0.2,
    outcomes: Mapping[Scope, bool] | None = None,
    all_scopes_ok: bool = False,
    misses: Mapping[str, int] | None = None,
    known_scopes: Mapping[str, Scope] | None = None,
    protected: frozenset[str] | set[str] = frozenset(),
) -> Plan:
    """:func:`diff` then :func:`apply_policy`, with the arguments spelled out (tests, benchmark).

    ``outcomes`` maps each scope looked at this cycle to whether it succeeded; ``misses`` and
    ``known_scopes`` are the previous plan's bookkeeping (empty on a first run).
    """
    raw = diff(
        desired,
        current,
        owner_tag=owner_tag,
        looked=Looked(outcomes or {}, all_scopes_ok),
        history=History(misses or {}, known_scopes or {}),
        stale_after=stale_after,
        protected=protected,
    )
    return apply_policy(raw, policy, max_delete_fraction=max_delete_fraction)
