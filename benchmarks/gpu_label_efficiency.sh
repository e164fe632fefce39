#!/usr/bin/env bash
# Issue #6's label-efficiency protocol on one lent GPU within one device command (under 10
# minutes; a task gets 15 minutes of device time in all, the machine's start included). BYOL is
# pretrained far longer than before (150 epochs at full width), which the on-device views make
# affordable: with per-image views the DataLoader's workers held the GPU near 300 images a
# second. Then, at 1% and 10% of the labels and 3 seeds: supervised-only, the linear probe on
# the frozen backbone, FixMatch from it (benchmarks/label_efficiency.py, same protocol), whose
# weak and strong views are drawn on the GPU too (--on-device-views), and the backbone
# finetuned on the labeled images alone (run last, so a phase cut short loses it first).
#
#   here, first:   bash benchmarks/gpu_prepare.sh      (.whl/ and .gpu_data/, both ignored)
#   device tool:   run(command="bash benchmarks/gpu_label_efficiency.sh", carry=[".whl", ".gpu_data"], timeout_s=600)
#   CPU smoke:     TRAINER=cpu EPOCHS=1000 SEEDS=0 DATA=../shared/data OUT=/tmp/gle PRETRAIN_BUDGET=200 PRETRAIN_MARGIN=140 \
#                  FINETUNE_BUDGET=900 EXTRA="--limit-batches 1 --supervised-epochs 2 --semi-epochs 1 --workers 1 --width 0.25" \
#                  bash benchmarks/gpu_label_efficiency.sh     (8 records in about 4 minutes; the pretraining cut after 60 s)
#
# Phase 1: one process per seed pretrains BYOL (and probes it at 1%). Phase 2: one process per
# seed and fraction runs the four recipes, the pretraining reused from the stage cache. Each
# phase has a time budget, so the files come back even if a run is slower than planned. The
# pretraining itself stops PRETRAIN_MARGIN seconds before its budget (trainer.max_time; startup,
# export and the probe fit in the margin) and exports the epochs it reached, which the records
# give: on a slower GPU the backbone is pretrained less, not lost. A seed whose pretraining still
# did not finish runs only the supervised recipe in phase 2. Writes to $OUT (the device tool's
# folder; else benchmarks/results/gpu): label_efficiency.json, its two plots, machine.txt
# (versions, phase times) and logs.tgz (every log, each process's records, the report).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${OUT:-benchmarks/results/gpu}")
RUNS=${RUNS:-/tmp/label_efficiency_runs}
DATA=$(realpath -m "${DATA:-.gpu_data}")
TRAINER=${TRAINER:-gpu}
EPOCHS=${EPOCHS:-150}
PRETRAIN_BUDGET=${PRETRAIN_BUDGET:-270}
FINETUNE_BUDGET=${FINETUNE_BUDGET:-240}
PRETRAIN_MARGIN=${PRETRAIN_MARGIN:-75}
max_time=$(( PRETRAIN_BUDGET - PRETRAIN_MARGIN ))
(( max_time > 0 )) || { echo "PRETRAIN_BUDGET ($PRETRAIN_BUDGET s) must exceed PRETRAIN_MARGIN ($PRETRAIN_MARGIN s)" >&2; exit 2; }
MAX_TIME=$(printf '00:00:%02d:%02d' $((max_time / 60)) $((max_time % 60)))
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"
read -r -a EXTRA <<< "${EXTRA:-}"
mkdir -p "$OUT" "$RUNS/logs"
start=$(date +%s)
source benchmarks/gpu_env.sh
{ nvidia-smi 2>&1 | head -15; "$PY" -c "import torch, monai, lightly, pytorch_lightning as pl; print('torch', torch.__version__, 'monai', monai.__version__, 'lightly', lightly.__version__, 'lightning', pl.__version__)"; nproc; echo "PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset}"; } > "$OUT/machine.txt" 2>&1
elapsed() { echo "$1 after $(( $(date +%s) - start )) s" | tee -a "$OUT/machine.txt"; }

ARGS=(benchmarks/label_efficiency.py --trainer "$TRAINER" --workers 2 --width 1.0 --pretrain-epochs "$EPOCHS" --pretrain-batch 256
      --pretrain-every 10 --pretrain-monitor-fraction 0.01 --on-device-views --pretrain-max-time "$MAX_TIME"
      --supervised-epochs 60 --semi-epochs 15 --selection val --data-dir "$DATA" --runs "$RUNS" "${EXTRA[@]}")  # val: sized for one lease; cv trains 5x
declare -A pretrain
for seed in "${SEEDS[@]}"; do
  timeout "$PRETRAIN_BUDGET" "$PY" "${ARGS[@]}" --seeds "$seed" --fractions 0.01 --recipes byol+probe --out "$RUNS/pretrain$seed.json" \
    > "$RUNS/logs/pretrain$seed.log" 2>&1 &
  pretrain[$seed]=$!
done
failed=0
pretrained=()
for seed in "${SEEDS[@]}"; do
  if wait "${pretrain[$seed]}"; then pretrained+=("$seed"); else failed=1; fi
done
elapsed "phase 1 (pretraining; finished seeds: ${pretrained[*]:-none})"
for seed in "${SEEDS[@]}"; do
  recipes=(supervised)
  [[ " ${pretrained[*]} " == *" $seed "* ]] && recipes+=(byol+probe byol+fixmatch byol+finetune)
  for fraction in 0.01 0.1; do
    timeout "$FINETUNE_BUDGET" "$PY" "${ARGS[@]}" --seeds "$seed" --fractions "$fraction" --recipes "${recipes[@]}" \
      --out "$RUNS/seed$seed-$fraction.json" > "$RUNS/logs/seed$seed-$fraction.log" 2>&1 &
  done
done
for job in $(jobs -p); do wait "$job" || failed=1; done
elapsed "phase 2 (finetuning)"
# Gathers every finished record (phase 1's probes too), the report and the plots; runs nothing.
records=$(ls "$RUNS"/pretrain*.json "$RUNS"/seed*.json 2>/dev/null)
# shellcheck disable=SC2086
[ -n "$records" ] && timeout 120 "$PY" "${ARGS[@]}" --merge $records --out "$OUT/label_efficiency.json" > "$RUNS/logs/merge.log" 2>&1 || failed=1
elapsed "all done (failed: $failed)"
(cd "$RUNS" && tar czf "$OUT/logs.tgz" logs $(ls ./*.json ./*.md 2>/dev/null))
tail -n 8 "$RUNS"/logs/*.log
exit $failed
