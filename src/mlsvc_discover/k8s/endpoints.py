"""Which URI a Kubernetes Service publishes, and where the agent probes it. Pure functions.

OpenMetadata's ingestion usually runs outside the cluster, so the published URI prefers a name
reachable from there, in this order:

1. the ``mlsvc-discover.io/uri`` annotation on the Service (the owner knows best);
2. the host of an Ingress rule whose backend is this Service and port (``https`` when the
   Ingress lists the host under ``tls``; the rule's path is kept when it is a plain prefix);
3. an ExternalDNS hostname annotation on the Service (``external-dns.kubernetes.io/hostname``,
   then the older ``external-dns.alpha.kubernetes.io/hostname``; the first name of the list);
4. the in-cluster DNS name ``<service>.<namespace>.svc.<cluster domain>``, which only resolves
   inside the cluster: the finding says so (``uri_source`` = ``cluster-dns``).

The port is the Service port named by the ``mlsvc-discover.io/port`` annotation, else the one
named ``http``, else ``https``, else the one numbered 5000 (the community chart's default).

Where to probe is a separate choice (``probe_via``): ``service`` probes the Service's cluster IP
and port (what an agent running in the cluster reaches without DNS; MLflow's default
``--allowed-hosts`` admits private addresses, not in-cluster names), ``published`` probes the
published URI itself (an agent outside the cluster).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ANNOTATION_MLFLOW",
    "ANNOTATION_NAME",
    "ANNOTATION_PORT",
    "ANNOTATION_URI",
    "DEFAULT_PORT",
    "EXTERNAL_DNS_ANNOTATIONS",
    "Endpoint",
    "EndpointError",
    "IngressRoute",
    "choose_endpoint",
    "ingress_routes",
    "pick_port",
]

ANNOTATION_MLFLOW = "mlsvc-discover.io/mlflow"
ANNOTATION_URI = "mlsvc-discover.io/uri"
ANNOTATION_NAME = "mlsvc-discover.io/name"
ANNOTATION_PORT = "mlsvc-discover.io/port"
EXTERNAL_DNS_ANNOTATIONS = ("external-dns.kubernetes.io/hostname", "external-dns.alpha.kubernetes.io/hostname")
DEFAULT_PORT = 5000

UriSource = Literal["annotation", "ingress", "external-dns", "cluster-dns"]
_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_PLAIN_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)+/?$")


class EndpointError(ValueError):
    """The Service cannot be turned into a URI; the message says why and what to set."""


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int


@dataclass(frozen=True)
class IngressRoute:
    """One Ingress rule routing ``host`` (+ ``path``) to a Service port."""

    ingress: str
    host: str
    https: bool
    path: str
    port_name: str | None
    port_number: int | None

    def serves(self, port: ServicePort) -> bool:
        if self.port_number is not None:
            return self.port_number == port.port
        return self.port_name is None or self.port_name == port.name


@dataclass(frozen=True)
class Endpoint:
    """Where a Service is published and probed."""

    published: str
    source: UriSource
    probe: str
    port: int
    ingress: str | None = None


def _ports(spec: Mapping[str, Any]) -> list[ServicePort]:
    out = []
    for p in spec.get("ports") or []:
        if isinstance(p, Mapping) and isinstance(p.get("port"), int):
            out.append(ServicePort(str(p.get("name") or ""), int(p["port"])))
    return out


def pick_port(spec: Mapping[str, Any], annotations: Mapping[str, str]) -> ServicePort:
    """The Service port to use; EndpointError when none fits."""
    ports = _ports(spec)
    wanted = annotations.get(ANNOTATION_PORT, "").strip()
    if wanted:
        for p in ports:
            if p.name == wanted or str(p.port) == wanted:
                return p
        raise EndpointError(f"annotation {ANNOTATION_PORT}={wanted!r} names no port of the Service")
    for p in (
        *(p for p in ports if p.name == "http"),
        *(p for p in ports if p.name == "https"),
        *(p for p in ports if p.port == DEFAULT_PORT),
    ):
        return p
    shown = ", ".join(f"{p.name or '<unnamed>'}:{p.port}" for p in ports) or "none"
    raise EndpointError(
        f"no port named http or https and no port {DEFAULT_PORT} (ports: {shown}); "
        f"set the annotation {ANNOTATION_PORT} to the port's name or number"
    )


def ingress_routes(ingresses: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[IngressRoute]]:
    """Routes by ``(namespace, service)``, in ingress-name order so the choice is stable.

    Rules without a host or with a wildcard host are left out: neither names one server.
    """
    routes: dict[tuple[str, str], list[IngressRoute]] = {}
    for ing in sorted(ingresses, key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"].get("name", ""))):
        meta, spec = ing.get("metadata") or {}, ing.get("spec") or {}
        tls_hosts = {h.lower() for t in spec.get("tls") or [] for h in (t.get("hosts") or [])}
        for rule in spec.get("rules") or []:
            host = str(rule.get("host") or "").lower()
            if not host or "*" in host:
                continue
            for path in (rule.get("http") or {}).get("paths") or []:
                backend = (path.get("backend") or {}).get("service") or {}
                name = backend.get("name")
                if not name:
                    continue
                port = backend.get("port") or {}
                prefix = str(path.get("path") or "/")
                route = IngressRoute(
                    ingress=str(meta.get("name", "")),
                    host=host,
                    https=_tls_covers(tls_hosts, host),
                    path=prefix.rstrip("/") if _PLAIN_PATH.match(prefix) else "",
                    port_name=port.get("name"),
                    port_number=port.get("number"),
                )
                routes.setdefault((str(meta.get("namespace", "")), str(name)), []).append(route)
    return routes


def _tls_covers(tls_hosts: set[str], host: str) -> bool:
    """Whether the Ingress terminates TLS for ``host`` (a ``*.`` entry covers one label)."""
    parent = host.split(".", 1)[1] if "." in host else ""
    return host in tls_hosts or (bool(parent) and f"*.{parent}" in tls_hosts)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _external_dns_host(annotations: Mapping[str, str]) -> str | None:
    for key in EXTERNAL_DNS_ANNOTATIONS:
        for name in annotations.get(key, "").split(","):
            host = name.strip().rstrip(".").lower()
            if host and "*" not in host and _HOST_RE.match(host):
                return host
    return None


def _cluster_ip(spec: Mapping[str, Any]) -> str | None:
    ip = str(spec.get("clusterIP") or "")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return None  # headless ("None") or not allocated
    return ip


def choose_endpoint(
    service: Mapping[str, Any],
    routes: Mapping[tuple[str, str], list[IngressRoute]],
    *,
    probe_via: Literal["service", "published"],
    cluster_domain: str,
) -> Endpoint:
    """The published and probe URIs of one Service; EndpointError when it has none."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    port = pick_port(spec, annotations)
    in_cluster_host = f"{name}.{namespace}.svc.{cluster_domain}"
    service_scheme = "https" if port.name == "https" or port.port == 443 else "http"
    ingress_name = None
    override = annotations.get(ANNOTATION_URI, "").strip()
    path = ""
    source: UriSource
    if override:
        published, source = override, "annotation"
        path = _path_of(override)
    else:
        route = next((r for r in routes.get((namespace, name), []) if r.serves(port)), None)
        external = _external_dns_host(annotations)
        if route is not None:
            scheme = "https" if route.https else "http"
            published = f"{scheme}://{route.host}{route.path}"
            source, path, ingress_name = "ingress", route.path, route.ingress
        elif external is not None:
            published, source = f"{service_scheme}://{_netloc(external, port.port)}", "external-dns"
        else:
            published, source = f"{service_scheme}://{_netloc(in_cluster_host, port.port)}", "cluster-dns"
    if probe_via == "published":
        probe = published
    else:
        host = _cluster_ip(spec) or in_cluster_host
        probe = f"{service_scheme}://{_netloc(host, port.port)}{path}"
    return Endpoint(published=published, source=source, probe=probe, port=port.port, ingress=ingress_name)


def _path_of(uri: str) -> str:
    rest = uri.split("://", 1)[-1]
    slash = rest.find("/")
    return rest[slash:].rstrip("/") if slash != -1 else ""
