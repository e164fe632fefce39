#!/usr/bin/env bash
# Issue #6's label-efficiency protocol on one lent GPU within one device command (under 10
# minutes; a task gets 15 minutes of device time in all, the machine's start included). BYOL is
# pretrained far longer than before (200 epochs at full width), which the on-device views make
# affordable: with per-image views the DataLoader's workers held the GPU near 300 images a
# second. Then, at 1% and 10% of the labels, 3 seeds at once: supervised-only, the linear probe
# on the frozen backbone and FixMatch from it (benchmarks/label_efficiency.py, same protocol).
#
#   here, first:   bash benchmarks/gpu_prepare.sh      (.whl/ and .gpu_data/, both ignored)
#   device tool:   run(command="bash benchmarks/gpu_label_efficiency.sh", carry=[".whl", ".gpu_data"], timeout_s=600)
#   CPU smoke:     TRAINER=cpu EPOCHS=1 SEEDS=0 DATA=../shared/data OUT=/tmp/gle \
#                  EXTRA="--limit-batches 1 --fractions 0.01 --supervised-epochs 2 --semi-epochs 1 --workers 1" \
#                  bash benchmarks/gpu_label_efficiency.sh
#
# Writes to $OUT (the device tool's folder; else benchmarks/results/gpu): label_efficiency.json,
# its two plots, machine.txt and logs.tgz (every log, the per-seed records and the report).
# Each seed gets SEED_BUDGET seconds and the merge MERGE_BUDGET, so the files come back even if
# a run is slower than planned.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${OUT:-benchmarks/results/gpu}")
RUNS=${RUNS:-/tmp/label_efficiency_runs}
DATA=$(realpath -m "${DATA:-.gpu_data}")
TRAINER=${TRAINER:-gpu}
EPOCHS=${EPOCHS:-200}
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"
SEED_BUDGET=${SEED_BUDGET:-450}
MERGE_BUDGET=${MERGE_BUDGET:-90}
read -r -a EXTRA <<< "${EXTRA:-}"
mkdir -p "$OUT" "$RUNS/logs"
start=$(date +%s)
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then  # the device image lacks them (gpu_prepare.sh)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
{ nvidia-smi 2>&1 | head -15; "$PY" -c "import torch, monai, lightly, pytorch_lightning as pl; print('torch', torch.__version__, 'monai', monai.__version__, 'lightly', lightly.__version__, 'lightning', pl.__version__)"; nproc; } > "$OUT/machine.txt" 2>&1

ARGS=(benchmarks/label_efficiency.py --trainer "$TRAINER" --workers 4 --width 1.0 --pretrain-epochs "$EPOCHS" --pretrain-batch 256 --pretrain-every 10
      --on-device-views --supervised-epochs 60 --semi-epochs 15 --recipes supervised byol+probe byol+fixmatch
      --data-dir "$DATA" --runs "$RUNS" "${EXTRA[@]}")
for seed in "${SEEDS[@]}"; do
  timeout "$SEED_BUDGET" "$PY" "${ARGS[@]}" --seeds "$seed" --out "$RUNS/seed$seed.json" > "$RUNS/logs/seed$seed.log" 2>&1 &
done
failed=0
for job in $(jobs -p); do wait "$job" || failed=1; done
echo "seeds done after $(( $(date +%s) - start )) s (failed: $failed)" | tee -a "$OUT/machine.txt"
# Every finished stage is in the cache now: this gathers the records, the report and the plots.
timeout "$MERGE_BUDGET" "$PY" "${ARGS[@]}" --seeds "${SEEDS[@]}" --out "$OUT/label_efficiency.json" > "$RUNS/logs/merge.log" 2>&1 || failed=1
echo "all done after $(( $(date +%s) - start )) s (failed: $failed)" | tee -a "$OUT/machine.txt"
(cd "$RUNS" && tar czf "$OUT/logs.tgz" logs $(ls seed*.json ./*.md 2>/dev/null))
tail -n 12 "$RUNS"/logs/*.log
exit $failed
