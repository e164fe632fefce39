#!/usr/bin/env bash
# Creates .venv and installs the workbench with the pinned versions in requirements/lock.txt.
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
# Exact pins for a reproducible resolve; the workbench itself as an editable install.
.venv/bin/uv pip install --quiet --python .venv/bin/python -r requirements/lock.txt
.venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps -e .
