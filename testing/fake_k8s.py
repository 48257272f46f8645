"""A fake Kubernetes API server on loopback: the real paths, list shapes, pagination and errors.

No real or fake API server installs here (shared/notes/test-components.md), so this one answers
what the ``kubernetes`` discoverer reads, the way kube-apiserver does:

- ``GET /version``;
- ``GET /api/v1/services`` and ``/api/v1/namespaces/{ns}/services``;
- ``GET /apis/networking.k8s.io/v1/ingresses`` and ``.../namespaces/{ns}/ingresses``;
- ``GET /api/v1/namespaces/{ns}/secrets/{name}`` (``data`` base64-encoded).

Lists have ``kind: ServiceList`` / ``IngressList``, ``apiVersion``, ``metadata.resourceVersion``
and, with ``limit``, a ``continue`` token (and ``remainingItemCount``) for the next page; items
carry no ``kind``/``apiVersion``, as in a real list. ``labelSelector`` is evaluated here with its
own small parser (equality, ``!=``, ``in``, ``notin``, exists, ``!key``). A request without the
cluster's bearer token gets a 401 Status, a namespace the token may not read a 403 Status
worded like kube-apiserver's RBAC refusal. Faults are injected per path prefix (a status, or a
stall for deadline tests). TLS is optional.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeCluster", "fail", "ingress", "matches", "service", "stall"]

SERVICE_ACCOUNT = "system:serviceaccount:mlsvc-discover:mlsvc-discover"


def service(
    name: str,
    namespace: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    cluster_ip: str = "127.0.0.1",
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Service object as the API returns it (ClusterIP type, uid, resourceVersion...)."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{namespace}-{name}",
        "resourceVersion": "1",
        "creationTimestamp": "2026-11-01T00:00:00Z",
        "labels": dict(labels or {}),
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ports": ports or [{"name": "http", "port": 5000, "protocol": "TCP", "targetPort": 5000}],
            "selector": {"app.kubernetes.io/name": name},
        },
        "status": {"loadBalancer": {}},
    }


def ingress(
    name: str,
    namespace: str,
    *,
    host: str,
    service_name: str,
    port: int | str = "http",
    tls: bool = False,
    path: str = "/",
) -> dict[str, Any]:
    """A networking.k8s.io/v1 Ingress routing ``host`` to one Service port."""
    port_ref: dict[str, Any] = {"number": port} if isinstance(port, int) else {"name": port}
    spec: dict[str, Any] = {
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": path,
                            "pathType": "Prefix",
                            "backend": {"service": {"name": service_name, "port": port_ref}},
                        }
                    ]
                },
            }
        ]
    }
    if tls:
        spec["tls"] = [{"hosts": [host], "secretName": f"{name}-tls"}]
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-ing-{namespace}-{name}",
            "resourceVersion": "1",
        },
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


# --- label selectors (the fake's own parser, independent of the discoverer's) -------------------

_REQ = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9._/-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<val>[A-Za-z0-9._-]*)|\s(?P<set>in|notin)\s*\((?P<vals>[^)]*)\))?\s*$"
)


def _split(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def matches(selector: str, labels: dict[str, str]) -> bool:
    for req in _split(selector):
        m = _REQ.match(req)
        if m is None:
            raise ValueError(req)
        key = m["key"]
        if m["neg"]:
            if key in labels:
                return False
        elif m["op"] in ("=", "=="):
            if labels.get(key) != m["val"]:
                return False
        elif m["op"] == "!=":
            if labels.get(key) == m["val"]:
                return False
        elif m["set"]:
            vals = {v.strip() for v in m["vals"].split(",")}
            if m["set"] == "in" and labels.get(key) not in vals:
                return False
            if m["set"] == "notin" and key in labels and labels[key] in vals:
                return False
        elif key not in labels:
            return False
    return True


# --- the server ---------------------------------------------------------------------------------


@dataclass
class FakeCluster:
    """One cluster's API server; mutate the lists between discoverer runs to change the world."""

    token: str
    services: list[dict[str, Any]] = field(default_factory=list)
    ingresses: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    forbidden_namespaces: set[str] = field(default_factory=set)
    forbid_cluster_wide: bool = False
    forbid_secrets: bool = False
    faults: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    url: str = ""
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    stopping: threading.Event = field(default_factory=threading.Event, repr=False)

    def start(self, host: str = "127.0.0.1") -> FakeCluster:
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                cluster.requests.append(self.path)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    cluster._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        server = Server((host, 0), Handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        scheme = "https" if self.tls is not None else "http"
        self.url = f"{scheme}://{host}:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-k8s", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def kubeconfig(self, *, context: str = "fake", ca_pem: bytes | None = None) -> dict[str, Any]:
        """A kubeconfig (as a dict) reaching this server with its bearer token."""
        cluster: dict[str, Any] = {"server": self.url}
        if ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": cluster}],
            "users": [{"name": context, "user": {"token": self.token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            "current-context": context,
        }

    # -- answers

    def _send(self, req: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        req.send_response(code)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _status(self, req: BaseHTTPRequestHandler, code: int, reason: str, message: str, kind: str = "") -> None:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if kind:
            body["details"] = {"kind": kind}
        self._send(req, code, body)

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        path = parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        for prefix, fault in self.faults.items():
            if path.startswith(prefix):
                fault(req)
                return
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            self._status(req, 401, "Unauthorized", "Unauthorized")
            return
        if path == "/version":
            self._send(req, 200, {"major": "1", "minor": "34", "gitVersion": "v1.34.2", "platform": "linux/amd64"})
            return
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets/([^/]+)", path)
        if m:
            ns, name = m.groups()
            if self.forbid_secrets or ns in self.forbidden_namespaces:
                self._status(
                    req,
                    403,
                    "Forbidden",
                    f'secrets "{name}" is forbidden: User "{SERVICE_ACCOUNT}" cannot get resource "secrets" '
                    f'in API group "" in the namespace "{ns}"',
                    "secrets",
                )
                return
            data = self.secrets.get((ns, name))
            if data is None:
                self._status(req, 404, "NotFound", f'secrets "{name}" not found', "secrets")
                return
            self._send(
                req,
                200,
                {
                    "kind": "Secret",
                    "apiVersion": "v1",
                    "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
                    "type": "Opaque",
                    "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
                },
            )
            return
        for resource, group, kind, objects in (
            ("services", "/api/v1", "ServiceList", self.services),
            ("ingresses", "/apis/networking.k8s.io/v1", "IngressList", self.ingresses),
        ):
            if path == f"{group}/{resource}":
                self._list(req, resource, group, kind, objects, None, query)
                return
            m = re.fullmatch(rf"{re.escape(group)}/namespaces/([^/]+)/{resource}", path)
            if m:
                self._list(req, resource, group, kind, objects, m[1], query)
                return
        self._status(req, 404, "NotFound", "the server could not find the requested resource")

    def _list(
        self,
        req: BaseHTTPRequestHandler,
        resource: str,
        group: str,
        kind: str,
        objects: list[dict[str, Any]],
        namespace: str | None,
        query: dict[str, str],
    ) -> None:
        api_group = "" if group == "/api/v1" else "networking.k8s.io"
        if namespace is None and (self.forbid_cluster_wide or self.forbidden_namespaces):
            self._status(
                req,
                403,
                "Forbidden",
                f'{resource} is forbidden: User "{SERVICE_ACCOUNT}" cannot list resource "{resource}" '
                f'in API group "{api_group}" at the cluster scope',
                resource,
            )
            return
        if namespace is not None and namespace in self.forbidden_namespaces:
            self._status(
                req,
                403,
                "Forbidden",
                f'{resource} is forbidden: User "{SERVICE_ACCOUNT}" cannot list resource "{resource}" '
                f'in API group "{api_group}" in the namespace "{namespace}"',
                resource,
            )
            return
        selected = [
            o
            for o in sorted(objects, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))
            if (namespace is None or o["metadata"]["namespace"] == namespace)
            and matches(query.get("labelSelector", ""), o["metadata"].get("labels") or {})
        ]
        start = 0
        if "continue" in query:
            try:
                start = int(base64.b64decode(query["continue"]).decode().split(":", 1)[1])
            except (ValueError, IndexError):
                self._status(req, 400, "BadRequest", "continue key is not valid")
                return
        limit = int(query.get("limit", "0") or 0)
        end = start + limit if limit > 0 else len(selected)
        page = selected[start:end]
        metadata: dict[str, Any] = {"resourceVersion": "4242"}
        if end < len(selected):
            metadata["continue"] = base64.b64encode(f"rv4242:{end}".encode()).decode()
            metadata["remainingItemCount"] = len(selected) - end
        self._send(
            req,
            200,
            {
                "kind": kind,
                "apiVersion": group.removeprefix("/api/").removeprefix("/apis/"),
                "metadata": metadata,
                "items": page,
            },
        )


def stall(cluster: FakeCluster) -> Callable[[BaseHTTPRequestHandler], None]:
    """A fault: hold the request without answering until the cluster stops."""

    def handle(req: BaseHTTPRequestHandler) -> None:
        cluster.stopping.wait(60)

    return handle


def fail(code: int, reason: str = "InternalError") -> Callable[[BaseHTTPRequestHandler], None]:
    """A fault: answer every matching request with ``code`` and a Status body."""

    def handle(req: BaseHTTPRequestHandler) -> None:
        body = json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": "boom",
                "reason": reason,
                "code": code,
            }
        ).encode()
        req.send_response(code)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    return handle
