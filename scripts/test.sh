#!/usr/bin/env bash
# Install everything (pinned by constraints.txt) into .venv and run every check and test.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,dev]"
echo "== ruff"
.venv/bin/ruff check src tests testing bench demo
.venv/bin/ruff format --check src tests testing bench demo
echo "== import layers (import-linter, [tool.importlinter] in pyproject.toml)"
.venv/bin/lint-imports
echo "== mypy (strict on src, tests, testing, bench, demo: [tool.mypy] files in pyproject.toml)"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -n 2 "$@"
