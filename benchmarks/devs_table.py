"""Distill a dataset with DEvS at several images-per-class and evaluate each result under named protocols.

Each step runs the ``devs`` command line in a subprocess (so peak memory is per distillation) and appends
one JSON line per result to --results as soon as it is known: a killed benchmark loses nothing, and a
rerun skips the (config, ipc, protocol, holdout) cells already recorded.

The distillations of one call run one after another (the first trains the extractor, the others reuse
it through the shared --checkpoint-dir); the evaluations of finished distillations run --jobs at a time, and
with --split-nets each net of an evaluation is its own process (a GPU that one process would leave idle).

    python benchmarks/devs_table.py --dataset ../shared/data/cifar10-jpeg.tar.gz --ipc 10 1 50 \
        --protocols dc devs --runs 3 --results benchmarks/results/cifar10.jsonl
    python benchmarks/devs_table.py --results benchmarks/results/cifar10.jsonl --markdown

Settings are chosen on a validation split (``--holdout N`` holds N training images out and evaluates on
them), never on the test split; ``--config NAME`` labels the rows of one setting, whose extra
``devs distill`` options follow ``--distill-args``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from devs.evaluate import EvaluationResult
from devs.runtime import cpu_description

_append_lock = threading.Lock()


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    text = f"{platform.machine()} {cores} cores, torch {torch.__version__}, Python {platform.python_version()}"
    cpu = cpu_description()
    if cpu:
        text += f", CPU {cpu}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def run(argv: list[str], timeout: float | None = None) -> str:
    print("$ " + shlex.join(argv), flush=True)
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr[-4000:])
        raise subprocess.CalledProcessError(completed.returncode, argv)
    return completed.stdout


def read_rows(results: Path) -> list[dict]:
    if not results.exists():
        return []
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def cell_key(row: dict) -> tuple:
    return row.get("config", "default"), row["ipc"], row["protocol"], row.get("holdout")


def append(results: Path, row: dict) -> None:
    with _append_lock, results.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()


def record(results: str | None, row: dict) -> None:
    """Append ``row``, stamped with the machine, this command line and the date, to ``results`` (if given)."""
    if results:
        append(Path(results), {**row, "machine": machine(), "command": shlex.join([sys.executable, *sys.argv]),
                               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})


def bench(args: argparse.Namespace) -> None:
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir)
    stem = Path(args.dataset).name.split(".")[0]
    done = {cell_key(row) for row in read_rows(results)}
    data_options = ["--dataset", args.dataset]
    if args.data_root:
        data_options += ["--data-root", args.data_root]
    if args.holdout:
        data_options += ["--holdout", str(args.holdout)]
    split = f"-holdout{args.holdout}" if args.holdout else ""
    common = ["--seed", str(args.seed), "--device", args.device] + (["--compile"] if args.compile else [])
    protocol_options = ["--eval-epochs", str(args.eval_epochs)] if args.eval_epochs else []

    def evaluate_cell(out: Path, record: dict, distill: list[str], ipc: int, protocol: str) -> None:
        evaluate = [sys.executable, "-m", "devs", "evaluate", str(out), *data_options, "--protocol", protocol,
                    *protocol_options, "--runs", str(args.runs), *common, "--json", "-q"]
        if args.split_nets:
            report, command = evaluate_split(evaluate)
        else:
            report, command = json.loads(run(evaluate)), shlex.join(evaluate)
        row = {
            "dataset": stem, "config": args.config, "holdout": args.holdout, "ipc": ipc, "protocol": protocol,
            "runs": args.runs, "eval_epochs": args.eval_epochs, "devs": report["results"][0], "random": report["results"][1],
            "distill_wall_time_s": record["wall_time_s"], "distill_peak_memory_mib": record["peak_memory_mib"],
            "distill_cuda_peak_memory_mib": record.get("cuda_peak_memory_mib"),
            "stages": record.get("stages"), "fit": record.get("fit"), "distill_command": shlex.join(distill),
            "evaluate_command": command, "machine": machine(), "concurrent_jobs": args.jobs,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        append(results, row)
        print(f"{args.config} ipc {ipc} {protocol}: devs {row['devs']['mean']:.2f} ± {row['devs']['std']:.2f}, "
              f"random {row['random']['mean']:.2f} ± {row['random']['std']:.2f}", flush=True)

    def evaluate_split(evaluate: list[str]) -> tuple[dict, str]:
        """The nets of one cell as --runs processes at once (net i: ``--runs 1 --seed SEED+i``, the same net
        as in one process), merged; for a GPU that one process would leave mostly idle."""
        at = evaluate.index("--runs")
        one_net = evaluate[:at] + ["--runs", "1"] + evaluate[at + 2:]
        at = one_net.index("--seed")

        def net(i: int) -> dict:
            return json.loads(run(one_net[:at + 1] + [str(args.seed + i)] + one_net[at + 2:]))

        with ThreadPoolExecutor(max_workers=args.runs) as nets:
            reports = list(nets.map(net, range(args.runs)))
        seeds = " ".join(str(args.seed + i) for i in range(args.runs))
        command = shlex.join(one_net[:at + 1] + ["S"] + one_net[at + 2:])
        return merge_reports(reports), f"{command}  # at once, S in {seeds}"

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        pending = []
        for ipc in args.ipc:
            protocols = [p for p in args.protocols if (args.config, ipc, p, args.holdout) not in done]
            if not protocols:
                continue
            out = work / f"{stem}{split}-{args.config}-ipc{ipc}-seed{args.seed}.safetensors"
            distill = [sys.executable, "-m", "devs", "distill", *data_options, "--ipc", str(ipc), "--out", str(out),
                       *common, "--checkpoint-dir", str(work / f"{stem}{split}-stages"), "--resume",
                       "--no-evaluate", "-q", *args.distill_args]
            if not out.exists():
                run(distill)
            record = json.loads(out.with_suffix(".json").read_text())
            pending += [pool.submit(evaluate_cell, out, record, distill, ipc, p) for p in protocols]
        for future in pending:
            future.result()  # re-raise the first failure


def merge_reports(reports: list[dict]) -> dict:
    """One ``devs evaluate --json`` report from reports of the same sets on different nets, in seed order."""
    per_net = ("accuracies", "seeds", "seconds")
    merged = []
    for parts in zip(*(report["results"] for report in reports)):
        result = EvaluationResult.from_dict(parts[0], **{name: [] for name in per_net})
        for part in sorted(parts, key=lambda p: p["seeds"][0]):
            for name in per_net:
                getattr(result, name).extend(part[name])
        merged.append(result.to_dict())
    return {"results": merged}


def markdown(results: Path) -> None:
    rows = read_rows(results)
    print("| data | config | split | ipc | protocol | DEvS (%) | random (%) | nets | distill time | distill peak memory | machine | date |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: (r["dataset"], r.get("holdout") or 0, r.get("config", "default"), r["ipc"], r["protocol"])):
        d, r = row["devs"], row["random"]
        split = f"holdout {row['holdout']}" if row.get("holdout") else "test"
        gpu = "GPU" if "GPU" in row["machine"] else "CPU"
        memory = f"{row['distill_peak_memory_mib'] / 1024:.2f} GiB"
        if row.get("distill_cuda_peak_memory_mib"):
            memory += f" (+{row['distill_cuda_peak_memory_mib'] / 1024:.2f} GiB GPU)"
        print(f"| {row['dataset']} | {row.get('config', 'default')} | {split} | {row['ipc']} | {row['protocol']} | "
              f"{d['mean']:.1f} ± {d['std']:.1f} | {r['mean']:.1f} ± {r['std']:.1f} | {len(d['accuracies'])} | "
              f"{row['distill_wall_time_s'] / 60:.1f} min | {memory} | {gpu} | {row['date'][:10]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset")
    parser.add_argument("--data-root")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--protocols", nargs="+", default=["dc", "devs"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-epochs", type=int, default=None, help="override the protocols' epochs (quick checks only)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--holdout", type=int, default=None, help="evaluate on N held-out training images")
    parser.add_argument("--config", default="default", help="a name for the distill settings of these rows")
    parser.add_argument("--jobs", type=int, default=1, help="evaluations to run at once")
    parser.add_argument("--split-nets", action="store_true",
                        help="evaluate each net in its own process, all at once (a GPU), and merge the results")
    parser.add_argument("--compile", action="store_true", help="distill and evaluate with torch.compile (long runs)")
    parser.add_argument("--results", required=True)
    parser.add_argument("--work-dir", default="runs/bench")
    parser.add_argument("--distill-args", nargs=argparse.REMAINDER, default=[],
                        help="extra arguments for devs distill (must come last)")
    parser.add_argument("--markdown", action="store_true", help="print the recorded results as a markdown table")
    args = parser.parse_args()
    if args.markdown:
        markdown(Path(args.results))
    else:
        bench(args)


if __name__ == "__main__":
    main()
