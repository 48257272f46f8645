"""The Grafana dashboard and the Prometheus alert rules in ``config/`` cannot drift from the agent.

Every PromQL expression is parsed (``promql-parser``), and every metric it names, with every
label it filters or groups on, must be one that a running agent really exports: the names are
read from ``/metrics`` of a real daemon cycle against the OpenMetadata stand-in, a cycle with a
conflict, a refused write and deletions held back by ``max_delete_fraction``, so that the series
the alerts look at are there. The ``PrometheusRule`` manifest must say the same as the plain
rules file and have the shape the prometheus-operator reads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlsvc_discover.config import parse_config
from mlsvc_discover.daemon import Daemon
from mlsvc_discover.report import Report
from testing.om_fixtures import OM_TOKEN
from testing.openmetadata import OpenMetadataStandIn
from tests.helpers import drive, http_get

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "config" / "prometheus" / "mlsvc-discover-rules.yaml"
MANIFEST = ROOT / "config" / "prometheus" / "mlsvc-discover-prometheusrule.yaml"
DASHBOARD = ROOT / "config" / "grafana" / "mlsvc-discover-dashboard.json"
OWNER = "dash-test"
# Labels Prometheus adds at scrape time, and the histogram bucket label.
SCRAPE_LABELS = frozenset({"job", "instance", "le"})
# Grafana's variables, replaced by what Grafana would put there before the query is sent.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m"}


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r for g in data["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for panel in data["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            out.append((f"panel {panel['title']!r} {target['refId']}", expr))
    return out


def all_exprs() -> list[tuple[str, str]]:
    return [(f"alert {r['alert']}", r["expr"]) for r in rules()] + dashboard_exprs()


def selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """(metric name, label names matched) of every selector, and every label grouped on."""
    tree = promql_parser.parse(expr)
    found: list[tuple[str, set[str]]] = []
    grouped: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            found.append((node.name, {m.name for m in node.matchers.matchers}))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouped.update(node.modifier.labels)
        return True

    promql_parser.walk(tree, visit)
    return found, grouped


@pytest.fixture(scope="module")
def metrics_text() -> str:
    """/metrics of a real daemon after one cycle with a conflict, a refused write, blocked deletes."""
    from testing.om_fixtures import make_standin

    standin: OpenMetadataStandIn = make_standin()
    try:
        standin.put_entity(
            {"name": "taken", "serviceType": "CustomMlModel", "connection": {"config": {"type": "CustomMlModel"}}}
        )
        tag = {"tagFQN": f"mlsvc-discover.{OWNER}", "source": "Classification", "labelType": "Automated"}
        for i in range(2):
            standin.put_entity(
                {
                    "name": f"gone-{i}",
                    "serviceType": "CustomMlModel",
                    "connection": {"config": {"type": "CustomMlModel"}},
                    "tags": [{**tag, "state": "Confirmed"}],
                }
            )
        # A 403 on a per-item PUT stops every write of the cycle (the token is refused); a 404 for a
        # reference the request names fails only that service, and the alert watches both.
        standin.fail_items({"refused": (404, "domain instance for Finance not found")})
        raw = {
            "owner_id": OWNER,
            "policy": "sync",
            "stale_after": 1,
            "max_delete_fraction": 0.1,  # 2 stale of 2 owned: held back
            "openmetadata": {"host": standin.base_url, "token": OM_TOKEN, "retries": 0, "timeout": "5s"},
            "schedule": {"interval": "1h"},
            "server": {"address": "127.0.0.1:0"},
            "discoverers": [
                {
                    "type": "static",
                    "name": "fleet",
                    "services": [{"name": n, "service_type": "CustomMlModel"} for n in ("taken", "refused", "fresh")],
                }
            ],
        }
        text: list[str] = []

        def step(n: int, report: Report, daemon: Daemon) -> bool:
            assert report.plan is not None
            assert [c.name for c in report.plan.conflicts] == ["taken"]
            assert {c.code for c in report.plan.held} == {"max_delete_fraction"}
            assert any(f.kind == "http_404" for f in report.failures), report.failures
            status, body = http_get(f"http://127.0.0.1:{daemon.port}/metrics")
            assert status == 200
            text.append(body)
            return True

        drive(parse_config(raw, env={}), step)
    finally:
        standin.stop()
    return text[0]


@pytest.fixture(scope="module")
def exported(metrics_text: str) -> dict[str, set[str]]:
    """{metric or sample name: its label names} as the running agent exported them."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics_text):
        names.setdefault(family.name, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
            names[family.name].update(sample.labels)
    # A counter's family is named without _total; the exposition (and PromQL) uses the _total name.
    for name in list(names):
        if f"{name}_total" in names:
            names[f"{name}_total"] |= names[name]
    return names


def test_every_expression_parses() -> None:
    exprs = all_exprs()
    assert len(exprs) >= 20
    for where, expr in exprs:
        try:
            promql_parser.parse(expr)
        except Exception as exc:
            pytest.fail(f"{where}: {expr!r} does not parse: {exc}")


def test_every_metric_and_label_used_is_exported_by_a_running_agent(exported: dict[str, set[str]]) -> None:
    used: set[str] = set()
    for where, expr in all_exprs():
        found, grouped = selectors(expr)
        labels_of_expr: set[str] = set()
        for name, matched in found:
            assert name in exported, f"{where}: {name} is not in /metrics of a running agent"
            unknown = matched - exported[name] - SCRAPE_LABELS
            assert not unknown, f"{where}: {name} has no label(s) {sorted(unknown)}"
            labels_of_expr |= exported[name]
            used.add(name)
        unknown = grouped - labels_of_expr - SCRAPE_LABELS
        assert not unknown, f"{where}: groups by {sorted(unknown)}, which none of its metrics has"
    # The list: each is on the dashboard or in an alert.
    for needed in (
        "mlsvc_discover_cycles_total",
        "mlsvc_discover_cycle_duration_seconds_bucket",
        "mlsvc_discover_last_success_timestamp_seconds",
        "mlsvc_discover_findings",
        "mlsvc_discover_plan_changes",
        "mlsvc_discover_writes_total",
        "mlsvc_discover_deletions_total",
        "mlsvc_discover_conflicts",
        "mlsvc_discover_write_failures_total",
        "mlsvc_discover_oldest_cycle_in_flight_age_seconds",
        "mlsvc_discover_cycle_timeout_seconds",
    ):
        assert needed in used, needed


def test_the_real_cycle_exported_the_series_the_alerts_watch(exported: dict[str, set[str]]) -> None:
    assert {"discoverer", "kind"} <= exported["mlsvc_discover_write_failures_total"]
    assert {"discoverer", "action"} <= exported["mlsvc_discover_plan_changes"]
    assert "process_start_time_seconds" in exported
    assert "mlsvc_discover_schedule_interval_seconds" in exported


def test_the_new_metrics_count_what_the_cycle_did(metrics_text: str) -> None:
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
    }
    assert values[("mlsvc_discover_conflicts", ())] == 1
    assert values[("mlsvc_discover_plan_changes", (("action", "conflict"), ("discoverer", "fleet")))] == 1
    assert values[("mlsvc_discover_plan_changes", (("action", "create"), ("discoverer", "fleet")))] == 2
    # The two owned services nobody found: their deletion was held back (action "hold"), by their last known owner.
    held = sum(
        v
        for (name, labels), v in values.items()
        if name == "mlsvc_discover_plan_changes" and ("action", "hold") in labels
    )
    assert held == 2
    assert values[("mlsvc_discover_write_failures_total", (("discoverer", "fleet"), ("kind", "http_404")))] == 1
    assert values[("mlsvc_discover_deletions_total", (("reason", "blocked_max_fraction"),))] == 2
    assert values[("mlsvc_discover_schedule_interval_seconds", ())] == 3600
    assert values[("mlsvc_discover_cycles_in_flight", ())] == 0  # the cycle had ended
    assert values[("mlsvc_discover_oldest_cycle_in_flight_age_seconds", ())] == 0
    assert values[("mlsvc_discover_cycle_timeout_seconds", ())] > 0


