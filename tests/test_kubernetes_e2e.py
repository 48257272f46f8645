"""End to end: `mlsvc-discover discover --once` from config/kubernetes.example.yaml (the README's
example) against two fake clusters, real MLflow servers and the OpenMetadata stand-in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsvc_discover.cli import main
from testing.k8s_world import K8sWorld
from testing.openmetadata import OpenMetadataStandIn

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "kubernetes.example.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture
def config_path(
    tmp_path: Path, k8s_world: K8sWorld, om_standin: OpenMetadataStandIn, om_token: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The README's example as written; only what a test run must change is changed."""
    monkeypatch.setenv("OPENMETADATA_HOST", om_standin.base_url)
    monkeypatch.setenv("OPENMETADATA_JWT_TOKEN", om_token)
    monkeypatch.setenv("PROD_KUBECONFIG", str(k8s_world.alpha_kubeconfig))
    monkeypatch.setenv("RESEARCH_KUBECONFIG", str(k8s_world.beta_kubeconfig))
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    # Two CLI runs must share miss counts and scopes, and one miss is enough to show a delete.
    config["state"] = {"path": str(tmp_path / "state.json")}
    config["stale_after"] = 1
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def discover(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict[str, Any]]:
    code = main(["discover", "--once", "--config", str(path), "--output", "json"])
    out, _ = capsys.readouterr()
    return code, json.loads(out)


def live(standin: OpenMetadataStandIn) -> dict[str, str]:
    return {
        name: s["connection"]["config"]["trackingUri"] for name, s in standin.services.items() if not s.get("deleted")
    }


def test_registers_exactly_the_mlflow_servers_with_reachable_uris_and_reports_the_rest(
    k8s_world: K8sWorld, config_path: Path, om_standin: OpenMetadataStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = discover(capsys, config_path)
    assert code == 1, report  # partial failure: a non-MLflow Service and a namespace it may not list
    assert live(om_standin) == k8s_world.expected_uris
    for name, entity in om_standin.services.items():
        assert entity["serviceType"] == "Mlflow", name
        assert entity["connection"]["config"]["registryUri"] == k8s_world.expected_uris[name]
    reasons = {f["item"]: f for f in report["failures"]}
    assert set(reasons) == {"prod/team-a/web", "research/restricted"}
    assert "not an MLflow tracking server" in reasons["prod/team-a/web"]["reason"]
    assert "HTTP 403" in reasons["research/restricted"]["reason"]
    notes = "\n".join(report.get("notes", []))
    assert "prod/team-a/old-mlflow: ignored, opted out" in notes
    assert "prod/team-c/custom: no Ingress or ExternalDNS hostname" in notes
    # Credentials read from the Secret never reach OpenMetadata or the report.
    assert not om_standin.bodies_containing(str(k8s_world.secured.password))
    assert str(k8s_world.secured.password) not in json.dumps(report)


def test_sync_deletes_a_removed_service_but_nothing_from_a_namespace_it_cannot_list(
    k8s_world: K8sWorld, config_path: Path, om_standin: OpenMetadataStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    assert discover(capsys, config_path)[0] == 1
    assert set(live(om_standin)) == set(k8s_world.expected_uris)
    # The Service behind one server is removed; the namespace of another can no longer be listed.
    k8s_world.alpha.services = [s for s in k8s_world.alpha.services if s["metadata"]["name"] != "mlflow"]
    k8s_world.beta.forbidden_namespaces.add("ml")
    code, report = discover(capsys, config_path)
    assert code == 1
    assert set(live(om_standin)) == set(k8s_world.expected_uris) - {"mlflow-prod-team-a-mlflow"}
    assert report["outcomes"]["deleted"] == 1
    assert "mlflow-research-ml-mlflow" in live(om_standin)


def test_a_cluster_that_cannot_be_listed_deletes_nothing_found_there(
    k8s_world: K8sWorld, config_path: Path, om_standin: OpenMetadataStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    assert discover(capsys, config_path)[0] == 1
    before = live(om_standin)
    k8s_world.alpha.forbid_cluster_wide = True
    code, report = discover(capsys, config_path)
    assert code == 1
    assert live(om_standin) == before
    assert "deleted" not in report["outcomes"]
