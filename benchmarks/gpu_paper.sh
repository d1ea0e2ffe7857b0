#!/usr/bin/env bash
# One GPU call for issue "DEvS as the paper describes it", run from the repository root:
#   A. the search of benchmarks/paper_search.py on the validation split (5,000 held-out CIFAR-10 training
#      images, never test), every config at 1 / 10 / 50 per class under the devs and dc protocols, 3 nets,
#      random beside; configs in the script's order until the phase's deadline;
#   B. the config with the best mean validation accuracy under the devs protocol (select, automatic; only
#      configs complete at all three sizes can win) on the test splits of CIFAR-10 (JPEG copy) and
#      Fashion-MNIST, 1 / 10 / 50 per class, both protocols, 3 nets, random beside.
# k-means runs on the GPU (--param kmeans=torch) in every config, so that large k costs seconds.
# Carry: .data/cifar10-jpeg.tar.gz and .data/fashion-mnist (cp /usr/share/datasets/fashion-mnist/* there).
# Results and logs reach $OUT every 10 s, so a cut call keeps its finished cells; rerunning on a warm
# machine resumes (recorded cells are skipped, finished distillations and stages reused).
# DRY=1 runs the same steps on digits with tiny settings (a CPU check of the script itself).
set -u
OUT=${OUT:-runs/gpu-paper-out}; WORK=${WORK:-runs/gpu-paper}; mkdir -p "$OUT" "$WORK"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PY=${PY:-python3}
BUDGET=${BUDGET:-560}           # seconds for the whole script
PHASE_A=${PHASE_A:-330}         # seconds for the search
CHAINS=${CHAINS:-4}; JOBS=${JOBS:-8}
COMMON=(--param kmeans=torch); EXTRA=()
if [ "${DRY:-0}" = 1 ]; then
  CIFAR=digits; FASHION=digits; FASHION_ROOT=""; HOLDOUT=300; IPCS="1 5"; EXTRA=(--eval-epochs 5 --runs 2)
  COMMON+=(--param steps_per_stage=10 --param width=8); CONFIGS=(--configs one-step shrink4 shrink4-global two-stage)
else
  CIFAR=.data/cifar10-jpeg.tar.gz; FASHION=fashion-mnist; FASHION_ROOT=.data/fashion-mnist; HOLDOUT=5000; IPCS="1 10 50"
  CONFIGS=()
fi
log() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$WORK/session.log"; }
sync_out() { cp "$WORK"/*.jsonl "$WORK"/*.log "$OUT"/ 2>/dev/null; }
( while sleep 10; do sync_out; done ) & syncer=$!
search() { $PY benchmarks/paper_search.py --protocols devs dc --work-dir "$WORK/work" "${EXTRA[@]}" "$@" \
             --common-args "${COMMON[@]}"; }

source benchmarks/gpu_common.sh
gpu_prelude "$WORK/session.log" "$CIFAR" "$FASHION" "$FASHION_ROOT"

# --- A. the search on the validation split
search --dataset "$CIFAR" --holdout $HOLDOUT --ipc $IPCS --results "$WORK/search.jsonl" "${CONFIGS[@]}" \
  --chains $CHAINS --jobs $JOBS --deadline $((PHASE_A - SECONDS)) >>"$WORK/search.log" 2>&1
log "A: done"
$PY benchmarks/paper_search.py --results "$WORK/search.jsonl" --markdown 2>&1 | tee -a "$WORK/session.log"
BEST=$($PY benchmarks/paper_search.py --results "$WORK/search.jsonl" --select devs 2>>"$WORK/session.log" | tail -n 1)
[ -n "$BEST" ] || BEST=one-step
log "A: chosen $BEST"

# --- B. the chosen config on the test splits, both datasets side by side
LEFT=$((BUDGET - SECONDS - 10))
search --dataset "$CIFAR" --ipc $IPCS --results "$WORK/test-cifar10.jsonl" --configs "$BEST" --chains 1 \
  --jobs $((JOBS / 2)) --deadline $LEFT >>"$WORK/test.log" 2>&1 & b1=$!
search --dataset "$FASHION" ${FASHION_ROOT:+--data-root $FASHION_ROOT} --ipc $IPCS --results "$WORK/test-fashion.jsonl" \
  --configs "$BEST" --chains 1 --jobs $((JOBS / 2)) --deadline $LEFT >>"$WORK/test.log" 2>&1 & b2=$!
wait $b1 $b2
log "B: done"
for f in "$WORK"/test-*.jsonl; do $PY benchmarks/paper_search.py --results "$f" --markdown 2>&1 | tee -a "$WORK/session.log"; done
kill $syncer 2>/dev/null; sync_out
# the test-split files and their run records (the search's files stay on the machine)
find "$WORK/work" -maxdepth 1 \( -name '*.safetensors' -o -name '*.json' \) ! -name '*holdout*' -print0 \
  | tar czf "$OUT/distilled-test.tar.gz" --null -T - 2>/dev/null
log "end"
