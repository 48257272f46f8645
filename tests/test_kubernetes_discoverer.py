"""The kubernetes discoverer against fake API servers on loopback and real MLflow servers."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from mlsvc_discover.discoverers.base import DiscoveryResult
from mlsvc_discover.discoverers.kubernetes import KubernetesDiscoverer, KubernetesDiscovererConfig
from mlsvc_discover.k8s.endpoints import EndpointError, choose_endpoint, ingress_routes, pick_port
from mlsvc_discover.k8s.selectors import parse_selector
from testing.fake_k8s import FakeCluster, fail, ingress, service, stall
from testing.k8s_world import COMMUNITY, K8sWorld, discoverer_config
from testing.mlflow_fixtures import MlflowServer


def run(config: dict[str, Any]) -> tuple[DiscoveryResult, KubernetesDiscoverer]:
    disc = KubernetesDiscoverer(KubernetesDiscovererConfig.model_validate(config))

    async def go() -> DiscoveryResult:
        try:
            return await disc.discover()
        finally:
            await disc.aclose()

    return asyncio.run(go()), disc


def scopes(result: DiscoveryResult) -> dict[tuple[str, ...], bool]:
    return {s.scope: s.ok for s in result.scopes}


# --- against the fake clusters and real MLflow ---------------------------------------------------


@pytest.mark.slow
def test_finds_exactly_the_mlflow_services_with_their_reachable_uris(k8s_world: K8sWorld) -> None:
    result, _ = run(discoverer_config(k8s_world))
    found = {f.key: f for f in result.findings}
    assert set(found) == {"prod/team-a/mlflow", "prod/team-b/tracking", "prod/team-c/custom", "research/ml/mlflow"}
    uris = {k: f.attributes["tracking_uri"] for k, f in found.items()}
    assert uris == {
        "prod/team-a/mlflow": "https://mlflow.team-a.example.com:443",
        "prod/team-b/tracking": k8s_world.expected_uris["mlflow-prod-team-b-tracking"],
        "prod/team-c/custom": k8s_world.expected_uris["team-c-tracking"],
        "research/ml/mlflow": "https://mlflow.beta.example.com:443",
    }
    sources = {k: f.attributes["uri_source"] for k, f in found.items()}
    assert sources == {
        "prod/team-a/mlflow": "ingress",
        "prod/team-b/tracking": "external-dns",
        "prod/team-c/custom": "cluster-dns",
        "research/ml/mlflow": "annotation",
    }
    assert found["prod/team-c/custom"].name == "team-c-tracking"
    # The real servers were probed at the Services' cluster IP and port, not at the published names.
    assert found["prod/team-a/mlflow"].attributes["probed_uri"] == k8s_world.plain.url
    assert found["prod/team-a/mlflow"].attributes["registry_available"] is True


@pytest.mark.slow
def test_the_rest_is_reported_with_reasons_in_its_own_scope(k8s_world: K8sWorld) -> None:
    result, _ = run(discoverer_config(k8s_world))
    reasons = {f.item: f for f in result.failures}
    assert set(reasons) == {"prod/team-a/web", "research/restricted"}
    assert reasons["prod/team-a/web"].kind == "not_mlflow"
    assert "not an MLflow tracking server" in reasons["prod/team-a/web"].reason
    assert reasons["research/restricted"].kind == "forbidden"
    assert "HTTP 403" in reasons["research/restricted"].reason
    assert 'cannot list resource "services"' in reasons["research/restricted"].reason
    outcome = scopes(result)
    assert outcome[("kubernetes", "k8s", "prod", "team-a", "web")] is False
    assert outcome[("kubernetes", "k8s", "research", "restricted")] is False
    assert outcome[("kubernetes", "k8s", "research", "ml")] is True
    assert outcome[("kubernetes", "k8s", "prod")] is True
    assert [(s.item, s.kind) for s in result.ignored] == [("prod/team-a/old-mlflow", "opted_out")]
    notes = "\n".join(result.notes)
    assert "prod/team-a/old-mlflow: ignored, opted out" in notes
    assert "prod/team-c/custom: no Ingress or ExternalDNS hostname" in notes
    assert "resolves only inside the cluster" in notes


@pytest.mark.slow
def test_lists_are_paged_with_continue_tokens_and_secrets_read_through_the_api(k8s_world: K8sWorld) -> None:
    result, disc = run(discoverer_config(k8s_world))
    assert any("continue=" in r and "/api/v1/services" in r for r in k8s_world.alpha.requests)
    assert all("limit=2" in r for r in k8s_world.alpha.requests if r.startswith("/api/v1/services"))
    assert "/api/v1/namespaces/team-b/secrets/mlflow-discovery" in k8s_world.alpha.requests
    # The basic-auth server was reached with the Secret's credentials; its password is a secret.
    assert "prod/team-b/tracking" in {f.key for f in result.findings}
    assert k8s_world.secured.password in disc.secrets()


@pytest.mark.slow
def test_without_the_secret_the_auth_server_is_a_401_failure_of_its_own(k8s_world: K8sWorld) -> None:
    k8s_world.alpha.secrets.clear()
    result, _ = run(discoverer_config(k8s_world))
    failures = {f.item: f for f in result.failures}
    assert failures["prod/team-b/tracking"].kind == "unauthorized"
    assert "prod/team-a/mlflow" in {f.key for f in result.findings}


@pytest.mark.slow
def test_a_secret_that_cannot_be_read_fails_only_the_candidates_that_need_it(k8s_world: K8sWorld) -> None:
    k8s_world.alpha.forbid_secrets = True
    result, _ = run(discoverer_config(k8s_world))
    failures = {f.item: f for f in result.failures}
    assert failures["prod/team-b/tracking"].kind == "forbidden"
    assert (
        "credentials: cannot read secret team-b/mlflow-discovery: HTTP 403" in failures["prod/team-b/tracking"].reason
    )
    assert scopes(result)[("kubernetes", "k8s", "prod", "team-b", "tracking")] is False


@pytest.mark.slow
def test_server_side_selectors_when_the_opt_in_annotation_is_off(k8s_world: K8sWorld) -> None:
    result, _ = run(discoverer_config(k8s_world, opt_in_annotation=False))
    assert "prod/team-c/custom" not in {f.key for f in result.findings}
    service_lists = [r for r in k8s_world.alpha.requests if r.startswith("/api/v1/services")]
    assert service_lists
    assert all("labelSelector=app.kubernetes.io%2Fname%3Dmlflow" in r for r in service_lists)


@pytest.mark.slow
def test_probe_via_published_probes_the_published_uri_itself(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    port = int(mlflow_server.url.rsplit(":", 1)[1])
    cluster = FakeCluster(
        token="t",
        services=[
            service(
                "mlflow",
                "ml",
                labels=COMMUNITY,
                # The agent outside the cluster reaches the server by its ExternalDNS name.
                annotations={"external-dns.kubernetes.io/hostname": "localhost"},
                cluster_ip="127.0.0.9",  # nothing listens there: contacting it would fail the probe
                ports=[{"name": "http", "port": port}],
            )
        ],
    ).start()
    try:
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(cluster.kubeconfig()))
        result, _ = run(
            {
                "type": "kubernetes",
                "name": "k8s",
                "clusters": [{"name": "outside", "kubeconfig": str(path), "probe_via": "published"}],
            }
        )
    finally:
        cluster.stop()
    (finding,) = result.findings
    assert finding.attributes["tracking_uri"] == finding.attributes["probed_uri"] == f"http://localhost:{port}"
    assert finding.attributes["uri_source"] == "external-dns"


@pytest.mark.slow
def test_an_invalid_uri_annotation_fails_that_service_only(k8s_world: K8sWorld) -> None:
    k8s_world.beta.services[0]["metadata"]["annotations"]["mlsvc-discover.io/uri"] = "mlflow.example.com:5000"
    config = discoverer_config(k8s_world)
    config["clusters"] = config["clusters"][1:]
    result, _ = run(config)
    failures = {f.item: f for f in result.failures}
    assert failures["research/ml/mlflow"].kind == "invalid"
    assert "http:// or https://" in failures["research/ml/mlflow"].reason
    assert scopes(result)[("kubernetes", "k8s", "research", "ml", "mlflow")] is False
    assert scopes(result)[("kubernetes", "k8s", "research", "ml")] is True


@pytest.mark.slow
def test_a_cluster_wide_403_fails_the_cluster_scope_and_lists_nothing_else(k8s_world: K8sWorld) -> None:
    k8s_world.alpha.forbid_cluster_wide = True
    config = discoverer_config(k8s_world)
    config["clusters"] = config["clusters"][:1]
    result, _ = run(config)
    assert result.findings == []
    assert scopes(result)[("kubernetes", "k8s", "prod")] is False
    assert [(f.item, f.kind) for f in result.failures] == [("prod", "forbidden")]
    assert "at the cluster scope" in result.failures[0].reason


@pytest.mark.slow
@pytest.mark.parametrize(("code", "kind"), [(500, "server_error"), (503, "server_error"), (429, "throttled")])
def test_a_failing_ingress_list_fails_the_namespace_because_it_decides_the_uri(
    k8s_world: K8sWorld, code: int, kind: str
) -> None:
    k8s_world.beta.faults["/apis/networking.k8s.io/v1/namespaces/ml/ingresses"] = fail(code)
    config = discoverer_config(k8s_world)
    config["clusters"] = config["clusters"][1:]
    result, _ = run(config)
    assert result.findings == []
    assert scopes(result)[("kubernetes", "k8s", "research", "ml")] is False
    assert {f.item: f.kind for f in result.failures}["research/ml"] == kind


@pytest.mark.slow
def test_a_stalled_api_server_ends_within_the_api_deadline(k8s_world: K8sWorld) -> None:
    k8s_world.beta.faults["/api/v1/namespaces/ml/services"] = stall(k8s_world.beta)
    config = discoverer_config(k8s_world, api_timeout=1)
    config["clusters"] = config["clusters"][1:]
    started = time.monotonic()
    result, _ = run(config)
    took = time.monotonic() - started
    assert took < 1 + 5, took
    failure = {f.item: f for f in result.failures}["research/ml"]
    assert failure.kind == "timeout"
    assert scopes(result)[("kubernetes", "k8s", "research", "ml")] is False


@pytest.mark.slow
def test_a_wrong_token_is_a_401_failure_naming_the_credentials(k8s_world: K8sWorld) -> None:
    k8s_world.alpha.token = "rotated"
    config = discoverer_config(k8s_world)
    config["clusters"] = config["clusters"][:1]
    result, _ = run(config)
    assert [(f.item, f.kind) for f in result.failures] == [("prod", "unauthorized")]
    assert "refused the credentials" in result.failures[0].reason
    assert "alpha-sa-token" not in result.failures[0].reason


def test_an_unreachable_api_server_fails_the_cluster(tmp_path: Path, refused_url: str) -> None:
    cluster = FakeCluster(token="t")
    cluster.url = refused_url
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cluster.kubeconfig()))
    result, _ = run({"type": "kubernetes", "name": "k8s", "clusters": [{"name": "gone", "kubeconfig": str(path)}]})
    assert [(f.item, f.kind) for f in result.failures] == [("gone", "unreachable")]
    assert "connection refused" in result.failures[0].reason
    assert scopes(result)[("kubernetes", "k8s", "gone")] is False


@pytest.mark.slow
def test_a_missing_kubeconfig_context_fails_the_cluster_with_the_reason(k8s_world: K8sWorld) -> None:
    config = discoverer_config(k8s_world)
    config["clusters"] = [{"name": "prod", "kubeconfig": str(k8s_world.alpha_kubeconfig), "context": "nope"}]
    result, _ = run(config)
    assert result.failures[0].item == "prod"
    assert result.failures[0].kind == "config"
    assert "nope" in result.failures[0].reason


def test_in_cluster_outside_a_pod_fails_the_cluster_saying_why() -> None:
    result, _ = run({"type": "kubernetes", "name": "k8s", "clusters": [{"name": "here", "in_cluster": True}]})
    assert [(f.item, f.kind) for f in result.failures] == [("here", "config")]
    assert "in-cluster service account" in result.failures[0].reason
    assert scopes(result) == {("kubernetes", "k8s"): True, ("kubernetes", "k8s", "here"): False}


def test_the_client_library_is_imported_only_when_a_kubernetes_discoverer_runs() -> None:
    import subprocess

    code = (
        "import sys; from mlsvc_discover.config import parse_config; "
        "parse_config({'owner_id': 'x', 'openmetadata': {'host': 'http://om:8585/api', 'token': 't'}, "
        "'discoverers': [{'type': 'kubernetes', 'name': 'k', 'clusters': [{'name': 'c', 'in_cluster': True}]}]}, {}); "
        "print('lightkube' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"clusters": []}, "clusters"),
        ({"clusters": [{"name": "a"}]}, "either in_cluster"),
        ({"clusters": [{"name": "a", "in_cluster": True, "kubeconfig": "/k"}]}, "either in_cluster"),
        ({"clusters": [{"name": "a", "in_cluster": True, "context": "x"}]}, "context needs kubeconfig"),
        ({"clusters": [{"name": "a", "in_cluster": True}, {"name": "a", "in_cluster": True}]}, "unique"),
        ({"namespaces": ["Team_A"]}, "not a valid namespace"),
        ({"namespaces": []}, "empty namespace list"),
        ({"selectors": ["app in (a"]}, "cannot read"),
        ({"selectors": ["-bad-=x"]}, "not a valid label key"),
        ({"selectors": [], "opt_in_annotation": False}, "nothing selects"),
        ({"auth": {"token": "t"}, "auth_secret": {"name": "s"}}, "either auth or auth_secret"),
        ({"probe_via": "service"}, "Extra inputs"),
    ],
)
def test_bad_config_names_the_problem(change: dict[str, Any], needle: str) -> None:
    config = {"type": "kubernetes", "name": "k8s", "clusters": [{"name": "c", "in_cluster": True}], **change}
    with pytest.raises(ValidationError) as info:
        KubernetesDiscovererConfig.model_validate(config)
    assert needle in str(info.value)


# --- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app.kubernetes.io/name=mlflow", COMMUNITY, True),
        ("app.kubernetes.io/name==mlflow,app.kubernetes.io/component=tracking", COMMUNITY, False),
        ("app.kubernetes.io/component in (tracking, server)", {"app.kubernetes.io/component": "tracking"}, True),
        ("tier notin (db)", {}, True),
        ("tier notin (db)", {"tier": "db"}, False),
        ("tier!=db", {}, True),
        ("!legacy", {"legacy": "1"}, False),
        ("team", {"team": ""}, True),
    ],
)
def test_label_selectors_match_as_the_api_server_does(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector).matches(labels) is expected


def _svc(**kw: Any) -> dict[str, Any]:
    return service("mlflow", "ml", **kw)


def test_port_named_http_wins_then_https_then_5000() -> None:
    assert pick_port({"ports": [{"name": "x", "port": 5000}, {"name": "http", "port": 80}]}, {}).port == 80
    assert pick_port({"ports": [{"name": "https", "port": 443}, {"name": "x", "port": 5000}]}, {}).port == 443
    assert pick_port({"ports": [{"name": "metrics", "port": 9090}, {"port": 5000}]}, {}).port == 5000
    with pytest.raises(EndpointError, match=r"mlsvc-discover\.io/port"):
        pick_port({"ports": [{"name": "metrics", "port": 9090}]}, {})


def test_ingress_must_route_to_the_chosen_port_and_tls_makes_it_https() -> None:
    svc = _svc(ports=[{"name": "http", "port": 5000}])
    routes = ingress_routes([ingress("i", "ml", host="a.example.com", service_name="mlflow", port=5000, tls=True)])
    ep = choose_endpoint(svc, routes, probe_via="service", cluster_domain="cluster.local")
    assert (ep.published, ep.source, ep.probe) == ("https://a.example.com", "ingress", "http://127.0.0.1:5000")
    other_port = ingress_routes([ingress("i", "ml", host="a.example.com", service_name="mlflow", port=9090)])
    ep = choose_endpoint(svc, other_port, probe_via="service", cluster_domain="cluster.local")
    assert ep.source == "cluster-dns"
    assert ep.published == "http://mlflow.ml.svc.cluster.local:5000"


def test_a_wildcard_tls_entry_covers_one_label() -> None:
    ing = ingress("i", "ml", host="mlflow.ml.example.com", service_name="mlflow")
    ing["spec"]["tls"] = [{"hosts": ["*.ml.example.com"], "secretName": "wild"}]
    (route,) = ingress_routes([ing])[("ml", "mlflow")]
    assert route.https
    ing["spec"]["tls"] = [{"hosts": ["*.example.com"], "secretName": "wild"}]
    (route,) = ingress_routes([ing])[("ml", "mlflow")]
    assert not route.https


def test_ingress_path_prefix_is_kept_and_probed_at_the_service() -> None:
    svc = _svc()
    routes = ingress_routes([ingress("i", "ml", host="ml.example.com", service_name="mlflow", path="/mlflow/")])
    ep = choose_endpoint(svc, routes, probe_via="service", cluster_domain="cluster.local")
    assert ep.published == "http://ml.example.com/mlflow"
    assert ep.probe == "http://127.0.0.1:5000/mlflow"


@pytest.mark.parametrize("key", ["external-dns.kubernetes.io/hostname", "external-dns.alpha.kubernetes.io/hostname"])
def test_external_dns_hostname_both_prefixes(key: str) -> None:
    svc = _svc(annotations={key: "*.wild.example.com, mlflow.example.com"})
    ep = choose_endpoint(svc, {}, probe_via="published", cluster_domain="cluster.local")
    assert (ep.published, ep.source, ep.probe) == (
        "http://mlflow.example.com:5000",
        "external-dns",
        "http://mlflow.example.com:5000",
    )


def test_headless_service_is_probed_by_its_dns_name() -> None:
    svc = _svc(cluster_ip="None")
    ep = choose_endpoint(svc, {}, probe_via="service", cluster_domain="k8s.internal")
    assert ep.probe == ep.published == "http://mlflow.ml.svc.k8s.internal:5000"
