#!/usr/bin/env bash
# One GPU session for devs+ (issue #7), run from the repository root; prepared on the CPU, for the next
# session that is lent a GPU. What is left of issue #7 needs more DM iterations than the CPU can give:
#   A. on a validation split (5,000 held-out CIFAR-10 training images, never test), at 1 / 10 / 50 images
#      per class: the defaults against multi-formation (factor 2, alone and with 1,000 DM iterations),
#      longer DM (1,000 iterations), and the medoid start without teacher labels (the best 1-per-class row
#      of the CPU sweep), dc protocol, 3 nets;
#   B. per images-per-class value, the setting with the best validation accuracy on the test splits of
#      CIFAR-10 (JPEG copy) and Fashion-MNIST (the same choice: Fashion-MNIST gets no search of its own),
#      dc protocol, 3 nets, random beside.
# Everything lands in $OUT as it finishes (JSON lines + logs), so a cut run keeps what it did. In step A
# the rows of one size share a work dir, so the 1,000-iteration row continues the defaults' saved DM run
# (same result as a fresh one; its distill time then counts only the extension).
# DRY=1 runs the same steps on digits with tiny settings (a CPU check of the script itself: 3 min).
set -u
OUT=${OUT:-runs/gpu-plus}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
PY=${PY:-python3}
BUDGET=${BUDGET:-540}          # seconds for the whole script
PHASE_A=${PHASE_A:-300}        # seconds for the validation search
if [ "${DRY:-0}" = 1 ]; then
  EXTRA=(--eval-epochs 5); CIFAR=digits; FASHION=digits; FASHION_ROOT=""; HOLDOUT=300; IPCS="1 2"
  SHORT=(--epochs 1 --param width=8 --param finetune_iterations=2); LONG=3
else
  EXTRA=(); CIFAR=.data/cifar10-jpeg.tar.gz; FASHION=fashion-mnist; FASHION_ROOT=.data/fashion-mnist
  HOLDOUT=5000; IPCS="1 10 50"; SHORT=(); LONG=1000
fi
declare -A CONFIGS=(
  [defaults]=""
  [dm$LONG]="--param finetune_iterations=$LONG"
  [f2]="--param formation=2"
  [f2-dm$LONG]="--param formation=2 --param finetune_iterations=$LONG"
  [medoid-nolabels-dm$LONG]="--param finetune_iterations=$LONG --param label_mix=0 --param anchor=1"
)
log() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$OUT/session.log"; }
table() {  # table RESULTS CONFIG [devs_table options...]; stops (with its children) at $DEADLINE
  local results=$1 config=$2 left=$((DEADLINE - SECONDS)); shift 2
  [ $left -gt 5 ] || { log "no time left for $config"; return; }
  # shellcheck disable=SC2086
  timeout $left $PY benchmarks/devs_table.py --results "$results" --config "$config" "$@" "${EXTRA[@]}" \
    --distill-args --method devs+ "${SHORT[@]}" ${CONFIGS[$config]} >>"$OUT/table.log" 2>&1 || log "FAILED: $config $*"
}

log "start on $(hostname): $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo no GPU)"
$PY - <<PYEOF 2>&1 | tee -a "$OUT/session.log"
from devs.data import load_dataset
for name, root in (("$CIFAR", None), ("$FASHION", "$FASHION_ROOT" or None)):
    d = load_dataset(name, root=root); print("cached", d.name, len(d.train), len(d.test))
PYEOF

# --- A. validation search: one chain per images-per-class value, each in its own file and work dir
DEADLINE=$((SECONDS + PHASE_A))
for ipc in $IPCS; do
  (
    for config in defaults f2 "f2-dm$LONG" "dm$LONG" "medoid-nolabels-dm$LONG"; do
      table "$OUT/holdout-ipc$ipc.jsonl" "$config" --dataset "$CIFAR" --holdout $HOLDOUT --ipc "$ipc" --protocols dc \
        --runs 3 --jobs 3 --work-dir "runs/gpu-plus/holdout"
      log "A: ipc $ipc $config done"
    done
  ) &
done
wait

# --- B. each size's chosen setting on both test splits, in parallel
DEADLINE=$((BUDGET - 15))
for ipc in $IPCS; do
  best=$($PY benchmarks/select_config.py "$OUT/holdout-ipc$ipc.jsonl" --protocol dc 2>>"$OUT/session.log" | tail -n 1)
  [ -n "$best" ] && [ -n "${CONFIGS[$best]+x}" ] || best=defaults
  log "B: ipc $ipc: chosen $best (${CONFIGS[$best]:-defaults})"
  table "$OUT/cifar10.jsonl" "$best" --dataset "$CIFAR" --ipc "$ipc" --protocols dc --runs 3 --jobs 3 \
    --work-dir "runs/gpu-plus/test-cifar" &
  table "$OUT/fashion-mnist.jsonl" "$best" --dataset "$FASHION" ${FASHION_ROOT:+--data-root $FASHION_ROOT} --ipc "$ipc" \
    --protocols dc --runs 3 --jobs 3 --work-dir "runs/gpu-plus/test-fashion" &
done
wait
log "end"
