"""Shared pytest set-up: fixture modules for the real components live in testing/."""

import os

# Keep real MLflow and boto3 from reaching for the network or user files.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

pytest_plugins = [
    "testing.om_fixtures",
    "testing.mlflow_fixtures",
    "testing.moto_fixtures",
    "testing.browser",
    "testing.k8s_world",
]
