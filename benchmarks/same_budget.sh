#!/usr/bin/env bash
# devs+ beside DC and DM given the same wall-clock budget (issue #7): distill with devs+ (extractor trained
# afresh, so its wall time is the whole cost), then run `dc` and `dm` in budget mode with
# time_budget_s = that wall time, on the same machine, one after another (nothing else running), and
# evaluate all three under the same protocols with 3 nets each (devs_table.py rows, random beside each).
#
#   bash benchmarks/same_budget.sh DATASET IPC RESULTS WORK_DIR [--param NAME=VALUE ...]
#   bash benchmarks/same_budget.sh .data/cifar10-jpeg.tar.gz 1 benchmarks/results/same-budget-cpu.jsonl \
#       runs/same-budget --param formation=2
#
# The --param options go to devs+ and, where DM has them too (formation), to DM; DC takes none of them.
# PROTOCOLS (default "dc dsa") and PY (default python3) can be set in the environment.
set -eu
dataset=$1 ipc=$2 results=$3 work=$4; shift 4
PY=${PY:-python3}; PROTOCOLS=${PROTOCOLS:-dc dsa}
dm_params=()
for arg in "$@"; do [[ $arg == formation=* ]] && dm_params+=(--param "$arg"); done
table() {  # table CONFIG DISTILL_ARGS...
  local config=$1; shift
  $PY benchmarks/devs_table.py --dataset "$dataset" --ipc "$ipc" --protocols $PROTOCOLS --runs 3 \
    --config "$config" --work-dir "$work" --results "$results" --distill-args "$@"
}
table devs-plus --method devs+ "$@"
budget=$($PY -c "import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(next(r['distill_wall_time_s'] for r in rows if r['config'] == 'devs-plus' and r['ipc'] == int(sys.argv[2])))" \
  "$results" "$ipc")
echo "devs+ took $budget s: the budget of dc and dm"
table "dc-budget" --method dc --param time_budget_s="$budget"
table "dm-budget" --method dm "${dm_params[@]}" --param time_budget_s="$budget"
