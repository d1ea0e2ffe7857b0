"""Cross-architecture evaluation: distilled files judged by several networks, with soft and hard labels.

For each file x protocol x model x label mode, ``devs.evaluate`` trains --runs fresh nets of that model on
the set (its soft label rows, or their one-hot argmax with ``hard``) and, beside it, on class-balanced
random real subsets of the same size (always one-hot). One JSON line per cell goes to --results as soon
as it is known; a rerun skips the cells already there (same file path, dataset, holdout, model, labels,
protocol, epochs, runs and seed) and reuses a recorded random subset result for the other label mode.
A set whose label rows are already one-hot (DC, DM, the coresets) trains the same nets under both modes, so
its second mode is not trained again: its row copies the first mode's result and says so (``same_as``).
The table has one row per set and label mode and one per random subset size, one column per model.

    python benchmarks/cross_arch.py runs/cifar10-devs-ipc10-seed0.safetensors --dataset cifar10 \
        --models convnet,alexnet,vgg11,resnet18 --labels soft,hard --protocol dc --runs 3 \
        --results benchmarks/results/cross-arch-cifar10.jsonl
    python benchmarks/cross_arch.py --results benchmarks/results/cross-arch-cifar10.jsonl --markdown

Settings are compared on a validation split (``--holdout N``), never chosen on the test split;
``--eval-epochs`` shortens every protocol for quick checks only (its rows say so).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devs_table import read_rows, record

from devs.data import holdout_split, load_dataset
from devs.evaluate import (LABEL_MODES, PROTOCOLS, EvaluationResult, compute_scores, evaluate,
                           evaluate_random_baseline, hard_labels)
from devs.io import load_distilled
from devs.models import MODELS
from devs.report.figures import transfer_table

DEFAULT_MODELS = "convnet,alexnet,vgg11,resnet18"
CELL_FIELDS = ("file", "dataset", "holdout", "model", "labels", "protocol", "eval_epochs", "runs", "seed")
RANDOM_FIELDS = ("dataset", "holdout", "size", "model", "protocol", "eval_epochs", "runs", "seed")


def names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def cell_key(row: dict) -> tuple:
    return tuple(row.get(name) for name in CELL_FIELDS)


def random_key(row: dict) -> tuple:
    return tuple(row.get(name) for name in RANDOM_FIELDS)


def labels_are_one_hot(distilled) -> bool:
    """True when soft and hard evaluation would train on the same targets."""
    return bool((distilled.labels == hard_labels(distilled.labels)).all())


def bench(args: argparse.Namespace) -> None:
    for model in args.models:
        MODELS.get(model)  # unknown names fail before any data is read
    for protocol in args.protocol:
        PROTOCOLS.get(protocol)
    bad = [mode for mode in args.labels if mode not in LABEL_MODES]
    if bad:
        raise SystemExit(f"cross_arch.py: unknown label mode {bad[0]!r}; valid: {', '.join(LABEL_MODES)}")
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    rows = read_rows(results)
    recorded = {cell_key(row): row for row in rows}
    randoms = {random_key(row): row["random"] for row in rows if row.get("random")}
    dataset = load_dataset(args.dataset, root=args.data_root, download=args.download)
    if args.holdout:
        dataset = holdout_split(dataset, args.holdout, seed=0)
    common = dict(runs=args.runs, seed=args.seed, device=args.device, epochs=args.eval_epochs, progress=not args.quiet)
    for file in args.files:
        distilled = load_distilled(file)
        one_hot = labels_are_one_hot(distilled)
        for protocol in args.protocol:
            for model in args.models:
                other_mode: dict | None = None  # this cell's row under another label mode, if recorded
                for labels in args.labels:
                    cell = {"file": str(file), "dataset": args.dataset, "holdout": args.holdout, "model": model,
                            "labels": labels, "protocol": protocol, "eval_epochs": args.eval_epochs,
                            "runs": args.runs, "seed": args.seed, "size": len(distilled)}
                    if cell_key(cell) in recorded:
                        print(f"skip {file} {protocol} {model} {labels}: recorded", flush=True)
                        other_mode = other_mode or recorded[cell_key(cell)]
                        continue
                    if one_hot and other_mode is not None:
                        # One-hot rows: this mode would train the very same nets; copy the result.
                        result = EvaluationResult.from_dict(other_mode["set"], labels=labels)
                        cell["same_as"] = other_mode["labels"]
                    else:
                        result = evaluate(distilled, dataset, protocol=protocol, model=model, labels=labels, **common)
                    random = randoms.get(random_key(cell))
                    if random is None:
                        random = evaluate_random_baseline(dataset, len(distilled), protocol=protocol, model=model,
                                                          **common).to_dict()
                        randoms[random_key(cell)] = random
                    result.scores = compute_scores(result, random["mean"])
                    row = {**cell, "method": distilled.method, "set": result.to_dict(), "random": random}
                    record(args.results, row)
                    recorded[cell_key(cell)] = row
                    other_mode = other_mode or row
                    print(f"{file} {protocol} {model} {labels}: {result.summary()}, random {random['mean']:.2f} ± "
                          f"{random['std']:.2f} %, gain {result.scores['gain']:+.2f}", flush=True)


def markdown(rows: list[dict]) -> str:
    """One table (devs.report's, as `devs report` shows it): a row per (set, labels) and per random subset size, a
    column per model, mean ± std in %."""
    if not rows:
        return "(no results)"
    table = transfer_table(rows)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.rows]
    nets = sorted({len(row["set"]["accuracies"]) for row in rows})
    lines += ["", f"Test accuracy (%), mean ± std over {' or '.join(map(str, nets))} nets per cell; random subsets are "
                  "class-balanced real images of the same size with one-hot labels, a new subset per net."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", metavar="FILE.safetensors", help="distilled files written by devs")
    parser.add_argument("--dataset", help="the dataset the files were distilled from (a registered name or a path)")
    parser.add_argument("--data-root", help="where a registered dataset's files are")
    parser.add_argument("--download", action="store_true", help="download a missing registered dataset")
    parser.add_argument("--holdout", type=int, default=None, metavar="N",
                        help="evaluate on N held-out training images instead of the test split")
    parser.add_argument("--models", type=names, default=names(DEFAULT_MODELS), metavar="NAME[,NAME...]",
                        help=f"registered models (default: {DEFAULT_MODELS})")
    parser.add_argument("--labels", type=names, default=list(LABEL_MODES), metavar="soft,hard",
                        help="label modes (default: soft,hard)")
    parser.add_argument("--protocol", type=names, default=["dc"], metavar="NAME[,NAME...]",
                        help="evaluation protocols (default: dc)")
    parser.add_argument("--runs", type=int, default=3, help="fresh nets per cell (default: 3)")
    parser.add_argument("--eval-epochs", type=int, default=None,
                        help="override the protocols' epochs (quick checks only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first net (default: 0)")
    parser.add_argument("--device", default="auto", help="where to train (default: auto)")
    parser.add_argument("--results", default="benchmarks/results/cross-arch.jsonl", help="JSON lines, appended")
    parser.add_argument("--markdown", action="store_true", help="print the table of --results and stop")
    parser.add_argument("--also", nargs="+", metavar="JSONL",
                        help="more results files to put in the printed table (runs split over several processes)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.markdown:
        if not args.files or not args.dataset:
            parser.error("give FILE.safetensors ... and --dataset (or --markdown to print recorded results)")
        bench(args)
    rows = [row for path in [args.results, *(args.also or [])] for row in read_rows(Path(path))]
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
