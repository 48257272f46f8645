"""The ``kubernetes`` discoverer: MLflow tracking servers that run as Services in Kubernetes.

Like Prometheus' and ExternalDNS' Kubernetes sources it reads Services (and the Ingresses that
route to them) through the API, in one or more clusters (in-cluster service account, or a
kubeconfig context each), in all namespaces or a chosen list. A Service is a candidate when one
of ``selectors`` matches its labels (the defaults match the community-charts and Bitnami MLflow
charts, see the README) or when it carries the opt-in annotation ``mlsvc-discover.io/mlflow:
"true"``; ``"false"`` opts any Service out. Every candidate is probed with the shared
:class:`~mlsvc_discover.mlflow_probe.MlflowProber` before it becomes a finding, so only real
MLflow servers are published; see :mod:`mlsvc_discover.k8s.endpoints` for which URI is published
and where it is probed.

Scopes: ``(kubernetes, <name>, <cluster>)``, then ``<namespace>`` (reported when namespaces are
listed one by one), then ``<service>`` per candidate. A cluster or namespace whose Services (or
Ingresses, which decide the published URI) cannot be listed fails its scope, so nothing found
there before is deleted; a Service that is gone from a listing that worked is a miss like any
other. A candidate that is not MLflow (or cannot be probed) fails only its own scope.

The Kubernetes client (lightkube) is imported on first use, in :mod:`mlsvc_discover.k8s.api`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from mlsvc_discover._duration import Duration
from mlsvc_discover._http import HttpProbeError
from mlsvc_discover.discoverers.base import (
    Discoverer,
    DiscovererConfig,
    DiscoveryResult,
    Finding,
    ItemFailure,
    Scope,
    ScopeOutcome,
    ServiceType,
    StrictModel,
)
from mlsvc_discover.k8s.endpoints import (
    ANNOTATION_MLFLOW,
    ANNOTATION_NAME,
    Endpoint,
    EndpointError,
    choose_endpoint,
    ingress_routes,
)
from mlsvc_discover.k8s.selectors import LabelSelector, parse_selector
from mlsvc_discover.mlflow_probe import MlflowAuth, MlflowProber, ProbeResult, ProbeSettings, ProbeTarget
from mlsvc_discover.mlflow_probe.auth import SECRET_SAFE, basic_authorization
from mlsvc_discover.openmetadata.models import validate_service_name

if TYPE_CHECKING:
    from mlsvc_discover.k8s.api import KubeApi, KubernetesApiError

__all__ = ["KubernetesCluster", "KubernetesDiscoverer", "KubernetesDiscovererConfig", "SecretAuth"]

log = logging.getLogger(__name__)

DEFAULT_SELECTORS = ("app.kubernetes.io/name=mlflow",)
DEFAULT_NAME_TEMPLATE = "mlflow-{cluster}-{namespace}-{service}"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
_KEY_NAME = r"^[-._a-zA-Z0-9]{1,253}$"  # a key of a Secret's data


# --- config ----------------------------------------------------------------------------------


class SecretAuth(StrictModel):
    """MLflow credentials kept in a Kubernetes Secret, read through the API (base64 `data`)."""

    name: str = Field(pattern=_DNS_SUBDOMAIN, description="Name of the Secret.")
    namespace: str | None = Field(
        default=None,
        pattern=_DNS_LABEL,
        description="Namespace of the Secret; unset: the namespace of each Service (one Secret per namespace).",
    )
    token_key: str = Field(
        default="token", pattern=_KEY_NAME, description="Key holding a bearer token (used when present)."
    )
    username_key: str = Field(
        default="username", pattern=_KEY_NAME, description="Key holding the basic-auth user name."
    )
    password_key: str = Field(default="password", pattern=_KEY_NAME, description="Key holding the basic-auth password.")


class KubernetesCluster(StrictModel):
    """One cluster: reached with the pod's service account, or a kubeconfig file and context."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="Name of the cluster in scopes, reports and the `{cluster}` label.",
    )
    in_cluster: bool = Field(
        default=False, description="Use the pod's service account (token and CA under /var/run/secrets)."
    )
    kubeconfig: Path | None = Field(default=None, description="kubeconfig file to use instead of `in_cluster`.")
    context: str | None = Field(
        default=None, min_length=1, description="Context of `kubeconfig`; unset: its current-context."
    )
    namespaces: list[str] | Literal["all"] | None = Field(
        default=None,
        description="Namespaces to look in (`all`, or a list); unset: the discoverer's `namespaces`.",
    )
    probe_via: Literal["service", "published"] = Field(
        default="service",
        description="Where to probe: `service` (the Service's cluster IP and port; an agent in the cluster) "
        "or `published` (the URI that will be published; an agent outside the cluster).",
    )
    cluster_domain: str = Field(
        default="cluster.local", pattern=_DNS_SUBDOMAIN, description="DNS domain of the cluster's Services."
    )

    @field_validator("namespaces")
    @classmethod
    def _valid_namespaces(cls, value: list[str] | str | None) -> list[str] | str | None:
        return _check_namespaces(value)

    @model_validator(mode="after")
    def _one_source(self) -> KubernetesCluster:
        if self.in_cluster == (self.kubeconfig is not None):
            raise ValueError("set either in_cluster: true or kubeconfig (with an optional context), not both")
        if self.context is not None and self.kubeconfig is None:
            raise ValueError("context needs kubeconfig")
        return self


