#!/usr/bin/env bash
# One GPU session for issue #6 (streaming a data set larger than memory) and issue #8 (image-size
# scaling), run from the repository root with the CIFAR-10 JPEG tarball at $SRC:
#   A. pack CIFAR-10 at 32, 64 and 128 px into stores (in parallel);
#   B. the CPU streaming benchmark's exact command (128 px, ConvNet-5 width 32, batch 64) on the GPU;
#   P. devs+ (issue #7) at 10 images per class on a validation split (5,000 held-out CIFAR-10 training
#      images, never test): each addition alone and together, dc protocol, 3 nets, random beside;
#   D. image-size scaling: DEvS at 32 / 64 / 128 px (depth 3 / 4 / 5: 2,048-d features at every size)
#      and DC (gradient matching, same nets) for 3 iterations at 32 / 64 / 128 px.
# Results land in $OUT as JSON lines + logs as each step finishes, so a cut run keeps what it did.
# DRY=1 runs the same steps on digits with tiny nets (a CPU check of the script itself).
set -u
OUT=${OUT:-runs/gpu-scale}; STORES=${STORES:-runs/stores}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
SRC=${SRC:-.data/cifar10-jpeg.tar.gz}
BUDGET=${BUDGET:-570}
DEVS_EXTRA=(); DC_EXTRA=(); HOLDOUT=5000; PLUS_IPCS="10"; PLUS_BUDGET=${PLUS_BUDGET:-240}
if [ "${DRY:-0}" = 1 ]; then
  SRC=digits; STORES=runs/dry-stores; DEVS_EXTRA=(--epochs 1 --param width=4 --runs 1 --eval-epochs 2); DC_EXTRA=(--param outer_loop=1 --param inner_loop=1 --param width=4)
  HOLDOUT=300; PLUS_IPCS="2"
fi
mkdir -p "$OUT" "$STORES"
log() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$OUT/session.log"; }
left() { echo $((BUDGET - SECONDS)); }
stream() {  # stream LABEL SIZE distill-args...
  local label=$1 size=$2; shift 2
  [ "$(left)" -gt 10 ] || { log "no time left for $label"; return; }
  timeout "$(left)" $PY benchmarks/streaming.py --source "$SRC" --size "$size" --store "$STORES/cifar10-$size" \
    --label "$label" --results "$OUT/streaming.jsonl" -- "$@" >>"$OUT/session.log" 2>&1 || log "FAILED: $label"
  log "done: $label"
}

plus() {  # plus CONFIG distill-args...: one devs+ setting on the validation split
  local config=$1; shift
  local budget=$((PLUS_END - SECONDS)); [ "$budget" -gt 10 ] || { log "no time left for devs+ $config"; return; }
  # shellcheck disable=SC2086
  timeout "$budget" $PY benchmarks/devs_table.py --dataset "$PLUS_DATA" --holdout $HOLDOUT --ipc $PLUS_IPCS --protocols dc \
    --runs 3 --jobs 3 --config "$config" --results "$OUT/devs-plus-holdout.jsonl" --work-dir runs/gpu-plus "${PLUS_EXTRA[@]}" \
    --distill-args --method devs+ "$@" >>"$OUT/plus.log" 2>&1 || log "FAILED: devs+ $config"
  log "done: devs+ $config"
}

log "start on $(hostname): $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo no GPU)"
pack() { [ -f "$STORES/cifar10-$1/store.json" ] || $PY -m devs pack "$SRC" --out "$STORES/cifar10-$1" --size "$1" -q >>"$OUT/session.log" 2>&1; }
pack 128 & first=$!
pack 32 & pack 64 &
$PY -c "import sys, devs; devs.load_dataset(sys.argv[1])" "$SRC" >/dev/null 2>&1 &  # decode once for step P's cache
wait $first  # step B needs the 128 px store; the rest go on beside it
log "A: packed 128 px"

stream gpu-w32-b64-e1 128 --ipc 10 --epochs 1 --no-evaluate --param depth=5 --param width=32 --param batch_size=64 "${DEVS_EXTRA[@]}"
wait
log "A: packed: $(du -sh "$STORES"/* | tr '\n' ' ')"

PLUS_DATA=$SRC; PLUS_EXTRA=(); [ "${DRY:-0}" = 1 ] && PLUS_EXTRA=(--eval-epochs 5)
PLUS_END=$((SECONDS + PLUS_BUDGET))
E=(); [ "${DRY:-0}" = 1 ] && E=(--epochs 1 --param width=8)
plus off "${E[@]}" --param label_mix=0
plus labels05 "${E[@]}" --param label_mix=0.5
plus ft300 "${E[@]}" --param label_mix=0 --param finetune_iterations=300
plus anchor05 "${E[@]}" --param label_mix=0 --param anchor=0.5
plus all "${E[@]}" --param label_mix=0.5 --param anchor=0.5 --param finetune_iterations=300
plus labels1-t2 "${E[@]}" --param label_mix=1 --param temperature=2

stream gpu-d3-32px 32 --ipc 10 --no-evaluate "${DEVS_EXTRA[@]}"
stream gpu-d4-64px 64 --ipc 10 --no-evaluate --param depth=4 "${DEVS_EXTRA[@]}"
stream gpu-d5-128px 128 --ipc 10 --no-evaluate --param depth=5 "${DEVS_EXTRA[@]}"
for pair in 32:3 64:4 128:5; do
  size=${pair%:*}; depth=${pair#*:}
  stream "gpu-dc-3it-${size}px" "$size" --ipc 10 --method dc --no-evaluate --param iterations=3 --param depth=$depth "${DC_EXTRA[@]}"
done
log "end"