def test_the_dashboard_template_variable_names_an_exported_metric(exported: dict[str, set[str]]) -> None:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [v["definition"] for v in data["templating"]["list"] if v["type"] == "query"]
    assert queries
    for query in queries:
        m = re.fullmatch(r"label_values\((\w+), (\w+)\)", query)
        assert m, query
        assert m.group(1) in exported


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names))
    assert set(names) >= {
        "MlsvcDiscoverNoSuccessfulCycle",
        "MlsvcDiscoverCycleStuck",
        "MlsvcDiscoverDeletionsBlocked",
        "MlsvcDiscoverWritesRefused",
        "MlsvcDiscoverConflicts",
    }
    for r in rules():
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, r["alert"]
        assert r["annotations"]["summary"], r["alert"]
        assert r["annotations"]["description"], r["alert"]
        if "for" in r:
            assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]


def test_the_prometheusrule_manifest_has_the_operators_shape_and_the_same_rules() -> None:
    docs = list(yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")))
    assert len(docs) == 1
    manifest = docs[0]
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", manifest["metadata"]["name"])
    assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(manifest["spec"]) == {"groups"}
    for group in manifest["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
            assert isinstance(rule["expr"], str)
            assert all(isinstance(v, str) for v in rule.get("labels", {}).values())
            assert all(isinstance(v, str) for v in rule.get("annotations", {}).values())
    plain = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert manifest["spec"] == plain, "regenerate the manifest from mlsvc-discover-rules.yaml"


def test_the_dashboard_is_grafana_json_with_unique_panel_ids() -> None:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    assert data["uid"] == "mlsvc-discover"
    for panel in data["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]


def test_plan_changes_of_a_pair_that_disappears_read_zero_not_their_old_value() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from mlsvc_discover.metrics import Metrics
    from mlsvc_discover.plan import Change, Plan

    metrics = Metrics(CollectorRegistry())
    conflict = Change("x", "conflict", "taken", source="fleet")
    metrics.observe(Report(plan=Plan(conflicts=(conflict,))))
    metrics.observe(Report(plan=Plan(create=(Change("y", "create", "new", source="fleet"),))))
    text = generate_latest(metrics.registry).decode()
    assert 'mlsvc_discover_plan_changes{action="conflict",discoverer="fleet"} 0.0' in text
    assert 'mlsvc_discover_plan_changes{action="create",discoverer="fleet"} 1.0' in text
    assert "mlsvc_discover_conflicts 0.0" in text
