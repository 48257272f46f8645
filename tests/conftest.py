"""Shared pytest set-up: fixture modules for the real components live in tests/support/."""

import os

# Keep real MLflow and boto3 from reaching for the network or user files.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

pytest_plugins = [
    "tests.support.om_fixtures",
    "tests.support.mlflow_fixtures",
    "tests.support.moto_fixtures",
    "tests.support.browser",
]
