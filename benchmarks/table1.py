"""Table 1: every distillation method beside DEvS, one protocol, the whole training set as the ceiling.

For each method and images-per-class, ``devs distill --method M --ipc K`` runs in a subprocess (so peak
memory and wall time are per distillation), then ``devs evaluate --protocol P --runs R`` trains fresh nets
on the result. One JSON line per cell goes to --results as soon as it is known; a rerun skips recorded
cells. Budget mode: the iterative methods (dc, dm) get ``--param time_budget_s=BUDGET`` and stop when it
is spent; DEvS and the coresets take what they take (far less), and their times are in the table.

    python benchmarks/table1.py --dataset ../shared/data/cifar10-jpeg.tar.gz --ipc 1 10 50 --budget 300 \
        --results benchmarks/results/table1-cifar10.jsonl
    python benchmarks/table1.py --results benchmarks/results/table1-cifar10.jsonl --markdown --csv table1.csv
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devs_table import append, machine, read_rows, run

METHODS = ("random", "herding", "kcenter", "forgetting", "dc", "dm", "devs")
BUDGETED = ("dc", "dm")
# Methods that share the DEvS extractor (or their own cached net) across sizes: one chain, in order.
SHARED_NET = ("devs", "herding", "kcenter", "forgetting")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def bench(args: argparse.Namespace) -> None:
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir)
    stem = Path(args.dataset).name.split(".")[0]
    rows = read_rows(results)
    done = {(row["method"], row["ipc"]) for row in rows}
    data_options = ["--dataset", args.dataset] + (["--data-root", args.data_root] if args.data_root else [])
    common = ["--seed", str(args.seed), "--device", args.device]
    extra = {method: [] for method in METHODS}
    for item in args.method_param:  # METHOD:NAME=VALUE
        method, _, param = item.partition(":")
        extra.setdefault(method, []).extend(["--param", param])

    def cell(method: str, ipc: int, evaluations: ThreadPoolExecutor) -> list:
        out = work / f"{stem}-{method}-ipc{ipc}-seed{args.seed}.safetensors"
        distill = [sys.executable, "-m", "devs", "distill", *data_options, "--method", method, "--ipc", str(ipc),
                   "--out", str(out), *common, "--no-evaluate", "-q", *extra.get(method, [])]
        if method in SHARED_NET:
            distill += ["--checkpoint-dir", str(work / f"{stem}-nets"), "--resume"]
        if method in BUDGETED:
            distill += ["--param", f"time_budget_s={args.budget}"]
        if not out.exists():
            run(distill)
        record = json.loads(out.with_suffix(".json").read_text())
        return [evaluations.submit(evaluate_cell, method, ipc, out, distill, record)]

    def evaluate_cell(method: str, ipc: int, out: Path, distill: list[str], record: dict) -> None:
        evaluate = [sys.executable, "-m", "devs", "evaluate", str(out), *data_options, "--protocol", args.protocol,
                    "--runs", str(args.runs), *common, "--no-baseline", "--json", "-q"]
        if args.eval_epochs:
            evaluate += ["--eval-epochs", str(args.eval_epochs)]
        report = json.loads(run(evaluate))
        result = report["results"][0]
        append(results, {
            "dataset": stem, "method": method, "ipc": ipc, "protocol": args.protocol, "result": result,
            "distill_wall_time_s": record["wall_time_s"], "distill_peak_memory_mib": record["peak_memory_mib"],
            "distill_cuda_peak_memory_mib": record.get("cuda_peak_memory_mib"), "fit": record.get("fit"),
            "budget_s": args.budget if method in BUDGETED else None, "distill_command": shlex.join(distill),
            "evaluate_command": shlex.join(evaluate), "machine": machine(), "date": now(),
        })
        print(f"{method} ipc {ipc}: {result['mean']:.2f} ± {result['std']:.2f}", flush=True)

    todo = [(m, k) for m in args.methods for k in args.ipc if (m, k) not in done]
    chains = [[(m, k) for m, k in todo if m in SHARED_NET]] + [[(m, k)] for m, k in todo if m not in SHARED_NET]
    with ThreadPoolExecutor(args.jobs) as evaluations, ThreadPoolExecutor(args.jobs) as distills:
        def run_chain(chain):
            return [future for method, ipc in chain for future in cell(method, ipc, evaluations)]

        chain_futures = []
        if args.ceiling_runs and ("whole", 0) not in done:  # the longest single job: start it first
            ceiling_future = evaluations.submit(ceiling, args, stem, results)
            chain_futures.append(distills.submit(lambda: [ceiling_future]))
        chain_futures += [distills.submit(run_chain, chain) for chain in chains if chain]
        failures = 0
        for chain_future in chain_futures:
            try:
                for future in chain_future.result():
                    future.result()
            except Exception as error:  # one failed cell must not lose the others
                failures += 1
                print(f"FAILED: {error}", file=sys.stderr, flush=True)
    if failures:
        raise SystemExit(f"{failures} chain(s) failed; rerun to retry the missing cells")


def ceiling(args: argparse.Namespace, stem: str, results: Path) -> None:
    """The whole training set under the same protocol (its epochs may be cut with --ceiling-epochs)."""
    from devs import evaluate_whole_set, load_dataset

    dataset = load_dataset(args.dataset, root=args.data_root)
    result = evaluate_whole_set(dataset, args.protocol, runs=args.ceiling_runs, seed=args.seed, device=args.device,
                                epochs=args.ceiling_epochs, progress=False)
    append(results, {"dataset": stem, "method": "whole", "ipc": 0, "protocol": args.protocol,
                     "result": result.to_dict(), "ceiling_epochs": args.ceiling_epochs,
                     "command": shlex.join(sys.argv), "machine": machine(), "date": now()})
    print(f"whole set: {result.mean:.2f} ± {result.std:.2f}", flush=True)


def markdown(rows: list[dict]) -> None:
    methods = [m for m in METHODS if any(row["method"] == m for row in rows)]
    sizes = sorted({row["ipc"] for row in rows if row["method"] != "whole"})
    cells = {(row["method"], row["ipc"]): row for row in rows}
    print("| images per class | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for ipc in sizes:
        entries = []
        for method in methods:
            row = cells.get((method, ipc))
            entries.append(f"{row['result']['mean']:.1f} ± {row['result']['std']:.1f}" if row else "")
        print(f"| {ipc} | " + " | ".join(entries) + " |")
    whole = cells.get(("whole", 0))
    if whole:
        epochs = whole.get("ceiling_epochs") or "protocol's"
        print(f"\nWhole training set: {whole['result']['mean']:.1f} ± {whole['result']['std']:.1f} "
              f"({len(whole['result']['accuracies'])} nets, {epochs} epochs)")
    print("\n| method | images per class | distill time (s) | peak memory host (GiB) | peak GPU memory (GiB) | budget / iterations |")
    print("|---|---|---|---|---|---|")
    for row in sorted((r for r in rows if r["method"] != "whole"), key=lambda r: (METHODS.index(r["method"]), r["ipc"])):
        gpu = row.get("distill_cuda_peak_memory_mib")
        fit = row.get("fit") or {}
        budget = f"{row['budget_s']} s / {fit.get('iterations_done_', '?')} it" if row.get("budget_s") else ""
        gpu_text = f"{gpu / 1024:.2f}" if gpu else ""
        print(f"| {row['method']} | {row['ipc']} | {row['distill_wall_time_s']:.1f} | "
              f"{row['distill_peak_memory_mib'] / 1024:.2f} | {gpu_text} | {budget} |")


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "method", "ipc", "protocol", "mean", "std", "nets", "distill_wall_time_s",
                         "distill_peak_memory_mib", "distill_cuda_peak_memory_mib", "budget_s", "date"])
        for row in rows:
            result = row["result"]
            writer.writerow([row["dataset"], row["method"], row["ipc"], row["protocol"], round(result["mean"], 2),
                             round(result["std"], 2), len(result["accuracies"]), row.get("distill_wall_time_s"),
                             row.get("distill_peak_memory_mib"), row.get("distill_cuda_peak_memory_mib"),
                             row.get("budget_s"), row["date"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset")
    parser.add_argument("--data-root")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--method-param", action="append", default=[], metavar="METHOD:NAME=VALUE",
                        help="extra method parameter, e.g. forgetting:epochs=20 (repeatable)")
    parser.add_argument("--protocol", default="dc")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--eval-epochs", type=int, default=None, help="override the protocol's epochs (quick checks only)")
    parser.add_argument("--budget", type=float, default=300.0, help="wall-clock seconds for each dc / dm distillation")
    parser.add_argument("--ceiling-runs", type=int, default=2, help="nets trained on the whole set (0: skip)")
    parser.add_argument("--ceiling-epochs", type=int, default=None, help="epochs of the whole-set nets (default: the protocol's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=1, help="distillations and evaluations to run at once")
    parser.add_argument("--results", required=True)
    parser.add_argument("--work-dir", default="runs/table1")
    parser.add_argument("--markdown", action="store_true", help="print the recorded results as markdown tables")
    parser.add_argument("--csv", help="also write the recorded results as CSV")
    args = parser.parse_args()
    if args.markdown or args.csv:
        rows = read_rows(Path(args.results))
        if args.markdown:
            markdown(rows)
        if args.csv:
            write_csv(rows, Path(args.csv))
    else:
        bench(args)


if __name__ == "__main__":
    main()
