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
# Bytecode ahead of time: where PYTHONDONTWRITEBYTECODE is set (as on our CI machine), Python
# would otherwise compile torch, Lightning and MONAI from source in every process, about 27 s
# each on 2 cores (every CLI call, every DDP rank). Up to date, this is a 10-second check.
# torch ships one file for Python 3.12 (never imported on 3.11) that cannot compile here. Any
# other failure only slows imports down, so it is reported, not fatal.
.venv/bin/python -m compileall -q -j 0 -x 'torch/testing/_internal/py312_intrinsics\.py' .venv/lib/python*/site-packages \
  || echo "warning: some installed files did not compile to bytecode (listed above); imports will be slower" >&2
