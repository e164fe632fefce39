#!/usr/bin/env bash
# Needs about half an hour of one GPU: more than a task's device time now (15 minutes, the
# machine's start included). benchmarks/gpu_label_efficiency.sh is the run sized for that.
#
# The GPU runs of benchmarks/RESULTS.md in one command: synthesis, ssl_probe and the three seeds
# of label_efficiency at once on one GPU (their data loading is CPU-bound at 28 px, so they share
# a GPU well with about 16 cores), then label_efficiency once more over all seeds to merge them
# (every stage is reused from the cache). Its third and fourth recipes, the linear probe on the
# frozen BYOL backbone and LP-FT inside FixMatch, ask whether the frozen features' AUC 0.965 of
# ssl_probe_gpu.json holds under this protocol. ssl_probe also runs the slow-backbone finetuning
# and LP-FT; synthesis compares DDIM-50 with DDPM-1000 on 1024 images (64 cannot resolve 10%),
# and gan_sweep starts once synthesis has trained its feature network.
#
#   bash benchmarks/gpu_suite.sh [OUT_DIR] [DATA_DIR]     # default: benchmarks/results/gpu, ../shared/data
#
# Writes OUT_DIR/{synthesis,gan_sweep,ssl_probe,label_efficiency}.json, the plots, the runs and logs/.
# A rerun reuses every finished run. TRAINER (default gpu) and EXTRA (arguments for every script)
# make a smoke test: TRAINER=cpu EXTRA="--limit-batches 1" bash benchmarks/gpu_suite.sh /tmp/suite
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-benchmarks/results/gpu}")
DATA=$(realpath -m "${2:-../shared/data}")
PY=${PYTHON:-.venv/bin/python}
TRAINER=${TRAINER:-gpu}
read -r -a EXTRA <<< "${EXTRA:-}"
mkdir -p "$OUT/logs"

label_efficiency() {
  "$PY" benchmarks/label_efficiency.py --trainer "$TRAINER" --workers 2 --width 1.0 --pretrain-epochs 40 --supervised-epochs 60 \
    --semi-epochs 15 --selection val --recipes supervised byol+fixmatch byol+probe byol+lp-ft+fixmatch --data-dir "$DATA" --runs "$OUT/label_efficiency_runs" "${EXTRA[@]}" "$@"
}

"$PY" benchmarks/synthesis.py --trainer "$TRAINER" --workers 3 --diffusion-epochs 120 --gan-epochs 120 --feature-epochs 10 \
  --tstr-epochs 30 --compare-per-class 512 "${EXTRA[@]}" --data-dir "$DATA" --runs "$OUT/synthesis_runs" --out "$OUT/synthesis.json" > "$OUT/logs/synthesis.log" 2>&1 &
"$PY" benchmarks/ssl_probe.py --trainer "$TRAINER" --workers 4 --methods simclr=60 byol=60 --width 1.0 --finetune-epochs 40 \
  --backbone-lr-scale 0.1 --head-only-epochs 20 "${EXTRA[@]}" --data-dir "$DATA" --runs "$OUT/ssl_probe_runs" --out "$OUT/ssl_probe.json" > "$OUT/logs/ssl_probe.log" 2>&1 &
features="$OUT/synthesis_runs/feature_network"
(for _ in $(seq 360); do [ -f "$features/metrics.json" ] && break; sleep 10; done  # an hour at most
 "$PY" benchmarks/gan_sweep.py --trainer "$TRAINER" "${EXTRA[@]}" --features "$features" --data-dir "$DATA" \
   --runs "$OUT/gan_sweep_runs" --out "$OUT/gan_sweep.json") > "$OUT/logs/gan_sweep.log" 2>&1 &
for seed in 0 1 2; do
  label_efficiency --seeds "$seed" --out "$OUT/label_efficiency_seed$seed.json" > "$OUT/logs/label_efficiency_$seed.log" 2>&1 &
done
failed=0
for job in $(jobs -p); do wait "$job" || failed=1; done
label_efficiency --seeds 0 1 2 --out "$OUT/label_efficiency.json" > "$OUT/logs/label_efficiency.log" 2>&1 || failed=1
tail -n 12 "$OUT"/logs/*.log
exit $failed
