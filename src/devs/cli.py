"""The ``devs`` command line: distill, evaluate, list, inspect, export, import, report.

Library code raises DevsError subclasses; this module alone turns them into one-line messages and
exit codes (1 for errors, 2 for bad usage, 130 for Ctrl-C). ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .data import holdout_split, list_datasets, load_dataset
from .distributed import current_group, init_from_environment, launched_by_torchrun, shutdown
from .errors import DevsError
from .evaluate import LABEL_MODES, PROTOCOLS, compute_scores, evaluate, evaluate_random_baseline, list_protocols
from .io import load_distilled
from .methods import METHODS, get_method, list_methods
from .methods.base import zca_methods
from .recipes import DEFAULT_RECIPE, RECIPES, parse_duration, resolve_recipe
from .reporting import save_grid
from .runtime import (
    DEVICE_CHOICES,
    atomic_write_text,
    check_writable,
    cuda_peak_memory_mib,
    environment,
    peak_memory_mib,
    resolve_device,
)
from .snapshots import Snapshots, snapshot_path, within_budget
from .train import PRECISION_CHOICES
from .zca import DEFAULT_REGULARIZATION as ZCA_REGULARIZATION

logger = logging.getLogger("devs")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (so redirected or captured stderr is honoured)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class UsageError(Exception):
    """Bad command-line usage (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line instead of printing usage and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 100,10; got {text!r}") from None


def _name_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names such as convnet,resnet18; got {text!r}")
    return names


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except DevsError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _durations(text: str) -> list[float]:
    """'2m,10m,30m' -> [120.0, 600.0, 1800.0], ascending and distinct."""
    seconds = [_duration(part) for part in text.split(",")]
    if sorted(set(seconds)) != seconds:
        raise argparse.ArgumentTypeError(f"expected ascending, distinct durations such as 2m,10m,30m; got {text!r}")
    return seconds


def _param(text: str) -> tuple[str, Any]:
    """NAME=VALUE, with VALUE read as JSON where it parses (60, 0.5, true, null, [100,10]) and as text otherwise."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE such as time_budget_s=60; got {text!r}")
    try:
        return name.strip().replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return name.strip().replace("-", "_"), value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="only print results and errors; no progress bars")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def _add_dataset_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--dataset", default=default, required=default is None, metavar="NAME_OR_PATH",
        help="a registered dataset (see 'devs list'), or a path to an ImageFolder directory, .tar/.tar.gz, .npz, "
        "or a store written by devs pack"
        + (f" (default: {default})" if default else ""),
    )
    parser.add_argument("--data-root", metavar="DIR", help="where a registered dataset's files are (downloads go there too)")
    parser.add_argument("--download", action="store_true", help="download a missing registered dataset (checksums verified)")
    parser.add_argument("--holdout", type=int, metavar="N",
                        help="hold out N stratified training images and use them instead of the test split "
                        "(a validation split for choosing settings; same N and --seed give the same split)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="whether a horizontal flip keeps an image's class, so that training may flip it "
                        "(default: the registered dataset's choice, off for digits; on for a path: say --no-flip "
                        "for digits, text or other images with a handedness)")


def _add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", default="dc", help=f"evaluation protocol: {', '.join(list_protocols())} (default: dc)")
    parser.add_argument("--runs", type=int, default=3, help="fresh networks to train (default: 3)")
    parser.add_argument("--eval-epochs", type=int, default=None, metavar="E", help="override the protocol's epochs")
    parser.add_argument("--compile", action="store_true",
                        help="train and infer with torch.compile: about 1.5x (training) and 2x (inference) faster on CPU "
                        "after 20-50 s of compiling; for long runs (also compiles the distillation's extractor)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                        help="train and test the judging nets (and, in devs distill, DEvS's extractors) in fp32, or "
                        "under bfloat16 autocast (bf16; auto = bf16 where the CPU has AVX-512 BF16 or AMX, or the GPU "
                        "supports it: about 1.8x faster training there; see BENCHMARKS 'Speed'). Default: fp32")
    parser.add_argument("--together", action="store_true",
                        help="train the judging nets at once, one vectorized step for all (torch.func): for GPUs, "
                        "where one small net leaves the device idle (no faster on a CPU, which one net keeps busy); "
                        "each step equals the one-by-one step up to float rounding. "
                        "Models with batch norm or dropout (the devs protocol) still train one by one")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also evaluate a random class-balanced real subset of the same size (default: on)")
    parser.add_argument("--progress-file", metavar="F", default=None,
                        help="keep each finished net's accuracy in F (JSON lines, created if missing) and take the "
                        "nets F already holds for the same set, data and settings: a rerun after a crash or a kill "
                        "trains only the missing nets and gives the same result")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="devs", description="Dataset distillation with DEvS: condense a labelled image set into a few "
                     "synthetic images with soft labels, and evaluate them.")
    parser.add_argument("--version", action="version", version=f"devs {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    distill = commands.add_parser("distill", help="distill a dataset into a .safetensors file (then evaluate it)",
                                  description="Distill a dataset into a devs.distilled.v1 .safetensors file, write a "
                                  "PNG grid and the resolved config next to it, and evaluate the result.")
    _add_dataset_options(distill, "digits")
    distill.add_argument("--ipc", type=int, default=10, help="images per class in the result (default: 10)")
    distill.add_argument("--method", default="devs", help=f"distillation method: {', '.join(list_methods())} (default: devs)")
    distill.add_argument("--recipe", default=DEFAULT_RECIPE, choices=RECIPES,
                         help="a measured setting of the method, resolved for this size, image size and device: fast "
                         "(no gradient steps where the method allows), balanced, best (about a GPU-hour), or none "
                         f"(the method's own defaults); --param values override it (default: {DEFAULT_RECIPE})")
    distill.add_argument("--time-budget", type=_duration, metavar="DURATION",
                         help="stop iterative methods (dc, dm, devs+'s DM step) once this much time is spent, e.g. 90s, "
                         "10m, 1.5h; methods without iterations say what they did instead")
    distill.add_argument("--snapshots", type=_durations, metavar="DURATION,...",
                         help="also write the set as it stood at these elapsed times, e.g. 2m,10m,30m, beside --out as "
                         "OUT.at120s.safetensors ... (an anytime run: one run gives the whole time-to-accuracy curve; "
                         "dc, dm and devs+ with a DM step)")
    distill.add_argument("--dry-run", action="store_true",
                         help="print the resolved parameters (recipe, overrides, defaults) and stop")
    distill.add_argument("--out", metavar="FILE.safetensors",
                         help="output file (default: runs/<dataset>-<method>-ipc<K>-seed<S>.safetensors)")
    distill.add_argument("--seed", type=int, default=0, help="random seed; stage i of DEvS uses seed + i (default: 0)")
    distill.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where to compute (default: auto)")
    distill.add_argument("--resume", action="store_true",
                         help="reuse finished DEvS stages and trained extractors; continue dc / dm runs (and devs+'s "
                         "DM step) from their last saved iteration")
    distill.add_argument("--checkpoint-dir", metavar="DIR",
                         help="where DEvS saves each finished stage and dc / dm their progress (default: <out>.stages "
                         "next to --out); runs at several --ipc values sharing one DIR with --resume train the first "
                         "extractor once")
    distill.add_argument("--schedule", type=_int_list, metavar="K1,K2,...",
                         help="DEvS: images per class after each stage, e.g. 100,10 (default: one stage; "
                         "--param stages=K or --param shrink=F derive a geometric schedule from the data size)")
    distill.add_argument("--epochs", type=_int_list, metavar="E1,E2,...",
                         help="DEvS: extractor epochs per stage (default: derived from the data size)")
    distill.add_argument("--clustering", choices=("per-class", "global"), default=None,
                         help="DEvS: cluster all images together (devs's default: soft labels) or each class "
                         "separately (exact images per class; devs+'s default)")
    distill.add_argument("--zca", type=float, nargs="?", const=ZCA_REGULARIZATION, default=None, metavar="R",
                         help="distill on ZCA-whitened images (MTT's preprocessing), fitted on the training split with "
                         f"regularization R (default R: {ZCA_REGULARIZATION}); the file records the transform. "
                         f"Methods: {', '.join(zca_methods())}")
    distill.add_argument("--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                         help="any parameter of the method, e.g. --param time_budget_s=60 --param iterations=500 "
                         "(see the method's docstring; repeatable)")
    distill.add_argument("--json", action="store_true", help="print the run record (files, timings, evaluation) as JSON")
    distill.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True,
                         help="evaluate the result after distilling (default: on)")
    _add_evaluation_options(distill)
    _add_common(distill)

    evaluate_cmd = commands.add_parser("evaluate", help="train fresh nets on a distilled file and report test accuracy",
                                       description="Train several fresh networks on a distilled set under a named "
                                       "protocol and report test accuracy mean ± std, beside a random real subset of the "
                                       "same size: one row per --model, with the gain over random and, given --ceiling, "
                                       "the share of the random-to-whole-set gap the set closes.")
    evaluate_cmd.add_argument("file", metavar="FILE", help="a .safetensors file written by devs")
    _add_dataset_options(evaluate_cmd, None)
    evaluate_cmd.add_argument("--seed", type=int, default=0, help="seed of the first net; net i uses seed + i")
    evaluate_cmd.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where to compute (default: auto)")
    evaluate_cmd.add_argument("--json", action="store_true", help="print the results as JSON")
    _add_evaluation_options(evaluate_cmd)
    evaluate_cmd.add_argument("--model", dest="models", type=_name_list, metavar="NAME[,NAME...]",
                              help="the networks to train, e.g. convnet,resnet18,vgg11 (see 'devs list'; default: the "
                              "protocol's, convnet)")
    evaluate_cmd.add_argument("--labels", default="soft", choices=LABEL_MODES,
                              help="train on the set's label rows (soft) or on their one-hot argmax (hard: what the "
                              "images carry without the labels' knowledge); random subsets are always hard "
                              "(default: soft)")
    evaluate_cmd.add_argument("--ceiling", type=float, metavar="PCT",
                              help="whole-training-set accuracy (%%) under the same protocol and model, for the score "
                              "gap_closed = (set - random) / (ceiling - random)")
    _add_common(evaluate_cmd)

    list_cmd = commands.add_parser("list", help="list datasets, methods, models and protocols")
    list_cmd.add_argument("--json", action="store_true", help="print as JSON")

    inspect_cmd = commands.add_parser("inspect", help="show what a distilled file holds",
                                      description="Show a distilled file's format, shapes, classes, per-class counts, "
                                      "label entropy, pixel range, metadata and config.")
    inspect_cmd.add_argument("file", metavar="FILE", help="a .safetensors file written by devs")
    inspect_cmd.add_argument("--json", action="store_true", help="print as JSON")
    _add_common(inspect_cmd)

    export_cmd = commands.add_parser("export", help="write a distilled file as PNGs in class folders plus label files",
                                     description="Write a distilled file as DIR/<class>/<index>.png plus labels.csv "
                                     "and labels.json (soft labels and everything needed to rebuild the set).")
    export_cmd.add_argument("file", metavar="FILE", help="a .safetensors file written by devs")
    export_cmd.add_argument("--to", required=True, metavar="DIR", help="output folder (must be new or empty)")
    export_cmd.add_argument("--overwrite", action="store_true", help="replace DIR if it holds an earlier export")
    _add_common(export_cmd)

    import_cmd = commands.add_parser("import", help="rebuild a distilled file from a folder written by devs export",
                                     description="Read a folder written by devs export (labels.json and the PNGs it "
                                     "names), validate it, and write a devs.distilled.v1 .safetensors file.")
    import_cmd.add_argument("folder", metavar="DIR", help="a folder written by devs export")
    import_cmd.add_argument("--out", required=True, metavar="FILE.safetensors", help="output file")
    _add_common(import_cmd)

    pack_cmd = commands.add_parser("pack", help="write a dataset as an on-disk store for data larger than memory",
                                   description="Write a dataset (an ImageFolder directory or tarball, streamed one "
                                   "image at a time; or any registered name or .npz) as a devs.store.v1 folder of uint8 "
                                   "shards, optionally resized. 'devs distill --dataset DIR' then reads it a batch at a "
                                   "time, so its float32 images never need to fit in memory.")
    pack_cmd.add_argument("source", metavar="NAME_OR_PATH", help="a registered dataset, an ImageFolder directory or "
                          "tarball, or a .npz file")
    pack_cmd.add_argument("--out", required=True, metavar="DIR", help="the store folder to create")
    pack_cmd.add_argument("--size", type=int, metavar="PX", help="resize every image to PX x PX pixels (bicubic)")
    pack_cmd.add_argument("--shard-rows", type=int, default=4096, metavar="N", help="images per shard file (default: 4096)")
    pack_cmd.add_argument("--data-root", metavar="DIR", help="where a registered dataset's files are")
    pack_cmd.add_argument("--overwrite", action="store_true", help="replace DIR if it holds an earlier store")
    _add_common(pack_cmd)

    report_cmd = commands.add_parser("report", help="write an HTML report of distilled sets and benchmark results",
                                     description="Write a static HTML page (PNG pictures and CSV tables beside it) with "
                                     "image grids of distilled sets and of each DEvS stage, accuracy against images per "
                                     "class, distillation times, and each run's configuration and environment.")
    report_cmd.add_argument("inputs", nargs="+", metavar="RUN_DIR_OR_FILE",
                            help="distilled .safetensors files, directories holding them (searched recursively, "
                            "with their DEvS stage files), or benchmark .jsonl results")
    report_cmd.add_argument("--out", default="report", metavar="DIR", help="output directory (default: report)")
    report_cmd.add_argument("--max-per-class", type=int, default=10, metavar="N",
                            help="images per class shown in each grid (default: 10)")
    _add_common(report_cmd)
    return parser


def _configure_logging(quiet: bool) -> None:
    """Messages of devs's own loggers go to stderr; the root logger is left to the application."""
    package_logger = logging.getLogger("devs")
    package_logger.setLevel(logging.WARNING if quiet else logging.INFO)
    if not any(getattr(handler, "_devs_cli", False) for handler in package_logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._devs_cli = True  # type: ignore[attr-defined]
        package_logger.addHandler(handler)


def _method_params(args: argparse.Namespace) -> dict[str, Any]:
    accepted = set(METHODS.get(args.method).param_names())  # an unknown method fails first, listing valid ones
    params: dict[str, Any] = {"ipc": args.ipc, "random_state": args.seed}
    devs_only = {"schedule": args.schedule, "clustering": args.clustering}
    if args.epochs is not None:
        devs_only["epochs"] = args.epochs[0] if len(args.epochs) == 1 else args.epochs
    if {"schedule", "clustering", "epochs"} <= accepted:  # DEvS and its variants
        params.update({key: value for key, value in devs_only.items() if value is not None})
    else:
        given = [f"--{key}" for key, value in devs_only.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to --method devs and devs+; other methods take --param NAME=VALUE")
    if args.resume and "resume" not in accepted:
        raise UsageError(f"--resume does not apply to --method {args.method}")
    runtime = {"device": args.device, "resume": args.resume, "progress": not args.quiet, "compile": args.compile}
    params.update({key: value for key, value in runtime.items() if key in accepted})
    if getattr(args, "zca", None) is not None:
        params["zca"] = args.zca  # a method without the parameter refuses it in get_method, naming those with it
    params.update(dict(args.param))  # get_method rejects names the method does not have
    return params


def _run_evaluation(args: argparse.Namespace, distilled, dataset) -> list[dict[str, Any]]:
    """The set (and, with the baseline, a random subset) on each model of ``--model``: set, random, set, random, ..."""
    PROTOCOLS.get(args.protocol)
    common = dict(protocol=args.protocol, runs=args.runs, seed=args.seed, device=args.device,
                  epochs=args.eval_epochs, progress=not args.quiet, compile=args.compile, precision=args.precision,
                  together=args.together, progress_file=args.progress_file)
    results = []
    for model in getattr(args, "models", None) or [None]:  # `devs distill` has no --model: the protocol's
        result = evaluate(distilled, dataset, model=model, labels=getattr(args, "labels", "soft"), **common)
        results.append(result)
        if args.baseline:
            zca = distilled.zca["regularization"] if distilled.zca else None  # judged in the set's own input space
            random = evaluate_random_baseline(dataset, len(distilled), model=model, zca=zca, **common)
            result.scores = compute_scores(result, random, getattr(args, "ceiling", None))
            results.append(random)
    return [result.to_dict() for result in results]


def _print_evaluation(results: list[dict[str, Any]], description: str, per_model: bool = False) -> None:
    """The results, one line each (what `devs distill` prints), or with ``per_model`` one row per model.

    A row holds the set's and the random subset's test accuracy, the gain and (with a ceiling) the gap
    closed; ``results`` as ``_run_evaluation`` returns them: per model the set, then its random subset if any.
    """
    if not per_model:
        print(f"protocol {results[0]['protocol']}: {description}")
        for result in results:
            runs = len(result["accuracies"])
            print(f"  {result['label']:<12} {result['size']:>6} images  test accuracy {result['mean']:6.2f} ± "
                  f"{result['std']:.2f} %  ({runs} nets, {sum(result['seconds']):.0f} s)")
        return
    rows: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        rows.setdefault(result.get("model", "convnet"), []).append(result)
    first = results[0]
    ceilings = [r["scores"]["ceiling"] for r in results if r.get("scores") and r["scores"]["ceiling"] is not None]
    ceiling = ceilings[0] if ceilings else None
    print(f"protocol {first['protocol']}: {description}")
    nets = len(first["accuracies"])
    print(f"test accuracy (%), mean ± std over {nets} net{'' if nets == 1 else 's'}, {first['size']} images"
          + (f"; ceiling {ceiling:.2f} %" if ceiling is not None else ""))
    model_width = max(12, *(len(model) for model in rows))
    print(f"  {'model':<{model_width}} {'labels':<6} {'set (' + first['label'] + ')':>15} {'random subset':>15} "
          f"{'gain':>7} {'gap closed':>10} {'time':>7}")

    def cell(result: dict[str, Any] | None) -> str:
        return f"{result['mean']:6.2f} ± {result['std']:5.2f}" if result else "-"

    for model, (chosen, *rest) in rows.items():
        random = rest[0] if rest else None
        scores = chosen.get("scores") or {}
        gain = f"{scores['gain']:+7.2f}" if scores else "-"
        closed = f"{scores['gap_closed']:.3f}" if scores.get("gap_closed") is not None else "-"
        seconds = sum(sum(r["seconds"]) for r in (chosen, random) if r)
        print(f"  {model:<{model_width}} {chosen.get('labels', 'soft'):<6} {cell(chosen):>15} {cell(random):>15} "
              f"{gain:>7} {closed:>10} {seconds:>5.0f} s")


def _load(args: argparse.Namespace):
    dataset = load_dataset(args.dataset, root=args.data_root, download=args.download)
    if args.flip is not None:
        dataset = dataclasses.replace(dataset, flip=args.flip)
    return holdout_split(dataset, args.holdout, seed=0) if args.holdout else dataset


def _resolve_params(args: argparse.Namespace, dataset, explicit: dict[str, Any]):
    """The method's parameters: the recipe's for this size, image size and device, then the explicit ones."""
    accepted = set(METHODS.get(args.method).param_names())
    resolved = resolve_recipe(args.method, args.recipe, ipc=args.ipc, image_shape=dataset.image_shape,
                              device=str(resolve_device(args.device)), zca=explicit.get("zca") is not None)
    for note in [] if args.dry_run else resolved.notes:  # a dry run prints them with the parameters
        logger.warning("recipe %s: %s", args.recipe, note)
    params = {**{k: v for k, v in resolved.params.items() if k in accepted}, **explicit}
    if args.precision != "fp32" and "precision" in accepted and "precision" not in explicit:
        params["precision"] = args.precision  # the method's own training too (DEvS's extractors), not only the judging
    if args.time_budget is not None:
        if "time_budget_s" in explicit:
            raise UsageError("give --time-budget or --param time_budget_s, not both")
        if "time_budget_s" in accepted:
            params["time_budget_s"] = args.time_budget
        else:
            logger.warning("--method %s has no iterations to stop early, so --time-budget cannot shorten it: it runs "
                           "to the end (its time is printed when it is done; --recipe fast is the cheapest recipe)",
                           args.method)
    return params, resolved


def _print_dry_run(args: argparse.Namespace, dataset, method, explicit: dict[str, Any], resolved) -> None:
    rows = {}
    for name, value in method.get_params().items():
        source = "given" if name in explicit else "recipe" if name in resolved.params else "default"
        rows[name] = {"value": value, "source": source, "why": resolved.reasons.get(name, "") if source == "recipe" else ""}
    if args.time_budget is not None and "time_budget_s" in rows:
        rows["time_budget_s"]["source"] = "given"
    shape = "x".join(str(side) for side in dataset.image_shape)
    if args.json:
        print(json.dumps({"method": args.method, "recipe": args.recipe, "dataset": dataset.name, "ipc": args.ipc,
                          "image_shape": list(dataset.image_shape), "params": rows, "notes": resolved.notes},
                         indent=2, default=str))
        return
    print(f"devs distill --method {args.method} --recipe {args.recipe}: {dataset.name}, {args.ipc} images per class "
          f"of {shape}, device {resolve_device(args.device)}")
    width = max(len(name) for name in rows)
    for name, row in rows.items():
        why = f"  ({row['why']})" if row["why"] else ""
        print(f"  {name:<{width}} = {json.dumps(row['value'], default=str):<12} {row['source']}{why}")
    for note in resolved.notes:
        print(f"  note: {note}")


def _cmd_distill(args: argparse.Namespace) -> int:
    explicit = _method_params(args)
    get_method(args.method, **explicit)  # bad names and values fail before any data is read
    if args.evaluate:
        PROTOCOLS.get(args.protocol)
    stem = f"{Path(args.dataset).name.split('.')[0]}-{args.method}-ipc{args.ipc}-seed{args.seed}"
    out = Path(args.out) if args.out else Path("runs") / f"{stem}.safetensors"
    if out.suffix != ".safetensors":
        raise UsageError(f"--out must end in .safetensors; got {out}")
    if not args.dry_run:
        check_writable(out)
    dataset = _load(args)
    params, resolved = _resolve_params(args, dataset, explicit)
    method = get_method(args.method, **params)
    if "checkpoint_dir" in method.param_names():
        method.checkpoint_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_suffix(".stages")
    recipe = {**resolved.to_dict(), "overridden": sorted(set(resolved.params) & set(explicit))}
    snapshots_written: list[dict[str, Any]] = []
    if args.snapshots:
        method.snapshots = _snapshot_writer(args, method, out, recipe, snapshots_written)
    if args.dry_run:
        _print_dry_run(args, dataset, method, explicit, resolved)
        return 0
    logger.info("Distilling %s (%d training images, %d classes) with %s (recipe %s) at %d images per class",
                dataset.name, len(dataset.train), dataset.num_classes, args.method, args.recipe, args.ipc)
    start = time.perf_counter()
    distilled = method.fit(dataset).distilled_
    seconds = time.perf_counter() - start
    distilled.config["recipe"] = recipe
    if args.snapshots and len(snapshots_written) < len(args.snapshots):
        logger.warning("%s ended after %.0f s, before snapshot time(s) %s: the final set stands for them",
                       args.method, seconds, ", ".join(f"{t:g} s" for t in args.snapshots[len(snapshots_written):]))
    if args.time_budget is not None and not within_budget(seconds, args.time_budget):
        logger.warning("%s took %.0f s, over the --time-budget of %.0f s", args.method, seconds, args.time_budget)
    main_rank = args.group.is_main
    grid = out.with_suffix(".png")
    if main_rank:  # under torchrun only rank 0 writes
        distilled.save(out)
        grid = save_grid(distilled, grid)
    record: dict[str, Any] = {"file": str(out), "grid": str(grid), "dataset": dataset.name,
                              "method": args.method, "recipe": args.recipe, "flip": dataset.flip, "seed": args.seed,
                              "size": len(distilled),
                              "wall_time_s": round(seconds, 2), "processes": args.group.world_size,
                              "peak_memory_mib": round(peak_memory_mib(), 1), "config": distilled.config,
                              "cuda_peak_memory_mib": cuda_peak_memory_mib(),
                              "stages": getattr(method, "stages_", None),
                              "fit": {k: v for k, v in vars(method).items()  # e.g. iterations_done_ of a budget run
                                      if k.endswith("_") and isinstance(v, (int, float, str))},
                              "command": ["devs", *args.argv], "environment": environment()}
    if args.snapshots:
        record["snapshots"] = snapshots_written
    say = print if main_rank and not args.json else (lambda text: None)  # --json: the record alone on stdout
    say(f"wrote {out} ({len(distilled)} images, {seconds:.1f} s, peak memory {peak_memory_mib():.0f} MiB)")
    say(f"wrote {grid}")
    if args.evaluate:
        record["evaluation"] = _run_evaluation(args, distilled, dataset)
        if main_rank and not args.json:
            _print_evaluation(record["evaluation"], PROTOCOLS.get(args.protocol).description)
    if not main_rank:
        return 0
    config_path = out.with_suffix(".json")
    text = json.dumps(record, indent=2, default=str) + "\n"
    atomic_write_text(config_path, text)
    say(f"wrote {config_path}")
    if args.json:
        print(text, end="")
    return 0


def _snapshot_writer(args: argparse.Namespace, method, out: Path, recipe: dict[str, Any],
                     written: list[dict[str, Any]]) -> Snapshots:
    """Snapshots that write each set beside ``out`` (rank 0 only) and list what they wrote in ``written``."""
    if not method.supports_snapshots or not getattr(method, "finetune_iterations", 1):
        raise UsageError(f"--snapshots needs a method that learns step by step (dc, dm, devs+ with a DM step); "
                         f"{args.method} has no set in between to write")

    def write(distilled, at_s: float, elapsed_s: float) -> None:
        path = snapshot_path(out, at_s)
        if args.group.is_main:
            distilled.config["recipe"] = recipe
            distilled.save(path)
            logger.info("snapshot at %.0f s (asked for %g s): wrote %s", elapsed_s, at_s, path)
        written.append({"at_s": at_s, "elapsed_s": round(elapsed_s, 3), "file": str(path),
                        "iterations_done": distilled.config.get("iterations_done",
                                                                distilled.config.get("finetune_iterations_done"))})

    return Snapshots(args.snapshots, write)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .models import MODELS

    PROTOCOLS.get(args.protocol)
    for model in args.models or []:
        MODELS.get(model)  # an unknown name fails before any data is read
    if args.ceiling is not None:
        if not 0 < args.ceiling <= 100:
            raise UsageError(f"--ceiling is a test accuracy in %, in (0, 100]; got {args.ceiling}")
        if not args.baseline:
            raise UsageError("--ceiling needs the random baseline: drop --no-baseline")
    distilled = load_distilled(args.file)
    dataset = _load(args)
    results = _run_evaluation(args, distilled, dataset)
    if not args.group.is_main:
        return 0
    if args.json:
        print(json.dumps({"file": args.file, "dataset": dataset.name, "labels": args.labels, "ceiling": args.ceiling,
                          "results": results}, indent=2))
    else:
        _print_evaluation(results, PROTOCOLS.get(args.protocol).description, per_model=True)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .models import count_parameters, describe_model, list_models

    from .recipes import DESCRIPTIONS

    # parameter counts for 3x32x32 inputs and 10 classes (the ConvNets and the MLP grow with the image size)
    models = {name: {"parameters": count_parameters(name, 3, 10, (32, 32)), "description": describe_model(name)}
              for name in list_models()}
    listing = {"datasets": list_datasets(), "methods": list_methods(), "models": models, "recipes": DESCRIPTIONS,
               "protocols": {name: PROTOCOLS.get(name).description for name in list_protocols()}}
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    print("datasets:  " + ", ".join(listing["datasets"]) + "  (or a path: ImageFolder dir, .tar/.tar.gz, .npz, or a store written by devs pack)")
    print("methods:   " + ", ".join(listing["methods"]))
    print("models (devs evaluate --model NAME; parameters for 3x32x32 inputs, 10 classes):")
    width = max(len(name) for name in models)
    for name, model in models.items():
        print(f"  {name:<{width}} {model['parameters']:>11,}  {model['description']}")
    print(f"recipes (devs distill --recipe NAME; default {DEFAULT_RECIPE}; devs distill --dry-run shows what one resolves to):")
    for name, description in listing["recipes"].items():
        print(f"  {name:<9} {description}")
    print("protocols:")
    for name, description in listing["protocols"].items():
        print(f"  {name:<6} {description}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspection import describe, format_description

    description = {"file": args.file, **describe(load_distilled(args.file))}
    print(json.dumps(description, indent=2, ensure_ascii=False) if args.json else format_description(description))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .exchange import LABELS_CSV, LABELS_JSON, export_distilled

    distilled = load_distilled(args.file)
    directory = export_distilled(distilled, args.to, overwrite=args.overwrite)
    print(f"wrote {directory} ({len(distilled)} PNG images in class folders, {LABELS_CSV}, {LABELS_JSON})")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from .exchange import import_distilled

    if Path(args.out).suffix != ".safetensors":
        raise UsageError(f"--out must end in .safetensors; got {args.out}")
    out = check_writable(args.out)
    distilled = import_distilled(args.folder)
    distilled.save(out)
    print(f"wrote {out} ({len(distilled)} images, {distilled.num_classes} classes)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    if args.max_per_class < 1:
        raise UsageError(f"--max-per-class must be at least 1; got {args.max_per_class}")
    index = build_report(args.inputs, args.out, max_per_class=args.max_per_class)
    print(f"wrote {index}")
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    from .packing import pack_store
    from .store import open_store

    if args.shard_rows < 1:
        raise UsageError(f"--shard-rows must be at least 1; got {args.shard_rows}")
    out = pack_store(args.source, args.out, size=args.size, shard_rows=args.shard_rows, root=args.data_root,
                     overwrite=args.overwrite, progress=not args.quiet)
    meta, _ = open_store(out)
    c, h, w = meta["image_shape"]
    float_gib = sum(meta["counts"].values()) * c * h * w * 4 / 2**30
    print(f"wrote {out}: {meta['counts']['train']} train + {meta['counts']['test']} test images of {c}x{h}x{w} "
          f"({float_gib:.1f} GiB as float32, read a batch at a time)")
    return 0


COMMANDS = {"distill": _cmd_distill, "evaluate": _cmd_evaluate, "list": _cmd_list, "inspect": _cmd_inspect,
            "export": _cmd_export, "import": _cmd_import, "pack": _cmd_pack, "report": _cmd_report}
# Commands that run on every process under torchrun; the others are single-process tools.
DISTRIBUTED_COMMANDS = ("distill", "evaluate")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    finished = False  # the command returned 0: under torchrun every rank then waits for the others before leaving
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # the run record states the command that made it
        if args.command is None:
            build_parser().print_help()
            return 2
        group = current_group()
        if launched_by_torchrun():
            if args.command not in DISTRIBUTED_COMMANDS:
                raise UsageError(f"'devs {args.command}' runs in one process; only {' and '.join(DISTRIBUTED_COMMANDS)} "
                                 "run under torchrun")
            group = init_from_environment(args.device)
            if not group.is_main:  # one voice: rank 0 prints, shows progress and writes files
                args.quiet = True
        args.group = group
        _configure_logging(getattr(args, "quiet", False))
        code = COMMANDS[args.command](args)
        finished = code == 0
        return code
    except UsageError as error:
        if debug:
            raise
        print(f"devs: error: {error}", file=sys.stderr)
        return 2
    except DevsError as error:
        if debug:
            raise
        print(f"devs: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `devs inspect --json FILE | head`: the reader left, nothing to report
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - silence Python's flush error at exit
        return 1
    except KeyboardInterrupt:
        print("devs: interrupted; finished DEvS stages are kept, rerun with --resume to continue", file=sys.stderr)
        return 130
    except MemoryError:
        if debug:
            raise
        print("devs: error: out of memory; use a smaller dataset, 'devs pack' it into a store, or --device cuda",
              file=sys.stderr)
        return 1
    finally:
        shutdown(synchronize=finished)
