"""The status page of the long-running agent: ``/status`` (HTML) and ``/status.json``.

In the spirit of Prometheus's Service Discovery page: the last cycle, every discoverer and scope
with its outcome, every finding with the service name it maps to and its plan action, every
failure with its reason.

:func:`build_status` turns a cycle's :class:`Report` into plain data, once per cycle; every
string in it is redacted with the agent's secrets (the same redaction as the logs) *before* any
HTML escaping, so a secret containing ``&`` or ``<`` is still found. :func:`render_html` renders
that data, escaping everything, with an optional server-side filter (``?q=``) so that the page
works without JavaScript; a tiny inline script filters as one types. Plan changes are read
through :meth:`Change.to_dict`, so a field the plan gains later shows up without a change here.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from mlsvc_discover import __version__
from mlsvc_discover._logging import redact
from mlsvc_discover.discoverers.base import Scope
from mlsvc_discover.report import Report

__all__ = ["StatusBoard", "build_status", "filter_status", "render_html"]

# Plan actions as the page names them, in the order an operator wants to read them.
_ACTION_ORDER = (
    "failed",
    "conflict",
    "not mapped",
    "delete",
    "delete pending",
    "hold",
    "restore",
    "create",
    "update",
    "missing",
    "unchanged",
)
_WRITE_STAGES = frozenset({"write", "restore", "delete"})
# Keys of a change that have their own column; any other key is shown in the details.
_OWN_COLUMNS = frozenset({"name", "action", "reason", "source", "body", "status", "discoverer", "finding", "scope"})


def _iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scope_text(scope: Scope) -> str:
    return "/".join(scope)


def _clean(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {str(_clean(k, secrets)): _clean(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, secrets) for v in value]
    return value


def build_status(  # noqa: PLR0912, PLR0915 - builds the page's data: one block per section
    report: Report,
    *,
    secrets: Iterable[str] = (),
    cycle: int | None = None,
    success: bool | None = None,
    owner_id: str | None = None,
    policy: str | None = None,
    stale_after: int | None = None,
) -> dict[str, Any]:
    """The status data of one finished cycle, every string redacted."""
    failures = [f.to_dict() for f in report.failures]
    write_failures: dict[str, dict[str, Any]] = {}
    unmapped_failures: dict[tuple[str | None, str], str] = {}
    for f in report.failures:
        if f.stage in _WRITE_STAGES:
            write_failures[f.item] = f.to_dict()
        elif f.stage == "map":
            unmapped_failures[(f.source, f.item)] = f.reason

    by_name = {r.name: r for r in report.findings if r.name is not None}
    services: list[dict[str, Any]] = []
    plan = report.plan
    seen: set[str] = set()
    if plan is not None:
        misses = dict(plan.misses)
        for change in plan.changes():
            row: dict[str, Any] = {k: v for k, v in change.to_dict().items() if k != "body"}
            if change.code:
                row.setdefault("code", change.code)
            finding = by_name.get(change.name)
            scope = finding.scope if finding is not None else plan.scopes.get(change.name)
            row["discoverer"] = change.source or (finding.source if finding else None) or _owner(scope)
            row["finding"] = finding.key if finding is not None else None
            row["scope"] = _scope_text(scope) if scope else None
            status: str = change.action
            if change.name in misses:
                row["misses"] = misses[change.name]
                if change.action == "unchanged":
                    status = "delete pending" if policy in (None, "sync") else "missing"
            failure = write_failures.get(change.name)
            if failure is not None:
                row["failure"] = failure["reason"]
                row["failure_kind"] = failure["kind"]
                status = "failed"
            row["status"] = status
            services.append(row)
            seen.add(change.name)
        for name, count in sorted(misses.items()):
            if name in seen:
                continue
            scope = plan.scopes.get(name)
            services.append(
                {
                    "name": name,
                    "action": "unchanged",
                    "status": "missing",
                    "reason": f"not found for {count} consecutive cycle(s); only policy sync deletes",
                    "misses": count,
                    "discoverer": _owner(scope),
                    "finding": None,
                    "scope": _scope_text(scope) if scope else None,
                }
            )
    for rec in report.findings:
        if rec.name is None:
            services.append(
                {
                    "name": None,
                    "action": None,
                    "status": "not mapped",
                    "reason": unmapped_failures.get((rec.source, rec.key), "could not be mapped to a service"),
                    "discoverer": rec.source,
                    "finding": rec.key,
                    "scope": _scope_text(rec.scope),
                }
            )
        elif plan is None:
            services.append(
                {
                    "name": rec.name,
                    "action": None,
                    "status": "not planned",
                    "reason": "no plan this cycle (see the cycle's result)",
                    "discoverer": rec.source,
                    "finding": rec.key,
                    "scope": _scope_text(rec.scope),
                }
            )
    rank = {a: i for i, a in enumerate(_ACTION_ORDER)}
    services.sort(key=lambda r: (rank.get(r["status"], len(rank)), r["name"] or "", r.get("finding") or ""))

    discoverers = []
    for name, stats in sorted(report.discoverers.items()):
        discoverers.append(
            {
                "name": name,
                "ok": stats.ok,
                "findings": stats.findings,
                "failures": stats.failures,
                "ignored": stats.ignored,
                "duration_seconds": round(stats.duration, 3),
                "scopes": [
                    {"scope": _scope_text(s.scope), "ok": s.ok, "error": s.error}
                    for s in report.scopes
                    if s.source == name
                ],
            }
        )
    counts: dict[str, int] = {}
    for row in services:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    finished = report.started_at + report.duration if report.started_at else None
    data: dict[str, Any] = {
        "agent": {"version": __version__, "owner_id": owner_id, "policy": policy, "stale_after": stale_after},
        "last_cycle": {
            "number": cycle,
            "started_at": _iso(report.started_at),
            "finished_at": _iso(finished),
            "finished_at_unix": round(finished, 3) if finished else None,
            "duration_seconds": round(report.duration, 3),
            "result": None if success is None else ("success" if success else "failure"),
            "ok": report.ok,
            "dry_run": report.dry_run,
            "fatal": report.fatal,
            "fatal_kind": report.fatal_kind,
            "interrupted": report.interrupted,
            "notes": list(report.notes),
            "outcomes": dict(sorted((+report.outcomes).items())),
        },
        "counts": dict(sorted(counts.items(), key=lambda kv: rank.get(kv[0], len(rank)))),
        "discoverers": discoverers,
        "services": services,
        "failures": failures,
    }
    cleaned: dict[str, Any] = _clean(data, sorted(set(secrets)))
    return cleaned


def _owner(scope: Scope | None) -> str | None:
    # Scopes start with (type, discoverer name): the discoverer of an owned service not found.
    return scope[1] if scope is not None and len(scope) > 1 else None


def _matches(value: Any, needle: str) -> bool:
    if isinstance(value, str):
        return needle in value.lower()
    if isinstance(value, Mapping):
        return any(_matches(v, needle) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_matches(v, needle) for v in value)
    return needle in str(value).lower()


def filter_status(data: Mapping[str, Any], query: str) -> dict[str, Any]:
    """``data`` with only the services, scopes and failures whose text contains ``query`` (any case)."""
    needle = query.strip().lower()
    out = dict(data)
    if not needle:
        return out
    out["services"] = [r for r in data.get("services", []) if _matches(r, needle)]
    out["failures"] = [f for f in data.get("failures", []) if _matches(f, needle)]
    out["discoverers"] = [
        {**d, "scopes": [s for s in d.get("scopes", []) if _matches(s, needle) or needle in d["name"].lower()]}
        for d in data.get("discoverers", [])
    ]
    return out


class StatusBoard:
    """The latest cycle's status for the health server's threads; the daemon records each cycle.

    Building the data happens once per cycle, on the daemon's loop; a request only reads the
    current snapshot (one reference, replaced whole) and renders it.
    """

    def __init__(
        self,
        secrets: Callable[[], Iterable[str]],
        *,
        owner_id: str | None = None,
        policy: str | None = None,
        stale_after: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secrets = secrets
        self._owner_id = owner_id
        self._policy = policy
        self._stale_after = stale_after
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] | None = None
        self._in_flight_since: float | None = None

    def cycle_started(self) -> None:
        with self._lock:
            self._in_flight_since = self._clock()

    def record(self, report: Report, *, cycle: int | None = None, success: bool | None = None) -> None:
        data = build_status(
            report,
            secrets=self._secrets(),
            cycle=cycle,
            success=success,
            owner_id=self._owner_id,
            policy=self._policy,
            stale_after=self._stale_after,
        )
        with self._lock:
            self._snapshot = data
            self._in_flight_since = None

    def data(self, query: str = "") -> dict[str, Any]:
        """What ``/status.json`` answers: the last cycle (or nothing yet) and the cycle in flight."""
        with self._lock:
            snapshot, since = self._snapshot, self._in_flight_since
        now = self._clock()
        base: dict[str, Any] = (
            dict(snapshot)
            if snapshot is not None
            else {
                "agent": {
                    "version": __version__,
                    "owner_id": self._owner_id,
                    "policy": self._policy,
                    "stale_after": self._stale_after,
                },
                "last_cycle": None,
                "counts": {},
                "discoverers": [],
                "services": [],
                "failures": [],
            }
        )
        base["generated_at"] = _iso(now)
        base["generated_at_unix"] = round(now, 3)
        base["cycle_in_flight"] = (
            None if since is None else {"started_at": _iso(since), "running_seconds": round(now - since, 1)}
        )
        return filter_status(base, query) if query else base


# --- HTML ------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1rem 1.5rem;color:#1b1f24;background:#fff}
h1{font-size:1.35rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.4rem 0 .4rem}
table{border-collapse:collapse;width:100%;margin:.3rem 0}
th,td{border-bottom:1px solid #d8dee4;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f7;position:sticky;top:0}td.n{text-align:right}
code{font:12px ui-monospace,monospace;word-break:break-all}
.ok{color:#116329}.bad{color:#b3261e;font-weight:600}.warn{color:#8a5a00;font-weight:600}
.tag{display:inline-block;padding:0 .4rem;border-radius:.6rem;font-size:12px;background:#eef1f4;white-space:nowrap}
.tag.failed,.tag.conflict,.tag.not-mapped{background:#fde7e7;color:#8c1d18}
.tag.delete,.tag.delete-pending,.tag.hold,.tag.missing{background:#fff3d6;color:#6d4700}
.tag.create,.tag.update,.tag.restore{background:#e3f1ff;color:#0b4f8a}
.summary span{margin-right:1rem}form{margin:.6rem 0}input[type=search]{width:22rem;padding:.3rem}
.muted{color:#59636e}
"""

