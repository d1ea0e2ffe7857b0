#!/usr/bin/env bash
# Table 1 (issue #3) in one GPU session: every method at 1 / 10 / 50 images per class on CIFAR-10 (JPEG
# copy) and Fashion-MNIST, DC protocol, 3 nets per cell, dc and dm on a wall-clock budget, the whole
# training set as the ceiling. Both datasets run side by side; results land in $OUT as they finish.
# DRY=1 runs the same steps on digits with tiny settings (a CPU check of the script itself).
set -u
OUT=${OUT:-runs/gpu-table1}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PY=${PY:-python3}; BUDGET=${BUDGET:-380}; DCDM_BUDGET=${DCDM_BUDGET:-45}; JOBS=${JOBS:-3}
CEILING_EPOCHS=${CEILING_EPOCHS:-15}; EXTRA=()
if [ "${DRY:-0}" = 1 ]; then
  CIFAR=digits; FASHION=digits; FASHION_ROOT=""; IPCS="1 5"; EXTRA=(--eval-epochs 10 --method-param forgetting:epochs=3)
else
  CIFAR=.data/cifar10-jpeg.tar.gz; FASHION=fashion-mnist; FASHION_ROOT=.data/fashion-mnist; IPCS="1 10 50"
fi
log() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$OUT/session.log"; }
table1() {  # table1 NAME [table1.py options...]: stops, with its children, before the budget ends
  local name=$1; shift
  timeout $((BUDGET - SECONDS - 10)) $PY benchmarks/table1.py --ipc $IPCS --protocol dc --runs 3 --jobs $JOBS \
    --budget $DCDM_BUDGET --ceiling-runs 2 --ceiling-epochs $CEILING_EPOCHS --results "$OUT/table1-$name.jsonl" \
    --work-dir "runs/table1-$name" "${EXTRA[@]}" "$@" >"$OUT/table1-$name.log" 2>&1
  log "$name finished (exit $?)"
}
log "start: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo no GPU)"
$PY - <<PYEOF 2>&1 | tee -a "$OUT/session.log"
from devs.data import load_dataset
for name, root in (("$CIFAR", None), ("$FASHION", "$FASHION_ROOT" or None)):
    d = load_dataset(name, root=root); print("cached", d.name, len(d.train), len(d.test))
PYEOF
table1 cifar10 --dataset "$CIFAR" & a=$!
table1 fashion-mnist --dataset "$FASHION" ${FASHION_ROOT:+--data-root $FASHION_ROOT} & b=$!
wait $a $b
log "end"
