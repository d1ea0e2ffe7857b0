"""Time-to-accuracy frontier: every method distilled under growing wall-clock budgets, judged under one protocol.

Each entry is one ``devs distill`` command run alone (its own checkpoint folder, so no entry reuses another's
extractor and every time is the entry's whole cost). Methods that learn step by step (dc, dm, devs+ with a
long DM step) run once as an *anytime* run: ``--time-budget`` the largest budget and ``--snapshots`` the
others, so one run gives the set they would have returned at each budget. The other entries (DEvS, devs+
fast/balanced, the coresets) have one natural cost and give one point. Every set is then evaluated under
--protocol with --runs fresh nets; the random real subset of the same size is evaluated once per size.

``--jobs N`` runs N entries at once (each distils, then judges its own sets), the anytime ones first since
they take longest: on a GPU, where one small net leaves the device mostly idle, this fits the whole
frontier of one size into a short lease. The times are then taken beside N-1 other processes, so they are
upper bounds; every row records ``jobs`` and the tables say so. ``--eval-jobs M`` judges an anytime run's
sets M at once (the judging never counts in the seconds).

One JSON line per evaluated set goes to --results as soon as it is known (seconds = the elapsed time of
the snapshot, or the distillation's wall time); a rerun skips distillations whose file exists and sets
already evaluated. A dc or dm anytime run killed midway resumes with its clock (--resume), and one that
an earlier call's shorter --budgets stopped is extended to the longer ones (its snapshots of the shorter
budgets kept); the other entries start again.

    python benchmarks/frontier.py --dataset .data/cifar10-jpeg.tar.gz --ipc 1 --budgets 2m,10m,30m,60m \
        --protocol dc --results benchmarks/results/frontier-cpu.jsonl --work-dir runs/bench/frontier-cpu
    python benchmarks/frontier.py --results benchmarks/results/frontier-cpu.jsonl --markdown --plot DIR

``--markdown`` prints, per size, every point and then for each budget the best entry whose time fits in
it, devs's own methods beside the others; ``--plot DIR`` writes ``frontier-DATASET-PROTOCOL-ipcK.png``
per size (the figure ``devs report`` shows for these results).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from devs_table import append as append_row
from devs_table import machine, read_rows, run

from devs.recipes import parse_duration
from devs.report.figures import frontier_figure, frontier_groups
from devs.snapshots import BUDGET_TOLERANCE, snapshot_path, within_budget

# name -> (devs distill options, anytime). Anytime entries get --time-budget and --snapshots from --budgets.
# The order is the run order (one at a time on a CPU): the cheap points of ours and the main baseline first, so a
# partial run already compares them.
DM_ANYTIME = ["--method", "dm", "--param", "iterations=1000000"]  # see "dm anytime"
ENTRIES: dict[str, tuple[list[str], bool]] = {
    "random": (["--method", "random"], False),
    # DM stopped after its first iteration: random real images packed as DM packs them (formation), almost
    # unmatched; what DM's iterations add over the packing alone is the gap to "dm anytime"
    "packed random": (["--method", "dm", "--param", "iterations=1"], False),
    "devs+ fast": (["--method", "devs+", "--recipe", "fast"], False),
    # The DM step made long enough for the largest budget; the snapshots are its shorter runs.
    "dm anytime": (DM_ANYTIME, True),
    # DM with devs's MMD loss (after M3D): not the published DM, so counted among devs's own entries
    "dm mmd anytime": ([*DM_ANYTIME, "--param", "loss=mmd"], True),
    # DM with devs+ balanced's packing at 1 per class (sixteen 8 px tiles per image, BENCHMARKS "Sixteen tiles
    # per image"): the stronger baseline at that size, against the recipe's default of four tiles
    "dm f4 anytime": ([*DM_ANYTIME, "--param", "formation=4"], True),
    "dm mmd f4 anytime": ([*DM_ANYTIME, "--param", "loss=mmd", "--param", "formation=4"], True),
    "devs+ fast bf16": (["--method", "devs+", "--recipe", "fast", "--param", "precision=auto"], False),
    # and compiled: 3.0x the fp32 eager training steps at batch 256 on an AVX-512 BF16 CPU (BENCHMARKS "Speed")
    "devs+ fast bf16 compiled": (["--method", "devs+", "--recipe", "fast", "--param", "precision=auto", "--compile"],
                                 False),
    "devs": (["--method", "devs"], False),
    "devs bf16": (["--method", "devs", "--param", "precision=auto"], False),  # bf16 extractor where it pays
    "dc anytime": (["--method", "dc", "--param", "iterations=1000"], True),  # the published 1,000 at most
    "herding": (["--method", "herding"], False),
    "kcenter": (["--method", "kcenter"], False),
    "forgetting": (["--method", "forgetting"], False),
    "devs+ anytime": (["--method", "devs+", "--param", "finetune_iterations=1000000"], True),
    "devs+ balanced": (["--method", "devs+", "--recipe", "balanced"], False),
}
OURS = {"devs", "devs bf16", "devs+ fast", "devs+ fast bf16", "devs+ fast bf16 compiled", "devs+ balanced",
        "devs+ anytime", "dm mmd anytime", "dm mmd f4 anytime"}  # devs's own methods (the rest are baselines)
# matching runs resume with their clock; the others start again
RESUMABLE = {"dm anytime", "dm mmd anytime", "dm f4 anytime", "dm mmd f4 anytime", "dc anytime"}


def slug(entry: str) -> str:
    return entry.replace("+", "-plus").replace(" ", "-")


def bench(args: argparse.Namespace) -> None:
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    budgets = [parse_duration(text) for text in args.budgets.split(",")]
    data = ["--dataset", args.dataset] + (["--holdout", str(args.holdout)] if args.holdout else [])
    stem = Path(args.dataset).name.split(".")[0]
    for entry in args.entries:
        if entry not in ENTRIES:
            raise SystemExit(f"frontier.py: unknown entry {entry!r}; valid: {', '.join(ENTRIES)}")

    def one(ipc: int, entry: str) -> None:
        sets = distill(args, entry, work, data, stem, ipc, budgets)
        with ThreadPoolExecutor(max_workers=args.eval_jobs) as judges:  # an anytime run's snapshots side by side
            for done in [judges.submit(evaluate, args, results, data, stem, ipc, entry, *found) for found in sets]:
                done.result()

    tasks = {(ipc, entry): partial(one, ipc, entry) for ipc in args.ipc for entry in args.entries}
    baselines = {} if args.no_baseline else {(ipc, "random subsets"): partial(baseline, args, results, data, stem, ipc)
                                             for ipc in args.ipc}
    if args.jobs > 1:  # the anytime runs first (they are the longest), the baselines next, the rest fill the slots
        longest = {task: job for task, job in tasks.items() if ENTRIES[task[1]][1]}
        tasks = {**longest, **baselines, **tasks}
    else:  # one at a time: the baselines first, so a partial run already compares
        tasks = {**baselines, **tasks}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {task: pool.submit(job) for task, job in tasks.items()}
    failed = [f"{entry} at {ipc} per class: {future.exception()!r}" for (ipc, entry), future in futures.items()
              if future.exception()]
    if failed:  # every other entry has finished and been recorded; a rerun retries these
        raise SystemExit("frontier.py: failed entries:\n  " + "\n  ".join(failed))


def distill(args, entry: str, work: Path, data: list[str], stem: str, ipc: int, budgets: list[float]):
    """Distil one entry (unless its file exists); its files with their seconds and the run record."""
    options, anytime = ENTRIES[entry]
    out = work / f"{stem}-{slug(entry)}-ipc{ipc}.safetensors"
    stages = out.with_suffix(".stages")
    argv = [sys.executable, "-m", "devs", "distill", *data, "--ipc", str(ipc), *options, "--device", args.device,
            "--seed", str(args.seed), "--out", str(out), "--checkpoint-dir", str(stages), "--no-evaluate", "-q"]
    if anytime:
        argv += ["--time-budget", f"{budgets[-1]:g}s"]
        if len(budgets) > 1:
            argv += ["--snapshots", ",".join(f"{b:g}s" for b in budgets[:-1])]
    if entry in RESUMABLE:
        argv += ["--resume"]
    earlier: list[dict] = []
    if out.exists() and extendable(entry, out, budgets[-1]):
        earlier = json.loads(out.with_suffix(".json").read_text()).get("snapshots", [])
        run(argv)  # resumes with its clock: the times it had passed are not taken again
    elif not out.exists():
        if entry not in RESUMABLE and stages.exists():
            shutil.rmtree(stages)  # a killed run's extractor would make this one look cheaper
        run(argv)
    record = json.loads(out.with_suffix(".json").read_text())
    if earlier:  # keep the shorter run's snapshots in the record beside the extension's
        record["snapshots"] = earlier + [s for s in record.get("snapshots", []) if s["at_s"] not in
                                         {e["at_s"] for e in earlier}]
        out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    files = [(Path(s["file"]), s["elapsed_s"], record) for s in record.get("snapshots", [])]
    # a matching run's own clock (elapsed_s_) counts the processes before a resume; wall_time_s only this one
    return files + [(out, record["fit"].get("elapsed_s_", record["wall_time_s"]), record)]


def extendable(entry: str, out: Path, longest_s: float) -> bool:
    """A finished dc / dm anytime run that its time budget stopped short of ``longest_s``: a rerun with the
    longer budget resumes it (its progress keeps the clock) instead of starting again."""
    if entry not in RESUMABLE:
        return False
    record = json.loads(out.with_suffix(".json").read_text())
    budget = record["config"].get("time_budget_s")
    stopped_by_budget = record["config"].get("iterations_done", 0) < record["config"].get("iterations", 0)
    return budget is not None and budget < longest_s and stopped_by_budget


def baseline(args, results: Path, data: list[str], stem: str, ipc: int) -> None:
    """The random real subsets of this size (a new one per net), once per size and protocol."""
    key = ("random subsets", ipc, args.protocol, args.holdout)
    if any((row["entry"], row["ipc"], row["protocol"], row.get("holdout")) == key for row in read_rows(results)):
        return
    probe = Path(args.work_dir) / f"{stem}-random-probe-ipc{ipc}.safetensors"
    if not probe.exists():  # devs evaluate needs a file of the size: any random coreset of it will do
        run([sys.executable, "-m", "devs", "distill", *data, "--ipc", str(ipc), "--method", "random", "--out",
             str(probe), "--no-evaluate", "-q"])
    report = json.loads(run(evaluate_argv(args, data, probe)))
    append(results, args, stem, ipc, "random subsets", report["results"][1], seconds=0.0, file=None, record=None,
           command=shlex.join(evaluate_argv(args, data, probe)))


def evaluate_argv(args, data: list[str], path: Path, baseline: bool = True) -> list[str]:
    argv = [sys.executable, "-m", "devs", "evaluate", str(path), *data, "--protocol", args.protocol, "--runs",
            str(args.runs), "--seed", str(args.seed), "--device", args.device, "--json", "-q"]
    argv += ["--eval-epochs", str(args.eval_epochs)] if args.eval_epochs else []
    return argv + ([] if baseline else ["--no-baseline"])


def evaluate(args, results: Path, data, stem, ipc, entry, path: Path, seconds: float, record: dict) -> None:
    # by seconds too: an extended anytime run rewrites its final file with a longer run's set
    done = {(row["entry"], row.get("file"), row["protocol"], row["seconds"]) for row in read_rows(results)}
    if (entry, str(path), args.protocol, seconds) in done:
        return
    argv = evaluate_argv(args, data, path, baseline=False)
    report = json.loads(run(argv))
    append(results, args, stem, ipc, entry, report["results"][0], seconds=seconds, file=str(path), record=record,
           command=shlex.join(argv))


def append(results: Path, args, stem: str, ipc: int, entry: str, result: dict, *, seconds: float, file, record,
           command: str) -> None:
    snapshot = None
    if record is not None and file != record["file"]:
        snapshot = next(s for s in record["snapshots"] if s["file"] == file)
    row = {
        "dataset": stem, "holdout": args.holdout, "ipc": ipc, "entry": entry, "ours": entry in OURS,
        "method": record["method"] if record else "random", "recipe": record.get("recipe") if record else None,
        "file": file, "seconds": seconds, "snapshot_at_s": snapshot["at_s"] if snapshot else None,
        "iterations_done": (snapshot or {}).get("iterations_done") if snapshot else (record or {}).get("fit", {}).get(
            "iterations_done_"),
        "protocol": args.protocol, "runs": args.runs, "eval_epochs": args.eval_epochs, "result": result,
        "jobs": args.jobs,  # entries run at once: above 1, the seconds were taken beside the others
        "distill_command": shlex.join(record["command"]) if record else None, "evaluate_command": command,
        "environment": (record or {}).get("environment"), "machine": machine(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    append_row(results, row)
    print(f"ipc {ipc} {entry} at {seconds:.0f} s: {result['mean']:.2f} ± {result['std']:.2f}", flush=True)


# ----------------------------------------------------------------------------- reading the results
def best_within(rows: list[dict], budget: float, ours: bool) -> dict | None:
    """The most accurate entry of ours (or of the others) whose time is within ``budget`` (5% over allowed: a
    snapshot is taken after the step in flight, devs.snapshots.BUDGET_TOLERANCE)."""
    fitting = [row for row in rows if row["ours"] == ours and row["file"] and within_budget(row["seconds"], budget)]
    return max(fitting, key=lambda row: row["result"]["mean"], default=None)


def markdown(rows: list[dict], budgets: list[float]) -> str:
    lines = []
    for ipc in sorted({row["ipc"] for row in rows}):
        at = [row for row in rows if row["ipc"] == ipc]
        random = next((row["result"] for row in at if row["entry"] == "random subsets"), None)
        jobs = max(row.get("jobs", 1) for row in at)
        shared = f"; up to {jobs} entries distilled at once, so the seconds are upper bounds" if jobs > 1 else ""
        lines += [f"### {ipc} per class ({at[0]['protocol']} protocol, {at[0]['runs']} nets{shared})", "",
                  "| entry | seconds | iterations | accuracy (%) |", "|---|---|---|---|"]
        for row in sorted((r for r in at if r["file"]), key=lambda r: (r["entry"], r["seconds"])):
            result = row["result"]
            lines.append(f"| {row['entry']} | {row['seconds']:.0f} | {row['iterations_done'] or ''} | "
                         f"{result['mean']:.1f} ± {result['std']:.1f} |")
        if random:
            lines.append(f"| random real subsets | 0 | | {random['mean']:.1f} ± {random['std']:.1f} |")
        lines += ["", f"| budget (an entry counts up to {BUDGET_TOLERANCE - 1:.0%} over it) | best of devs's methods | "
                      "best of the others |", "|---|---|---|"]
        for budget in budgets:
            cells = []
            for ours in (True, False):
                best = best_within(at, budget, ours)
                cells.append(f"{best['entry']} {best['result']['mean']:.1f} ± {best['result']['std']:.1f} "
                             f"({best['seconds']:.0f} s)" if best else "none finished")
            lines.append(f"| {budget:g} s | {cells[0]} | {cells[1]} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: Path, folder: Path) -> list[Path]:
    """One PNG per (dataset, protocol, size), drawn by the code behind devs report's frontier figures."""
    from devs.report.collect import collect
    from devs.reporting import save_figure

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (dataset, protocol, ipc), points in frontier_groups(collect([results]).frontier).items():
        path = folder / f"frontier-{dataset}-{protocol}-ipc{ipc}.png"
        save_figure(frontier_figure(points), path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset")
    parser.add_argument("--holdout", type=int, help="evaluate on N held-out training images (a validation split)")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1])
    parser.add_argument("--budgets", default="2m,10m,30m,60m", help="ascending durations; the last is the longest run")
    parser.add_argument("--entries", type=lambda text: [part.strip() for part in text.split(",")],
                        default=list(ENTRIES), help=f"comma-separated, from: {', '.join(ENTRIES)}")
    parser.add_argument("--protocol", default="dc")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--eval-epochs", type=int, help="override the protocol's epochs (quick checks only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1,
                        help="entries run at once (default 1: each alone, its time its whole cost); for a GPU")
    parser.add_argument("--eval-jobs", type=int, default=1,
                        help="sets of one entry judged at once (an anytime run's snapshots); for a GPU")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-baseline", action="store_true", help="skip the random real subsets")
    parser.add_argument("--results", required=True)
    parser.add_argument("--work-dir", default="runs/frontier")
    parser.add_argument("--markdown", action="store_true", help="print the recorded results as tables")
    parser.add_argument("--plot", metavar="DIR", help="write frontier-ipcK.png per size from the recorded results")
    args = parser.parse_args(argv)
    if args.markdown or args.plot:
        rows = read_rows(Path(args.results))
        if args.markdown:
            print(markdown(rows, [parse_duration(text) for text in args.budgets.split(",")]))
        if args.plot:
            for path in plot(Path(args.results), Path(args.plot)):
                print(f"wrote {path}")
        return 0
    if not args.dataset:
        parser.error("--dataset is required to run the benchmark")
    bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
