"""Distill a dataset with DEvS at several images-per-class and evaluate each result under named protocols.

Each step runs the ``devs`` command line in a subprocess (so peak memory is per distillation) and appends
one JSON line per result to --results as soon as it is known: a killed benchmark loses nothing, and a
rerun skips the (ipc, protocol) cells already recorded.

    python benchmarks/devs_table.py --dataset ../shared/data/cifar10-jpeg.tar.gz --ipc 10 1 50 \
        --protocols dc devs --runs 3 --results benchmarks/results/cifar10.jsonl
    python benchmarks/devs_table.py --results benchmarks/results/cifar10.jsonl --markdown
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch


def machine() -> str:
    cores = len(__import__("os").sched_getaffinity(0))
    return f"{platform.machine()} {cores} cores, torch {torch.__version__}, {platform.python_version()}"


def run(argv: list[str]) -> str:
    print("$ " + shlex.join(argv), flush=True)
    completed = subprocess.run(argv, check=True, capture_output=True, text=True)
    return completed.stdout


def recorded(results: Path) -> set[tuple[int, str]]:
    if not results.exists():
        return set()
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(row["ipc"], row["protocol"]) for row in rows}


def append(results: Path, row: dict) -> None:
    with results.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()


def bench(args: argparse.Namespace) -> None:
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir)
    stem = Path(args.dataset).name.split(".")[0]
    done = recorded(results)
    for ipc in args.ipc:
        out = work / f"{stem}-devs-ipc{ipc}-seed{args.seed}.safetensors"
        distill = [sys.executable, "-m", "devs", "distill", "--dataset", args.dataset, "--ipc", str(ipc),
                   "--out", str(out), "--seed", str(args.seed), "--checkpoint-dir", str(work / f"{stem}-stages"),
                   "--resume", "--no-evaluate", "-q", *args.distill_args]
        if not out.exists():
            run(distill)
        record = json.loads(out.with_suffix(".json").read_text())
        for protocol in args.protocols:
            if (ipc, protocol) in done:
                continue
            evaluate = [sys.executable, "-m", "devs", "evaluate", str(out), "--dataset", args.dataset,
                        "--protocol", protocol, "--runs", str(args.runs), "--seed", str(args.seed), "--json", "-q"]
            report = json.loads(run(evaluate))
            append(results, {
                "dataset": stem, "ipc": ipc, "protocol": protocol, "runs": args.runs,
                "devs": report["results"][0], "random": report["results"][1],
                "distill_wall_time_s": record["wall_time_s"], "distill_peak_memory_mib": record["peak_memory_mib"],
                "stages": record.get("stages"), "distill_command": shlex.join(distill),
                "evaluate_command": shlex.join(evaluate), "machine": machine(),
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            })
            print(f"ipc {ipc} {protocol}: devs {report['results'][0]['mean']:.2f} random {report['results'][1]['mean']:.2f}",
                  flush=True)


def markdown(results: Path) -> None:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    print("| data | ipc | protocol | DEvS (%) | random (%) | nets | distill time | distill peak memory | date |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: (r["dataset"], r["ipc"], r["protocol"])):
        d, r = row["devs"], row["random"]
        print(f"| {row['dataset']} | {row['ipc']} | {row['protocol']} | {d['mean']:.1f} ± {d['std']:.1f} | "
              f"{r['mean']:.1f} ± {r['std']:.1f} | {len(d['accuracies'])} | {row['distill_wall_time_s'] / 60:.1f} min | "
              f"{row['distill_peak_memory_mib'] / 1024:.2f} GiB | {row['date'][:10]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--protocols", nargs="+", default=["dc", "devs"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
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