# Filters rows as one types; without it the form submits ?q= and the server filters.
_SCRIPT = (
    "(function(){var f=document.getElementById('filter'),q=f.elements.q,rows=null,c=document.getElementById('shown');"
    "function run(){var t=q.value.trim().toLowerCase(),n=0;"
    "if(!rows){rows=[].map.call(document.querySelectorAll('tbody tr'),"
    "function(r){return [r,r.textContent.toLowerCase()]})}"
    "for(var i=0;i<rows.length;i++){var hit=!t||rows[i][1].indexOf(t)>=0;rows[i][0].hidden=!hit;"
    "if(hit&&rows[i][0].parentNode.parentNode.id==='services')n++}"
    "c.textContent=n}"
    "q.addEventListener('input',run);f.addEventListener('submit',function(e){e.preventDefault();run()});"
    "if(q.value)run()})();"
)


def script_hash() -> str:
    """The CSP hash of the inline script (the page allows that script and nothing else)."""
    import base64
    import hashlib

    return "sha256-" + base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _details(row: Mapping[str, Any]) -> str:
    parts: list[str] = []
    if row.get("reason"):
        parts.append(_e(row["reason"]))
    if row.get("failure"):
        kind = f" ({row['failure_kind']})" if row.get("failure_kind") else ""
        what = f"{row.get('action') or 'write'} failed{kind}"
        parts.append(f'<span class="bad">{_e(what)}: {_e(row["failure"])}</span>')
    for key, value in row.items():
        if key in _OWN_COLUMNS or key in ("failure", "failure_kind") or value in (None, "", [], {}):
            continue
        text = ", ".join(str(v) for v in value) if isinstance(value, list) else value
        parts.append(f'<span class="muted">{_e(key)}:</span> {_e(text)}')
    return "<br>".join(parts)


