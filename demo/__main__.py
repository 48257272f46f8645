"""Run mlsvc-discover against a local MLflow server and moto-emulated AWS, then stop them.

``python -m demo`` (what ``scripts/demo.sh`` runs): starts one real ``mlflow server`` with a
registered model, and moto with two AWS accounts (reached by assuming roles) where SageMaker
models exist in some regions, writes a config for them, and runs
``mlsvc-discover discover --once --dry-run``: the plan is printed and nothing is written.
With ``OPENMETADATA_HOST`` and ``OPENMETADATA_JWT_TOKEN`` set, it runs without ``--dry-run``
and really registers the services in that OpenMetadata.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import yaml

from bench.servers import MotoProcess, aws_env, start_mlflow_servers

ACCOUNTS = ("111111111111", "222222222222")
REGIONS = ("us-east-1", "eu-west-1")


def _seed_mlflow(url: str) -> None:
    body = json.dumps({"name": "demo-churn-model"}).encode()
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/registered-models/create",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        resp.read()


def _seed_aws(endpoint: str) -> None:
    import boto3

    sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1")
    for account, region, models in ((ACCOUNTS[0], "us-east-1", ["churn"]), (ACCOUNTS[1], "eu-west-1", ["ranker"])):
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/demo", RoleSessionName="seed")["Credentials"]
        sm = boto3.client(
            "sagemaker",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        for name in models:
            sm.create_model(
                ModelName=name,
                ExecutionRoleArn=f"arn:aws:iam::{account}:role/sagemaker",
                PrimaryContainer={"Image": f"{account}.dkr.ecr.{region}.amazonaws.com/{name}:1"},
            )


def main() -> int:
    real = bool(os.environ.get("OPENMETADATA_HOST") and os.environ.get("OPENMETADATA_JWT_TOKEN"))
    with tempfile.TemporaryDirectory(prefix="mlsvc-demo-") as tmp:
        work = Path(tmp)
        env = aws_env(work)
        print("starting a local MLflow tracking server and moto (about 10-30 s)...", flush=True)
        moto = MotoProcess(env=env).start(work / "moto.log")
        servers = []
        try:
            servers = start_mlflow_servers(1, work)
            _seed_mlflow(servers[0].url)
            os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
            _seed_aws(moto.url)
            config = {
                "owner_id": "demo",
                "discoverers": [
                    {"type": "mlflow", "name": "local-mlflow", "timeout": "5s", "tracking_uris": [servers[0].url]},
                    {
                        "type": "sagemaker",
                        "name": "demo-aws",
                        "endpoint_url": moto.url,
                        "regions": list(REGIONS),
                        "accounts": [{"role_arn": f"arn:aws:iam::{a}:role/mlsvc-discover"} for a in ACCOUNTS],
                    },
                    {
                        "type": "static",
                        "name": "declared",
                        "services": [{"name": "demo-sklearn", "service_type": "Sklearn"}],
                    },
                ],
            }
            path = work / "config.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            print(f"config:\n{path.read_text()}", flush=True)
            args = [str(Path(sys.executable).parent / "mlsvc-discover"), "discover", "--once", "--config", str(path)]
            if not real:
                args.append("--dry-run")
                print("OPENMETADATA_HOST/OPENMETADATA_JWT_TOKEN not set: dry run, nothing is written\n", flush=True)
            print("$ " + " ".join(["mlsvc-discover", *args[1:]]), flush=True)
            return subprocess.run(args, env={**os.environ, **env}, check=False, timeout=300).returncode
        finally:
            for server in servers:
                server.stop()
            moto.stop()
            print("stopped the local MLflow server and moto", flush=True)


if __name__ == "__main__":
    sys.exit(main())
