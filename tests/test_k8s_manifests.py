"""The example Kubernetes manifests against Kubernetes' own schemas, and the RBAC they grant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsvc_discover.config import parse_config
from mlsvc_discover.discoverers.kubernetes import KubernetesDiscovererConfig

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((REPO / "config").glob("k8s-*.yaml"))
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    # Offline: kubernetes-validate bundles the schemas of Kubernetes 1.37.
    return subprocess.run(
        [str(VALIDATE), "--strict", str(path)], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_example_manifest_passes_kubernetes_schemas_strictly(path: Path) -> None:
    proc = validate(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert proc.stdout.count(" passed for resource ") == len(docs), proc.stdout


def test_the_validator_rejects_an_unknown_field_and_a_wrong_type(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\n"
        "rules:\n  - apiGroups: ['']\n    resource: [services]\n    verbs: get\n"
    )
    proc = validate(bad)
    assert proc.returncode != 0
    assert "resource" in proc.stdout + proc.stderr


def _docs(name: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all((REPO / "config" / name).read_text()) if d}


def test_the_deployment_grants_the_kubernetes_discoverer_read_only_what_it_reads() -> None:
    objs = _docs("k8s-deployment.yaml")
    config = parse_config(yaml.safe_load(objs["ConfigMap"]["data"]["config.yaml"]), env={"OPENMETADATA_JWT_TOKEN": "t"})
    (k8s,) = [d for d in config.discoverers if isinstance(d, KubernetesDiscovererConfig)]
    assert k8s.namespaces == "all"  # hence a ClusterRole, not namespaced Roles
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in objs["ClusterRole"]["rules"]}
    assert rules == {(("",), ("services",)): {"get", "list"}, (("networking.k8s.io",), ("ingresses",)): {"get", "list"}}
    account = objs["ServiceAccount"]["metadata"]
    pod_account = objs["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"]
    for binding, role_kind in ((objs["ClusterRoleBinding"], "ClusterRole"), (objs["RoleBinding"], "Role")):
        assert binding["roleRef"]["kind"] == role_kind
        assert binding["roleRef"]["name"] == objs[role_kind]["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": pod_account, "namespace": account["namespace"]}
        ]
    # Secrets: get on the one name auth_secret reads, in its namespace; never list.
    assert k8s.auth_secret is not None
    (secret_rule,) = objs["Role"]["rules"]
    assert secret_rule == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": [k8s.auth_secret.name],
        "verbs": ["get"],
    }
    assert objs["RoleBinding"]["metadata"]["namespace"] == objs["Role"]["metadata"]["namespace"]