def render_html(data: Mapping[str, Any], *, query: str = "") -> str:  # noqa: PLR0915 - the page, section by section
    """The status page for ``data`` (from :meth:`StatusBoard.data`), filtered by ``query``."""
    shown = filter_status(data, query) if query else data
    out: list[str] = []
    w = out.append
    agent = data.get("agent") or {}
    w('<!doctype html><html lang="en"><head><meta charset="utf-8">')
    w('<meta name="viewport" content="width=device-width,initial-scale=1">')
    w(f"<title>mlsvc-discover status: {_e(agent.get('owner_id'))}</title><style>{_CSS}</style></head><body>")
    w(f"<h1>mlsvc-discover <span class=muted>{_e(agent.get('owner_id'))}</span></h1>")
    w(
        f'<p class="muted">version {_e(agent.get("version"))} · policy {_e(agent.get("policy"))} · '
        f'page generated {_e(data.get("generated_at"))} · <a href="status.json">status.json</a> · '
        '<a href="metrics">metrics</a></p>'
    )
    now = float(data.get("generated_at_unix") or time.time())
    cycle = data.get("last_cycle")
    inflight = data.get("cycle_in_flight")
    w('<section id="cycle"><h2>Last cycle</h2>')
    if cycle is None:
        w("<p>No cycle has finished yet.</p>")
    else:
        result = cycle.get("result") or ("success" if cycle.get("ok") else "failure")
        cls = "ok" if result == "success" and cycle.get("ok") else ("warn" if result == "success" else "bad")
        word = result if cycle.get("ok") or result != "success" else "success, with failures"
        ago = _ago(now - float(cycle["finished_at_unix"])) if cycle.get("finished_at_unix") else ""
        flags = (" · dry run" if cycle.get("dry_run") else "") + (
            " · interrupted by shutdown" if cycle.get("interrupted") else ""
        )
        w(
            f'<p id="result" class="{cls}">Cycle {_e(cycle.get("number"))}: {_e(word)}</p>'
            f"<p>finished {_e(cycle.get('finished_at'))} ({_e(ago)}), took {_e(cycle.get('duration_seconds'))}s"
            f"{flags}</p>"
        )
        if cycle.get("fatal"):
            w(f'<p class="bad" id="fatal">{_e(cycle["fatal"])}</p>')
        for note in cycle.get("notes") or ():
            w(f"<p>note: {_e(note)}</p>")
        outcomes = cycle.get("outcomes") or {}
        if outcomes:
            w("<p>writes: " + ", ".join(f"{_e(k)} {_e(v)}" for k, v in outcomes.items()) + "</p>")
    if inflight:
        w(f"<p>A cycle is running: started {_e(inflight['started_at'])} ({_e(inflight['running_seconds'])}s).</p>")
    w("</section>")

    counts = data.get("counts") or {}
    w('<p class="summary">')
    for status, n in counts.items():
        w(f'<span><span class="tag {_e(status.replace(" ", "-"))}">{_e(status)}</span> {_e(n)}</span>')
    w("</p>")
    w(
        '<form id="filter" method="get" action=""><label>Filter <input type="search" name="q" '
        f'value="{_e(query)}" placeholder="name, URI, account, action, reason" autocomplete="off"></label> '
        '<button type="submit">Filter</button>'
        + (' <a href="?">clear</a>' if query else "")
        + f' <span class="muted"><span id="shown">{len(shown.get("services", []))}</span> of '
        f"{len(data.get('services', []))} services shown</span></form>"
    )

    w(
        '<h2>Services</h2><table id="services"><thead><tr><th>Service</th><th>Action</th><th>Discoverer</th>'
        "<th>Finding</th><th>Details</th></tr></thead><tbody>"
    )
    for row in shown.get("services", []):
        status = row.get("status") or ""
        w(
            f'<tr class="svc"><td><code>{_e(row.get("name") or "—")}</code></td>'
            f'<td><span class="tag {_e(status.replace(" ", "-"))}">{_e(status)}</span></td>'
            f"<td>{_e(row.get('discoverer'))}</td><td><code>{_e(row.get('finding'))}</code></td>"
            f"<td>{_details(row)}</td></tr>"
        )
    w("</tbody></table>")

    w(
        '<h2>Failures</h2><table id="failures"><thead><tr><th>Stage</th><th>Discoverer</th><th>Item</th>'
        "<th>Kind</th><th>Reason</th></tr></thead><tbody>"
    )
    for f in shown.get("failures", []):
        w(
            f'<tr class="failure"><td>{_e(f.get("stage"))}</td><td>{_e(f.get("source"))}</td>'
            f"<td><code>{_e(f.get('item'))}</code></td><td>{_e(f.get('kind'))}</td>"
            f'<td class="bad">{_e(f.get("reason"))}</td></tr>'
        )
    w("</tbody></table>")
    if not data.get("failures"):
        w("<p class=ok>No failures.</p>")

    w(
        '<h2>Discoverers and scopes</h2><table id="scopes"><thead><tr><th>Discoverer / scope</th><th>Outcome</th>'
        "<th>Details</th></tr></thead><tbody>"
    )
    for d in shown.get("discoverers", []):
        mark = '<span class="ok">ok</span>' if d.get("ok") else '<span class="bad">failed</span>'
        w(
            f'<tr class="discoverer"><td><strong>{_e(d.get("name"))}</strong></td><td>{mark}</td>'
            f"<td>{_e(d.get('findings'))} found, {_e(d.get('failures'))} failed, {_e(d.get('ignored'))} ignored "
            f"in {_e(d.get('duration_seconds'))}s</td></tr>"
        )
        for s in d.get("scopes", []):
            smark = '<span class="ok">ok</span>' if s.get("ok") else '<span class="bad">failed</span>'
            w(
                f'<tr class="scope"><td><code>{_e(s.get("scope"))}</code></td><td>{smark}</td>'
                f"<td>{_e(s.get('error'))}</td></tr>"
            )
    w("</tbody></table>")
    w(f"<script>{_SCRIPT}</script></body></html>")
    return "".join(out)
