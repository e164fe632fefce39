#!/usr/bin/env bash
# Sets everything up and runs the main job on the built-in phantom data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/workbench train experiment=quickstart "$@"
