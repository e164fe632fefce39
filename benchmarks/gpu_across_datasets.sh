#!/usr/bin/env bash
# Issue #27's benchmark on one lent GPU within one device command (under 10 minutes): the
# recommended recipe (BYOL + gentle finetuning, recipe=ssl) against supervised-only under the
# pipeline's own protocol (5-fold cross-validation inside the label budget, budgets in steps,
# full-width networks) on the four development datasets at once, one process per dataset and
# seed: PneumoniaMNIST at 1% and 10%, RetinaMNIST, VesselMNIST3D (28^3) and MSD Hippocampus at 10%.
# Each process stops at BUDGET seconds; the records it finished come back (each is saved as it ends).
#
#   here, first:   bash benchmarks/gpu_prepare.sh      (.whl/ and .gpu_data/, both ignored)
#   device tool:   run(command="bash benchmarks/gpu_across_datasets.sh", carry=[".whl", ".gpu_data"], timeout_s=600)
#   CPU smoke:     TRAINER=cpu SEEDS=0 DATA=../shared/data OUT=/tmp/gad BUDGET=300 \
#                  EXTRA="--limit-batches 1 --finetune-steps 2 --pretrain-steps 2 --folds 2 --width 0.25" bash benchmarks/gpu_across_datasets.sh
#
# Writes to $OUT (the device tool's folder; else benchmarks/results/gpu): label_efficiency_<dataset>.json
# per dataset, machine.txt and logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${OUT:-benchmarks/results/gpu}")
RUNS=${RUNS:-/tmp/across_datasets_runs}
DATA=$(realpath -m "${DATA:-.gpu_data}")
TRAINER=${TRAINER:-gpu}
BUDGET=${BUDGET:-540}
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"
read -r -a EXTRA <<< "${EXTRA:-}"
mkdir -p "$OUT" "$RUNS/logs"
start=$(date +%s)
source benchmarks/gpu_env.sh
{ nvidia-smi 2>&1 | head -15; "$PY" -c "import torch, monai, lightly, pytorch_lightning as pl; print('torch', torch.__version__, 'monai', monai.__version__, 'lightly', lightly.__version__, 'lightning', pl.__version__)"; nproc; } > "$OUT/machine.txt" 2>&1

ARGS=(benchmarks/label_efficiency.py --trainer "$TRAINER" --workers 1 --width 1.0 --selection cv --data-dir "$DATA" "${EXTRA[@]}")
declare -A SETTINGS=(
  [pneumoniamnist]="--dataset pneumoniamnist --fractions 0.01 0.1"
  [retinamnist]="--npz $DATA/retinamnist/retinamnist.npz --fractions 0.1"
  [vesselmnist3d]="--npz $DATA/vesselmnist3d/vesselmnist3d.npz --fractions 0.1"
  [msd_hippocampus]="--datalist $DATA/msd_hippocampus/dataset.json --fractions 0.1 --patch-size 32 --spacing 1.0"   # BYOL of the UNet's encoder, at 1 mm
)
for name in "${!SETTINGS[@]}"; do
  read -r -a setting <<< "${SETTINGS[$name]}"
  for seed in "${SEEDS[@]}"; do
    timeout "$BUDGET" "$PY" "${ARGS[@]}" "${setting[@]}" --seeds "$seed" --runs "$RUNS/$name" --out "$RUNS/$name-$seed.json" \
      > "$RUNS/logs/$name-$seed.log" 2>&1 &
  done
done
failed=0
for job in $(jobs -p); do wait "$job" || failed=1; done
echo "all done after $(( $(date +%s) - start )) s (failed: $failed)" | tee -a "$OUT/machine.txt"
# One file per dataset with every finished record; runs nothing.
for name in "${!SETTINGS[@]}"; do
  read -r -a setting <<< "${SETTINGS[$name]}"
  records=$(ls "$RUNS/$name"-*.json 2>/dev/null)
  # shellcheck disable=SC2086
  [ -n "$records" ] && timeout 60 "$PY" "${ARGS[@]}" "${setting[@]}" --runs "$RUNS/$name" --merge $records \
    --out "$OUT/label_efficiency_$name.json" >> "$RUNS/logs/merge.log" 2>&1
done
(cd "$RUNS" && tar czf "$OUT/logs.tgz" logs $(ls ./*.json 2>/dev/null))
tail -n 4 "$RUNS"/logs/*.log
exit $failed
