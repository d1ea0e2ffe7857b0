"""Search the DEvS paper's open settings (issue "DEvS as the paper describes it") on a validation split.

Every configuration below is one set of ``devs distill --method devs`` options: schedules (one step, two
stages, geometric shrinking by about 10, 4 and 2 per stage), per-stage training by optimizer steps or by
fixed epochs, warm starts, the bottleneck layer and where features are taken, per-class against global
clustering. Each is distilled at every ``--ipc`` and evaluated under every ``--protocols`` on ``--runs``
fresh nets; the first configuration of a run is evaluated with the same-protocol random subset beside it,
recorded as the rows of config ``random``. One JSON line per (config, ipc, protocol) lands in --results as
soon as it is known, with the distillation's per-stage time and peak memory; a rerun skips recorded cells
and reuses finished distillations and stages (``--resume`` in one --work-dir), so a cut search resumes.

    # the search, on 5,000 held-out training images (never the test split)
    python benchmarks/paper_search.py --dataset .data/cifar10-jpeg.tar.gz --holdout 5000 --ipc 1 10 50 \\
        --protocols devs dc --results benchmarks/results/paper-search-gpu.jsonl --work-dir runs/paper
    python benchmarks/paper_search.py --results FILE --select devs     # the best complete config's name
    python benchmarks/paper_search.py --results FILE --markdown        # the validation table
    python benchmarks/paper_search.py --results FILE --plot stages.png # accuracy against number of stages
    # the chosen config on the test split, random beside it
    python benchmarks/paper_search.py --dataset .data/cifar10-jpeg.tar.gz --configs NAME --results TEST.jsonl

Distillations run ``--chains`` at a time (one config's sizes in order, so that they share stages), the
evaluations ``--jobs`` at a time; ``--deadline S`` stops starting work after S seconds and kills what runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import queue
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devs_table import append, machine, read_rows, run

# name -> devs distill options; the order is the order of the search (the most informative first).
CONFIGS: dict[str, list[str]] = {
    "one-step": [],
    "shrink4": ["--param", "shrink=4"],
    "one-step-global": ["--clustering", "global"],
    "shrink4-global": ["--param", "shrink=4", "--clustering", "global"],
    "two-stage": ["--param", "stages=2"],
    "shrink10": ["--param", "shrink=10"],
    "shrink2": ["--param", "shrink=2"],
    "shrink4-warm": ["--param", "shrink=4", "--param", "warm_start=true"],
    "shrink4-epochs10": ["--param", "shrink=4", "--param", "epochs=10"],
    "shrink4-bn128": ["--param", "shrink=4", "--param", "bottleneck=128"],
    "shrink4-bn128-feat": ["--param", "shrink=4", "--param", "bottleneck=128", "--param", "feature_layer=bottleneck"],
    "one-step-bn128": ["--param", "bottleneck=128"],
    "shrink4-bn256-feat": ["--param", "shrink=4", "--param", "bottleneck=256", "--param", "feature_layer=bottleneck"],
    "shrink10-global": ["--param", "shrink=10", "--clustering", "global"],
    "shrink2-global": ["--param", "shrink=2", "--clustering", "global"],
    "shrink4-steps2000": ["--param", "shrink=4", "--param", "steps_per_stage=2000"],
    "one-step-global-sklearn": ["--clustering", "global", "--param", "kmeans=sklearn"],
    "two-stage-global": ["--param", "stages=2", "--clustering", "global"],
    "one-step-global-bn128": ["--clustering", "global", "--param", "bottleneck=128"],
    "one-step-global-bn128-feat": ["--clustering", "global", "--param", "bottleneck=128",
                                   "--param", "feature_layer=bottleneck"],
    "one-step-global-epochs10": ["--clustering", "global", "--param", "epochs=10"],
    "paper-all": ["--param", "shrink=4", "--clustering", "global", "--param", "warm_start=true",
                  "--param", "bottleneck=128"],
}
_lock = threading.Lock()


class Deadline:
    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float | None:
        return None if self.end is None else self.end - time.monotonic()

    def passed(self) -> bool:
        left = self.left()
        return left is not None and left <= 1


def cell_key(row: dict) -> tuple:
    return row["dataset"], row["config"], row["ipc"], row["protocol"], row.get("holdout")


def search(args: argparse.Namespace) -> None:
    results, work = Path(args.results), Path(args.work_dir)
    results.parent.mkdir(parents=True, exist_ok=True)
    deadline = Deadline(args.deadline)
    stem = Path(args.dataset).name.split(".")[0]
    split = f"-holdout{args.holdout}" if args.holdout else ""
    data = ["--dataset", args.dataset] + (["--data-root", args.data_root] if args.data_root else [])
    data += ["--holdout", str(args.holdout)] if args.holdout else []
    common = ["--seed", str(args.seed), "--device", args.device]
    names = args.configs or list(CONFIGS)
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    done = {cell_key(row) for row in read_rows(results)}
    baseline_config = names[0]

    def todo(name: str, ipc: int) -> list[str]:
        wanted = [p for p in args.protocols if (stem, name, ipc, p, args.holdout) not in done]
        if name == baseline_config:
            wanted += [p for p in args.protocols if p not in wanted and (stem, "random", ipc, p, args.holdout) not in done]
        return wanted

    def evaluate(name: str, ipc: int, protocol: str, out: Path, record: dict, distill: list[str]) -> None:
        if deadline.passed():
            return
        with_random = name == baseline_config
        command = [sys.executable, "-m", "devs", "evaluate", str(out), *data, "--protocol", protocol,
                   "--runs", str(args.runs), *common, "--json", "-q"]
        command += ["--eval-epochs", str(args.eval_epochs)] if args.eval_epochs else []
        command += [] if with_random else ["--no-baseline"]
        try:
            report = json.loads(run(command, timeout=deadline.left()))
        except (subprocess.SubprocessError, OSError) as error:
            print(f"FAILED {name} ipc {ipc} {protocol}: {error}", flush=True)
            return
        base = {"dataset": stem, "holdout": args.holdout, "ipc": ipc, "protocol": protocol, "runs": args.runs,
                "eval_epochs": args.eval_epochs, "evaluate_command": shlex.join(command), "machine": machine(),
                "concurrent_jobs": args.jobs, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        rows = [{**base, "config": name, "args": args.common_args + CONFIGS[name], "result": report["results"][0],
                 "stages": record.get("stages"), "num_stages": len(record.get("stages") or []),
                 "distill_wall_time_s": record["wall_time_s"], "distill_peak_memory_mib": record["peak_memory_mib"],
                 "distill_cuda_peak_memory_mib": record.get("cuda_peak_memory_mib"),
                 "distill_command": shlex.join(distill)}]
        if with_random:
            rows.append({**base, "config": "random", "result": report["results"][1]})
        with _lock:
            for row in rows:
                if cell_key(row) not in done:
                    append(results, row)
                    done.add(cell_key(row))
                    print(f"{row['config']} ipc {ipc} {protocol}: {row['result']['mean']:.2f} ± "
                          f"{row['result']['std']:.2f}", flush=True)

    evaluations = ThreadPoolExecutor(max_workers=args.jobs)
    pending = []
    configs: queue.Queue[str] = queue.Queue()
    for name in names:
        configs.put(name)

    def chain() -> None:
        while not deadline.passed():
            try:
                name = configs.get_nowait()
            except queue.Empty:
                return
            for ipc in args.ipc:
                protocols = todo(name, ipc)
                if not protocols or deadline.passed():
                    continue
                out = work / f"{stem}{split}-{name}-ipc{ipc}-seed{args.seed}.safetensors"
                distill = [sys.executable, "-m", "devs", "distill", *data, "--ipc", str(ipc), "--out", str(out),
                           *common, "--checkpoint-dir", str(work / f"{stem}{split}-stages"), "--resume",
                           "--no-evaluate", "-q", *args.common_args, *CONFIGS[name]]
                try:
                    if not out.exists():
                        run(distill, timeout=deadline.left())
                except (subprocess.SubprocessError, OSError) as error:
                    print(f"FAILED distill {name} ipc {ipc}: {error}", flush=True)
                    break
                record = json.loads(out.with_suffix(".json").read_text())
                with _lock:
                    pending.extend(evaluations.submit(evaluate, name, ipc, p, out, record, distill) for p in protocols)

    chains = [threading.Thread(target=chain) for _ in range(args.chains)]
    for thread in chains:
        thread.start()
    for thread in chains:
        thread.join()
    evaluations.shutdown(wait=True)


# ----------------------------------------------------------------------------------------------- reading
def scores(rows: list[dict], protocol: str) -> dict[str, dict[int, float]]:
    table: dict[str, dict[int, float]] = {}
    for row in rows:
        if row["protocol"] == protocol:
            table.setdefault(row["config"], {})[row["ipc"]] = row["result"]["mean"]
    return table


def select(rows: list[dict], protocol: str) -> str:
    """The config with the best mean validation accuracy over every ipc in the file (holdout rows only)."""
    holdout = [row for row in rows if row.get("holdout")]
    table = {name: by_ipc for name, by_ipc in scores(holdout, protocol).items() if name != "random"}
    if not table:
        raise SystemExit(f"no holdout rows under protocol {protocol!r}")
    sizes = set().union(*map(set, table.values()))
    complete = {name: by_ipc for name, by_ipc in table.items() if set(by_ipc) == sizes}
    best = max(complete, key=lambda name: statistics.fmean(complete[name].values()))
    print(f"chosen: {best} (best mean under {protocol} over ipc {sorted(sizes)}; "
          f"{len(complete)} of {len(table)} configs complete)", file=sys.stderr)
    return best


def markdown(rows: list[dict]) -> None:
    protocols = sorted({row["protocol"] for row in rows}, key=lambda p: (p != "devs", p))
    sizes = sorted({row["ipc"] for row in rows})
    by_cell = {(row["config"], row["ipc"], row["protocol"]): row for row in rows}
    names = [name for name in [*CONFIGS, "random"] if any(key[0] == name for key in by_cell)]
    head = [f"{p} ipc {ipc}" for p in protocols for ipc in sizes]
    print("| config | stages (ipc " + " / ".join(map(str, sizes)) + ") | " + " | ".join(head)
          + " | stages' time, peak memory (ipc " + " / ".join(map(str, sizes)) + ") |")
    print("|---" * (len(head) + 3) + "|")
    for name in names:
        cells = []
        for protocol in protocols:
            for ipc in sizes:
                row = by_cell.get((name, ipc, protocol))
                cells.append(f"{row['result']['mean']:.1f} ± {row['result']['std']:.1f}" if row else "")
        any_rows = [next((r for r in rows if r["config"] == name and r["ipc"] == ipc), None) for ipc in sizes]
        stages = " / ".join(str(r.get("num_stages", "")) if r else "" for r in any_rows)
        cost = " / ".join(_cost(r) if r and "distill_wall_time_s" in r else "" for r in any_rows)
        print(f"| {name} | {stages if name != 'random' else ''} | " + " | ".join(cells) + f" | {cost} |")


def _cost(row: dict) -> str:
    """The summed time of every stage of the set (stages resumed from a sibling run keep their own times; an
    extractor reused from another config's run counts only its loading) and the largest peak memory, host
    (+ GPU) in GiB."""
    stages = row.get("stages") or []
    seconds = sum(value for stage in stages for key, value in stage.items() if key.endswith("_s"))
    memory = max([row["distill_peak_memory_mib"]] + [stage.get("peak_memory_mib", 0) for stage in stages]) / 1024
    gpu = max([row.get("distill_cuda_peak_memory_mib") or 0] + [stage.get("cuda_peak_memory_mib", 0) for stage in stages])
    return f"{seconds:.0f} s, {memory:.1f}" + (f"+{gpu / 1024:.1f}" if gpu else "") + " GiB"


def plot(rows: list[dict], path: Path, protocol: str) -> None:
    """Validation accuracy against the number of stages, one panel per ipc, per-class and global series."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    sizes = sorted({row["ipc"] for row in rows})
    figure = Figure(figsize=(4 * len(sizes), 3.4), layout="constrained")
    families = {"per-class": ["one-step", "two-stage", "shrink10", "shrink4", "shrink2"],
                "global": ["one-step-global", "two-stage-global", "shrink10-global", "shrink4-global", "shrink2-global"]}
    for axis, ipc in zip(figure.subplots(1, len(sizes), squeeze=False)[0], sizes):
        cell = {row["config"]: row for row in rows if row["ipc"] == ipc and row["protocol"] == protocol}
        for family, names in families.items():
            points = sorted((cell[n]["num_stages"], cell[n]["result"]["mean"], cell[n]["result"]["std"])
                            for n in names if n in cell)
            if points:
                xs, ys, es = zip(*points)
                axis.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=family)
        if "random" in cell:
            axis.axhline(cell["random"]["result"]["mean"], color="grey", linestyle="--", label="random real")
        axis.set_title(f"{ipc} per class")
        axis.set_xlabel("stages")
        axis.set_ylabel(f"validation accuracy (%), {protocol} protocol")
        axis.legend(fontsize=8)
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset")
    parser.add_argument("--data-root")
    parser.add_argument("--holdout", type=int, default=None, help="distill on the rest, evaluate on N held-out images")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--protocols", nargs="+", default=["devs", "dc"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--eval-epochs", type=int, default=None, help="override the protocols' epochs (quick checks only)")
    parser.add_argument("--configs", nargs="+", help=f"which configs, in order (default: all). Known: {', '.join(CONFIGS)}")
    parser.add_argument("--common-args", nargs=argparse.REMAINDER, default=[],
                        help="devs distill options added to every config, e.g. --param kmeans=torch (must come last)")
    parser.add_argument("--chains", type=int, default=1, help="distillations to run at once")
    parser.add_argument("--jobs", type=int, default=1, help="evaluations to run at once")
    parser.add_argument("--deadline", type=float, default=None, help="seconds after which no work starts")
    parser.add_argument("--results", required=True)
    parser.add_argument("--work-dir", default="runs/paper-search")
    parser.add_argument("--select", metavar="PROTOCOL", help="print the best complete config under PROTOCOL")
    parser.add_argument("--markdown", action="store_true", help="print the recorded results as a markdown table")
    parser.add_argument("--plot", metavar="PNG", help="plot accuracy against the number of stages")
    parser.add_argument("--plot-protocol", default="devs")
    args = parser.parse_args()
    rows = read_rows(Path(args.results))
    if args.select:
        print(select(rows, args.select))
    elif args.markdown:
        markdown(rows)
    elif args.plot:
        plot(rows, Path(args.plot), args.plot_protocol)
    else:
        if not args.dataset:
            parser.error("--dataset is needed to run the search")
        search(args)


if __name__ == "__main__":
    main()
