#!/usr/bin/env bash
# Install (pinned, with the test extras that bring a real MLflow server and moto) and run the demo:
# a local MLflow tracking server and moto-emulated AWS with sample models, `discover --once --dry-run`
# against them, the plan printed, everything stopped. With OPENMETADATA_HOST and
# OPENMETADATA_JWT_TOKEN set, the services are really registered in that OpenMetadata.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
exec .venv/bin/python -m demo