def _check_namespaces(value: list[str] | str | None) -> list[str] | str | None:
    if isinstance(value, list):
        if not value:
            raise ValueError("an empty namespace list looks nowhere; list namespaces or write `all`")
        for ns in value:
            if not re.match(_DNS_LABEL, ns):
                raise ValueError(f"{ns!r} is not a valid namespace name (lower-case letters, digits, '-')")
        if len(set(value)) != len(value):
            raise ValueError("a namespace is listed twice")
    return value


class KubernetesDiscovererConfig(DiscovererConfig):
    """Config of the ``kubernetes`` discoverer."""

    model_config = SECRET_SAFE

    type: Literal["kubernetes"] = Field(description="Always `kubernetes`.")
    clusters: list[KubernetesCluster] = Field(min_length=1, description="Clusters to look in (at least one).")
    namespaces: list[str] | Literal["all"] = Field(
        default="all",
        description="Namespaces to look in: `all` (one cluster-wide list; needs a ClusterRole) or a list "
        "(one list per namespace; namespaced Roles suffice).",
    )
    selectors: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SELECTORS),
        description="Label selectors (kubectl syntax); a Service matching any of them is a candidate. "
        "The default matches the community-charts and Bitnami MLflow charts.",
    )
    opt_in_annotation: bool = Field(
        default=True,
        description='Also take Services annotated `mlsvc-discover.io/mlflow: "true"` (lists every Service '
        "and filters locally; false sends the selectors to the API server instead).",
    )
    ingresses: bool = Field(
        default=True, description="Read Ingresses (networking.k8s.io/v1) to publish their host for a Service."
    )
    auth: MlflowAuth | None = Field(default=None, description="Credentials sent to every candidate's probe.")
    auth_secret: SecretAuth | None = Field(
        default=None,
        description="Credentials read from a Kubernetes Secret (instead of `auth`); a Service whose "
        "namespace has no such Secret is probed without credentials.",
    )
    api_timeout: Duration = Field(
        default=15.0, gt=0, le=600, description="Total deadline of one Kubernetes API call (all pages of a list)."
    )
    page_size: int = Field(default=500, ge=1, le=10_000, description="Objects per page of a list (`limit`).")
    timeout: Duration = Field(default=5.0, gt=0, le=600, description="Total deadline of one candidate's probe.")
    max_concurrency: int = Field(default=64, ge=1, le=4096, description="Candidates probed at the same time.")
    verify_tls: bool = Field(default=True, description="Verify the MLflow servers' TLS certificates.")
    ca_bundle: Path | None = Field(default=None, description="CA bundle (PEM) to verify the MLflow servers with.")
    check_registry: bool = Field(default=True, description="Also ask each server whether it serves the registry.")
    read_version: bool = Field(default=False, description="Also read each server's /version (`mlflow_version`).")
    max_response_bytes: int = Field(
        default=1_048_576, ge=1024, le=1 << 30, description="Largest response body read from a server."
    )

    @field_validator("namespaces")
    @classmethod
    def _valid_namespaces(cls, value: list[str] | str) -> list[str] | str:
        checked = _check_namespaces(value)
        assert checked is not None
        return checked

    @field_validator("selectors")
    @classmethod
    def _valid_selectors(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_selector(text)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KubernetesDiscovererConfig:
        if not self.selectors and not self.opt_in_annotation:
            raise ValueError("nothing selects a Service: set selectors or opt_in_annotation: true")
        if self.auth is not None and self.auth_secret is not None:
            raise ValueError("set either auth or auth_secret, not both")
        if self.ca_bundle is not None and not self.verify_tls:
            raise ValueError("ca_bundle is set but verify_tls is false; drop one of them")
        names = [c.name for c in self.clusters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"cluster names must be unique; {', '.join(dupes)} appears more than once")
        return self


# --- discovery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    cluster: KubernetesCluster
    namespace: str
    service: str
    endpoint: Endpoint
    name: str | None
    labels: dict[str, str]

    @property
    def item(self) -> str:
        return f"{self.cluster.name}/{self.namespace}/{self.service}"


@dataclass
class _ClusterOutcome:
    scopes: list[ScopeOutcome] = field(default_factory=list)
    failures: list[ItemFailure] = field(default_factory=list)
    ignored: list[ItemFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    candidates: list[tuple[_Candidate, Scope]] = field(default_factory=list)


class KubernetesDiscoverer(Discoverer[KubernetesDiscovererConfig]):
    """Finds MLflow Services in Kubernetes clusters and probes each before reporting it.

    Finding attributes: ``tracking_uri`` / ``registry_uri`` (the published URI),
    ``registry_available``, ``mlflow_version``, ``cluster``, ``namespace``, ``service``,
    ``uri_source`` (``annotation``, ``ingress``, ``external-dns`` or ``cluster-dns``),
    ``probed_uri``. Labels for templates: ``cluster``, ``namespace``, ``service``, ``host``,
    ``port``, ``scheme``, ``path``, ``uri_source``, ``discoverer``, ``mlflow_version``.
    """

    config_model: ClassVar[type[DiscovererConfig]] = KubernetesDiscovererConfig

    def __init__(self, config: KubernetesDiscovererConfig) -> None:
        super().__init__(config)
        self._selectors: tuple[LabelSelector, ...] = tuple(parse_selector(s) for s in config.selectors)
        self._prober = MlflowProber(ProbeSettings.of(config))
        self._apis: dict[str, KubeApi] = {}
        self._run_secrets: tuple[str, ...] = ()

    def secrets(self) -> Sequence[str]:
        static = self.config.auth.secret_values() if self.config.auth is not None else []
        return tuple(dict.fromkeys([*static, *self._run_secrets]))

    async def aclose(self) -> None:
        apis, self._apis = self._apis, {}
        for api in apis.values():
            await api.aclose()

    async def discover(self) -> DiscoveryResult:
        result = DiscoveryResult(source=self.name)
        try:
            self._prober.ssl_context()
        except HttpProbeError as exc:
            # No candidate could be probed: fail the root scope rather than report empty clusters.
            result.scopes.append(ScopeOutcome(self.root_scope, ok=False, error=exc.reason))
            result.failures.append(ItemFailure(self.name, self.name, exc.reason, exc.kind))
            return result
        result.scopes.append(ScopeOutcome(self.root_scope, ok=True))
        try:
            await self._discover(result)
        finally:
            # Clients live for one cycle: a kubeconfig edited between cycles (a new token, a
            # moved server) is read again next time. In-cluster tokens rotate under lightkube.
            await self.aclose()
        return result

    async def _discover(self, result: DiscoveryResult) -> None:
        outcomes = await asyncio.gather(*(self._cluster(c) for c in self.config.clusters))
        candidates: list[tuple[_Candidate, Scope]] = []
        for outcome in outcomes:
            result.scopes += outcome.scopes
            result.failures += outcome.failures
            result.ignored += outcome.ignored
            result.notes += outcome.notes
            candidates += outcome.candidates
        secrets: list[str] = []
        targets = await self._targets(candidates, result, secrets)
        self._run_secrets = tuple(dict.fromkeys(secrets))
        gate = asyncio.Semaphore(self.config.max_concurrency)
        probed = await asyncio.gather(*(self._probe(gate, t) for _, _, t in targets))
        for (cand, scope, _), res in zip(targets, probed, strict=True):
            if isinstance(res, HttpProbeError):
                reason = f"{cand.endpoint.probe}: {res.reason}"
                result.scopes.append(ScopeOutcome(scope, ok=False, error=reason))
                result.failures.append(ItemFailure(self.name, cand.item, reason, res.kind))
                continue
            result.scopes.append(ScopeOutcome(scope, ok=True))
            result.findings.append(self._finding(cand, scope, res))
            if cand.endpoint.source == "cluster-dns":
                result.notes.append(
                    f"{cand.item}: no Ingress or ExternalDNS hostname routes to it; published the in-cluster "
                    f"name {cand.endpoint.published}, which resolves only inside the cluster "
                    "(set the mlsvc-discover.io/uri annotation to publish another)"
                )

    # -- clusters and namespaces

    async def _api(self, cluster: KubernetesCluster) -> KubeApi:
        api = self._apis.get(cluster.name)
        if api is None:
            from mlsvc_discover.k8s.api import KubeApi, load_config

            config = await asyncio.to_thread(
                load_config, in_cluster=cluster.in_cluster, kubeconfig=cluster.kubeconfig, context=cluster.context
            )
            api = KubeApi(config, timeout=self.config.api_timeout, page_size=self.config.page_size)
            self._apis[cluster.name] = api
        return api

    async def _cluster(self, cluster: KubernetesCluster) -> _ClusterOutcome:
        from mlsvc_discover.k8s.api import KubernetesApiError

        out = _ClusterOutcome()
        scope = (*self.root_scope, cluster.name)
        try:
            api = await self._api(cluster)
        except KubernetesApiError as exc:
            self._fail(out, scope, cluster.name, exc)
            return out
        namespaces = cluster.namespaces if cluster.namespaces is not None else self.config.namespaces
        if namespaces == "all":
            try:
                services, ingresses = await self._read(api, None)
            except KubernetesApiError as exc:
                self._fail(out, scope, cluster.name, exc)
                return out
            out.scopes.append(ScopeOutcome(scope, ok=True))
            self._select(cluster, services, ingresses, out)
            return out
        out.scopes.append(ScopeOutcome(scope, ok=True))
        reads = await asyncio.gather(*(self._read(api, ns) for ns in namespaces), return_exceptions=True)
        for ns, read in zip(namespaces, reads, strict=True):
            ns_scope = (*scope, ns)
            if isinstance(read, KubernetesApiError):
                self._fail(out, ns_scope, f"{cluster.name}/{ns}", read)
            elif isinstance(read, BaseException):
                raise read
            else:
                out.scopes.append(ScopeOutcome(ns_scope, ok=True))
                self._select(cluster, read[0], read[1], out)
        return out

    def _fail(self, out: _ClusterOutcome, scope: Scope, item: str, exc: KubernetesApiError) -> None:
        log.debug("kubernetes %s: %s", item, exc.reason)
        out.scopes.append(ScopeOutcome(scope, ok=False, error=exc.reason))
        out.failures.append(ItemFailure(self.name, item, exc.reason, exc.kind))

    async def _read(self, api: KubeApi, namespace: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Services (candidates only, when the API server can select them) and Ingresses."""
        cfg = self.config
        if cfg.opt_in_annotation:
            service_reads = [api.list("services", namespace)]
        else:
            service_reads = [api.list("services", namespace, _server_labels(s)) for s in self._selectors]
        ingress_reads = [api.list("ingresses", namespace)] if cfg.ingresses else []
        results = await asyncio.gather(*service_reads, *ingress_reads, return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException):
                raise res
        lists: list[list[dict[str, Any]]] = results  # type: ignore[assignment]
        services: dict[tuple[str, str], dict[str, Any]] = {}
        for listing in lists[: len(service_reads)]:
            for svc in listing:
                meta = svc.get("metadata") or {}
                services[(str(meta.get("namespace", "")), str(meta.get("name", "")))] = svc
        ingresses = lists[len(service_reads)] if cfg.ingresses else []
        return list(services.values()), ingresses

    def _select(
        self,
        cluster: KubernetesCluster,
        services: list[dict[str, Any]],
        ingresses: list[dict[str, Any]],
        out: _ClusterOutcome,
    ) -> None:
        routes = ingress_routes(ingresses)
        for svc in sorted(services, key=lambda s: (s["metadata"].get("namespace", ""), s["metadata"].get("name", ""))):
            meta = svc.get("metadata") or {}
            ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
            labels: dict[str, str] = meta.get("labels") or {}
            annotations: dict[str, str] = meta.get("annotations") or {}
            opt = annotations.get(ANNOTATION_MLFLOW, "").strip().lower()
            item = f"{cluster.name}/{ns}/{name}"
            selected = any(s.matches(labels) for s in self._selectors) or (
                self.config.opt_in_annotation and opt == "true"
            )
            if not selected:
                continue
            if opt == "false":
                reason = f"opted out by annotation {ANNOTATION_MLFLOW}=false"
                out.ignored.append(ItemFailure(self.name, item, reason, "opted_out"))
                out.notes.append(f"{item}: ignored, {reason}")
                continue
            # One shape whether namespaces are listed together or one by one: a Service that is
            # gone is judged by the nearest reported scope above it (namespace, else cluster).
            scope = (*self.root_scope, cluster.name, ns, name)
            try:
                endpoint = choose_endpoint(
                    svc, routes, probe_via=cluster.probe_via, cluster_domain=cluster.cluster_domain
                )
                name_override = annotations.get(ANNOTATION_NAME, "").strip() or None
                if name_override is not None:
                    try:
                        validate_service_name(name_override)
                    except ValueError as exc:
                        raise EndpointError(f"annotation {ANNOTATION_NAME}: {exc}") from None
                ProbeTarget.from_uri(endpoint.probe)
                ProbeTarget.from_uri(endpoint.published)
            except ValueError as exc:
                reason = str(exc)
                out.scopes.append(ScopeOutcome(scope, ok=False, error=reason))
                out.failures.append(ItemFailure(self.name, item, reason, "invalid"))
                continue
            out.candidates.append((_Candidate(cluster, ns, name, endpoint, name_override, dict(labels)), scope))

    # -- credentials and probes

    async def _targets(
        self, candidates: list[tuple[_Candidate, Scope]], result: DiscoveryResult, secrets: list[str]
    ) -> list[tuple[_Candidate, Scope, ProbeTarget]]:
        from mlsvc_discover.k8s.api import KubernetesApiError

        cfg = self.config
        ref = cfg.auth_secret
        wanted: dict[tuple[str, str, str], asyncio.Task[str | KubernetesApiError | None]] = {}
        if ref is not None:
            for cand, _ in candidates:
                key = (cand.cluster.name, ref.namespace or cand.namespace, ref.name)
                if key not in wanted:
                    wanted[key] = asyncio.create_task(self._authorization(cand.cluster, key[1], ref, secrets))
        out: list[tuple[_Candidate, Scope, ProbeTarget]] = []
        for cand, scope in candidates:
            if ref is None:
                out.append((cand, scope, ProbeTarget.from_uri(cand.endpoint.probe, cfg.auth)))
                continue
            got = await wanted[(cand.cluster.name, ref.namespace or cand.namespace, ref.name)]
            if isinstance(got, KubernetesApiError):
                reason = f"credentials: {got.reason}"
                result.scopes.append(ScopeOutcome(scope, ok=False, error=reason))
                result.failures.append(ItemFailure(self.name, cand.item, reason, got.kind))
                continue
            parsed = ProbeTarget.from_uri(cand.endpoint.probe).uri
            out.append((cand, scope, ProbeTarget(parsed, got)))
        return out

    async def _authorization(
        self, cluster: KubernetesCluster, namespace: str, ref: SecretAuth, secrets: list[str]
    ) -> str | KubernetesApiError | None:
        from mlsvc_discover.k8s.api import KubernetesApiError

        try:
            data = await (await self._api(cluster)).secret(namespace, ref.name)
        except KubernetesApiError as exc:
            # No such Secret in this namespace: its servers are probed without credentials. A
            # Secret that exists but cannot be read (403) fails the candidate instead.
            return None if exc.kind == "not_found" else exc
        # Only the values sent are redacted: a user name or an unrelated short value in the
        # same Secret would blank out every occurrence of it in the logs.
        token = data.get(ref.token_key)
        if token:
            secrets.append(token.strip())
            return f"Bearer {token.strip()}"
        user, password = data.get(ref.username_key), data.get(ref.password_key)
        if user and password:
            secrets.append(password)
            return basic_authorization(user, password)
        return KubernetesApiError(
            f"secret {namespace}/{ref.name} has neither a {ref.token_key!r} key nor both "
            f"{ref.username_key!r} and {ref.password_key!r}",
            kind="invalid_secret",
        )

    async def _probe(self, gate: asyncio.Semaphore, target: ProbeTarget) -> ProbeResult | HttpProbeError:
        async with gate:
            try:
                return await self._prober.probe(target)
            except HttpProbeError as exc:
                return exc

    def _finding(self, cand: _Candidate, scope: Scope, res: ProbeResult) -> Finding:
        cfg = self.config
        published = ProbeTarget.from_uri(cand.endpoint.published).uri
        labels = {
            **{f"k8s_{k}": v for k, v in cand.labels.items() if re.fullmatch(r"[A-Za-z0-9_]+", k)},
            "cluster": cand.cluster.name,
            "namespace": cand.namespace,
            "service": cand.service,
            "host": published.host,
            "port": str(published.port),
            "scheme": published.scheme,
            "path": published.path.strip("/"),
            "uri_source": cand.endpoint.source,
            "discoverer": self.name,
            "mlflow_version": res.mlflow_version or "unknown",
        }
        return Finding(
            kind=ServiceType.MLFLOW,
            source=self.name,
            scope=scope,
            key=cand.item,
            attributes={
                "tracking_uri": published.clean,
                "registry_uri": published.clean,
                "registry_available": res.registry_available,
                "mlflow_version": res.mlflow_version,
                "cluster": cand.cluster.name,
                "namespace": cand.namespace,
                "service": cand.service,
                "uri_source": cand.endpoint.source,
                "probed_uri": res.tracking_uri,
            },
            labels=labels,
            metadata=cfg.defaults,
            name=cand.name,
            name_template=cfg.name_template or DEFAULT_NAME_TEMPLATE,
        )


def _server_labels(selector: LabelSelector) -> dict[str, Any] | None:
    """The selector in lightkube's form, or None when it cannot say it (then filtered locally)."""
    from lightkube import operators

    out: dict[str, Any] = {}
    for req in selector.requirements:
        if req.key in out:
            return None
        values = sorted(req.values)
        if req.op == "=":
            out[req.key] = values[0]
        elif req.op == "!=":
            out[req.key] = operators.not_equal(values[0])
        elif req.op == "in":
            out[req.key] = operators.in_(values)
        elif req.op == "notin":
            out[req.key] = operators.not_in(values)
        elif req.op == "exists":
            out[req.key] = operators.exists()
        else:
            out[req.key] = operators.not_exists()
    return out
