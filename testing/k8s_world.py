"""Two fake clusters whose Services point at real MLflow servers, for the kubernetes tests.

cluster ``prod`` (``world.alpha``; plain HTTP API, all namespaces):
  team-a/mlflow      community chart labels, Ingress host with TLS -> https://mlflow.team-a.example.com
  team-a/old-mlflow  community chart labels, opted out by annotation
  team-a/web         the chart's labels, but a web page, not MLflow -> a failure of its own
  team-b/tracking    Bitnami labels, ExternalDNS (old alpha annotation), basic auth from a Secret
  team-c/custom      no chart labels, opted in by annotation, own name, port picked by annotation;
                     nothing external -> the in-cluster DNS name, with a note
  infra/postgres     other labels, not a candidate
cluster ``research`` (``world.beta``; TLS API, namespaces listed one by one, context ``research``):
  ml/mlflow          community labels, URI annotation -> published as given
  restricted/*       the service account may not list it (403)
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from testing.fake_k8s import FakeCluster, ingress, service
from testing.mlflow_fixtures import FakeServer, MlflowServer, TlsMaterial, status

COMMUNITY = {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "mlflow", "app": "mlflow"}
BITNAMI = {
    "app.kubernetes.io/name": "mlflow",
    "app.kubernetes.io/instance": "tracking",
    "app.kubernetes.io/component": "tracking",
    "app.kubernetes.io/part-of": "mlflow",
}


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


@dataclass
class K8sWorld:
    alpha: FakeCluster
    beta: FakeCluster
    alpha_kubeconfig: Path
    beta_kubeconfig: Path
    plain: MlflowServer
    secured: MlflowServer
    web: FakeServer

    def stop(self) -> None:
        self.alpha.stop()
        self.beta.stop()

    @property
    def expected_uris(self) -> dict[str, str]:
        """Service name (default template) -> published trackingUri."""
        return {
            "mlflow-prod-team-a-mlflow": "https://mlflow.team-a.example.com:443",
            "mlflow-prod-team-b-tracking": f"http://mlflow-b.example.com:{port_of(self.secured.url)}",
            "team-c-tracking": f"http://custom.team-c.svc.cluster.local:{port_of(self.plain.url)}",
            "mlflow-research-ml-mlflow": "https://mlflow.beta.example.com:443",
        }


def build_world(tmp: Path, plain: MlflowServer, secured: MlflowServer, web: FakeServer, tls: TlsMaterial) -> K8sWorld:
    p_plain, p_secured, p_web = port_of(plain.url), port_of(secured.url), port_of(web.url)
    alpha = FakeCluster(
        token="alpha-sa-token-0f1e",
        services=[
            service("mlflow", "team-a", labels=COMMUNITY, ports=[{"name": "http", "port": p_plain}]),
            service(
                "old-mlflow",
                "team-a",
                labels=COMMUNITY,
                annotations={"mlsvc-discover.io/mlflow": "false"},
                ports=[{"name": "http", "port": p_plain}],
            ),
            service("web", "team-a", labels=COMMUNITY, ports=[{"name": "http", "port": p_web}]),
            service(
                "tracking",
                "team-b",
                labels=BITNAMI,
                annotations={"external-dns.alpha.kubernetes.io/hostname": "mlflow-b.example.com."},
                ports=[{"name": "http", "port": p_secured}],
            ),
            service(
                "custom",
                "team-c",
                labels={"team": "c"},
                annotations={
                    "mlsvc-discover.io/mlflow": "true",
                    "mlsvc-discover.io/name": "team-c-tracking",
                    "mlsvc-discover.io/port": "api",
                },
                ports=[{"name": "metrics", "port": 9090}, {"name": "api", "port": p_plain}],
            ),
            service("postgres", "infra", labels={"app.kubernetes.io/name": "postgresql"}),
        ],
        ingresses=[
            ingress("mlflow", "team-a", host="mlflow.team-a.example.com", service_name="mlflow", tls=True),
            ingress("other", "team-a", host="other.example.com", service_name="something-else"),
        ],
        secrets={
            ("team-b", "mlflow-discovery"): {"username": str(secured.username), "password": str(secured.password)}
        },
    ).start()
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(tls.cert_path, tls.key_path)
    beta = FakeCluster(
        token="beta-sa-token-9c8d",
        services=[
            service(
                "mlflow",
                "ml",
                labels=COMMUNITY,
                annotations={"mlsvc-discover.io/uri": "https://mlflow.beta.example.com/"},
                ports=[{"name": "http", "port": p_plain}],
            ),
            service("mlflow", "restricted", labels=COMMUNITY, ports=[{"name": "http", "port": p_plain}]),
        ],
        forbidden_namespaces={"restricted"},
        tls=server_tls,
    ).start()
    alpha_path, beta_path = tmp / "alpha.kubeconfig", tmp / "beta.kubeconfig"
    alpha_path.write_text(yaml.safe_dump(alpha.kubeconfig(context="prod")))
    beta_path.write_text(yaml.safe_dump(beta.kubeconfig(context="research", ca_pem=tls.ca_path.read_bytes())))
    return K8sWorld(alpha, beta, alpha_path, beta_path, plain, secured, web)


def discoverer_config(world: K8sWorld, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "kubernetes",
        "name": "k8s",
        "clusters": [
            {"name": "prod", "kubeconfig": str(world.alpha_kubeconfig)},
            {"name": "research", "kubeconfig": str(world.beta_kubeconfig), "namespaces": ["ml", "restricted"]},
        ],
        "auth_secret": {"name": "mlflow-discovery"},
        "page_size": 2,
        "timeout": 10,
        **overrides,
    }


@pytest.fixture
def k8s_world(
    tmp_path: Path,
    mlflow_server: MlflowServer,
    mlflow_auth_server: MlflowServer,
    fake_mlflow: Callable[..., FakeServer],
    tls_material: TlsMaterial,
) -> Iterator[K8sWorld]:
    web = fake_mlflow(status(200, b"<html><body>Welcome</body></html>", "text/html"))
    w = build_world(tmp_path, mlflow_server, mlflow_auth_server, web, tls_material)
    try:
        yield w
    finally:
        w.stop()
