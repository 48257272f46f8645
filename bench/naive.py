"""The naive baselines: the same work done one item after another, as a first script would.

Each baseline does exactly the work the agent does for one scenario and asks the same endpoints
with the same timeout, but never has two requests in flight. They are the yardstick the
agent's speed-ups are reported against, so they are deliberately plain, not deliberately slow:
one keep-alive HTTP client for the whole run, one boto3 session per account.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["ItemTiming", "naive_aws", "naive_mlflow", "naive_put"]

EXPERIMENTS_PATH = "api/2.0/mlflow/experiments/search?max_results=1"
MISSING_MODEL_PATH = "api/2.0/mlflow/registered-models/get?name="


@dataclass
class ItemTiming:
    """How long each item took, by stratum, so a sample can be scaled stratum by stratum."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    found: int = 0
    failed: int = 0
    requests: int = 0

    def add(self, stratum: str, seconds: float) -> None:
        self.seconds.setdefault(stratum, []).append(seconds)


def naive_mlflow(targets: Sequence[tuple[str, str]], timeout: float) -> ItemTiming:
    """Probe ``(stratum, uri)`` pairs one after another: experiments, then a missing registered model.

    The same GETs as the agent's probe with its defaults (``read_version`` off), with
    ``timeout`` per request as a plain httpx client applies it; a silent server therefore costs
    ``timeout`` once (the first GET).
    """
    out = ItemTiming()
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for stratum, uri in targets:
            started = time.perf_counter()
            try:
                out.requests += 1
                resp = client.get(f"{uri}/{EXPERIMENTS_PATH}")
                ok = resp.status_code == 200 and isinstance(resp.json(), dict)
                if ok:
                    out.requests += 1
                    client.get(f"{uri}/{MISSING_MODEL_PATH}mlsvc-discover-naive")
                    out.found += 1
                else:
                    out.failed += 1
            except (httpx.HTTPError, ValueError):
                out.failed += 1
            out.add(stratum, time.perf_counter() - started)
    return out


def naive_put(base_url: str, token: str, bodies: Sequence[dict[str, Any]]) -> ItemTiming:
    """One ``PUT /v1/services/mlmodelServices`` per service, each waiting for the previous one."""
    out = ItemTiming()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base_url, timeout=30.0, headers=headers) as client:
        for body in bodies:
            started = time.perf_counter()
            out.requests += 1
            resp = client.put("/v1/services/mlmodelServices", content=json.dumps(body))
            if resp.status_code in (200, 201):
                out.found += 1
            else:
                out.failed += 1
            out.add("put", time.perf_counter() - started)
    return out


def naive_aws(endpoint_url: str, accounts: Sequence[str], regions: Sequence[str]) -> ItemTiming:
    """For each account, assume its role; then for each region list models, package groups, endpoints.

    One call after another with boto3, as a hand-written inventory script would. The timing is
    kept per (account, region) pair, with the account's assume-role share spread over its regions.
    """
    import boto3

    out = ItemTiming()
    base = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=regions[0])
    sts = base.client("sts", endpoint_url=endpoint_url)
    for account in accounts:
        started = time.perf_counter()
        out.requests += 1
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/x", RoleSessionName="naive")["Credentials"]
        session = boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        assume_share = (time.perf_counter() - started) / len(regions)
        for region in regions:
            began = time.perf_counter()
            sm = session.client("sagemaker", region_name=region, endpoint_url=endpoint_url)
            counts = [
                len(sm.list_models(MaxResults=100).get("Models", [])),
                len(sm.list_model_package_groups(MaxResults=100).get("ModelPackageGroupSummaryList", [])),
                len(sm.list_endpoints(MaxResults=100).get("Endpoints", [])),
            ]
            out.requests += 3
            if any(counts):
                out.found += 1
            out.add("pair", time.perf_counter() - began + assume_share)
    return out
