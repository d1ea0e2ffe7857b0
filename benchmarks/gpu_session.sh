#!/usr/bin/env bash
# One GPU session of the DEvS benchmark (issue #2), run from the repository root:
#   A. choose the DEvS setting on a validation split (5,000 held-out CIFAR-10 training images);
#   B. evaluate the chosen setting on the test splits of CIFAR-10 (JPEG copy) and Fashion-MNIST
#      at 1 / 10 / 50 images per class under both protocols, 3 nets each, random baseline beside;
#   C. time one CIFAR-10 IPC10 distillation with the default settings alone on the GPU.
# Everything lands in $OUT as it finishes (JSON lines + logs), so a cut run keeps what it did.
# DRY=1 runs the same steps on digits with tiny settings (a CPU check of the script itself).
set -u
OUT=${OUT:-runs/gpu-session}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
PY=${PY:-python3}
BUDGET=${BUDGET:-560}          # seconds for the whole script
PHASE_A=${PHASE_A:-230}        # seconds for the setting search
JOBS=${JOBS:-3}; EXTRA=()
if [ "${DRY:-0}" = 1 ]; then
  EXTRA=(--eval-epochs 10); CIFAR=digits; FASHION=digits; FASHION_ROOT=""; HOLDOUT=300; E1=3; E2=5; E3=10; SCHED=12; IPCS="1 5"
else
  CIFAR=.data/cifar10-jpeg.tar.gz; FASHION=fashion-mnist; FASHION_ROOT=.data/fashion-mnist
  HOLDOUT=5000; E1=30; E2=100; E3=100; SCHED=100; IPCS="1 10 50"
fi
declare -A CONFIGS=(
  [default]=""
  [e$E1]="--epochs $E1"
  [e$E1-global]="--epochs $E1 --clustering global"
  [e$E1-sched]="--epochs $E1,$E3 --schedule $SCHED"
  [e$E1-global-sched]="--epochs $E1,$E3 --schedule $SCHED --clustering global"
  [e$E2]="--epochs $E2"
  [e$E2-global]="--epochs $E2 --clustering global"
)
log() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$OUT/session.log"; }
table() {  # table RESULTS CONFIG [devs_table options...]; stops (with its children) at $DEADLINE
  local results=$1 config=$2 left=$((DEADLINE - SECONDS)); shift 2
  [ $left -gt 5 ] || { log "no time left for $config"; return; }
  # shellcheck disable=SC2086
  timeout $left $PY benchmarks/devs_table.py --results "$results" --config "$config" "$@" "${EXTRA[@]}" --distill-args ${CONFIGS[$config]} \
    >>"$OUT/table.log" 2>&1 || log "FAILED: $config $*"
}

source benchmarks/gpu_common.sh
gpu_prelude "$OUT/session.log" "$CIFAR" "$FASHION" "$FASHION_ROOT"

# --- A. setting search on the validation split (two chains in parallel; each chain reuses its extractors)
search() { for config in "$@"; do
  table "$OUT/holdout.jsonl" "$config" --dataset "$CIFAR" --holdout $HOLDOUT --ipc $IPCS --protocols dc \
    --runs 3 --jobs $JOBS --work-dir runs/gpu/holdout; log "A: $config done"; done; }
DEADLINE=$((SECONDS + PHASE_A))
( search default e$E2 e$E2-global ) & chain1=$!
( search e$E1 e$E1-global e$E1-sched e$E1-global-sched ) & chain2=$!
wait $chain1 $chain2
BEST=$($PY benchmarks/select_config.py "$OUT/holdout.jsonl" --protocol dc 2>>"$OUT/session.log" | tail -n 1)
[ -n "$BEST" ] && [ -n "${CONFIGS[$BEST]+x}" ] || BEST=default
log "A: chosen setting $BEST (${CONFIGS[$BEST]:-defaults})"

# --- B. the chosen setting on the test splits, both datasets in parallel
DEADLINE=$((BUDGET - 15))
(
  table "$OUT/cifar10.jsonl" "$BEST" --dataset "$CIFAR" --ipc $IPCS --protocols dc devs --runs 3 --jobs $JOBS --work-dir runs/gpu/test-cifar
  log "B: cifar10 done"
) & b1=$!
(
  table "$OUT/fashion-mnist.jsonl" "$BEST" --dataset "$FASHION" ${FASHION_ROOT:+--data-root $FASHION_ROOT} --ipc $IPCS \
    --protocols dc devs --runs 3 --jobs $JOBS --work-dir runs/gpu/test-fashion
  log "B: fashion-mnist done"
) & b2=$!
wait $b1 $b2

# --- C. the default CIFAR-10 IPC10 distillation alone, timed (if time is left)
if [ $((BUDGET - SECONDS)) -gt 90 ]; then
  timeout $((BUDGET - SECONDS - 20)) $PY -m devs distill --dataset "$CIFAR" --ipc 10 --out runs/gpu/alone/cifar-default-ipc10.safetensors \
    --no-evaluate -q >>"$OUT/session.log" 2>&1 && cp runs/gpu/alone/cifar-default-ipc10.json "$OUT/alone-default-ipc10.json"
  log "C: done"
fi
tar czf "$OUT/artifacts.tar.gz" runs/gpu/test-*/*.safetensors runs/gpu/test-*/*.png runs/gpu/test-*/*.json 2>/dev/null
log "end"
