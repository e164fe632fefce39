#!/usr/bin/env bash
# Sets everything up and runs the main job on the built-in phantom data: the whole pipeline
# (SSL pretraining, synthesis, FixMatch finetuning from the pretrained backbone with synthetic
# images mixed in, test, and the supervised-only baseline), ending with the report's path.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/workbench pipeline experiment=pipeline_quickstart "$@"
