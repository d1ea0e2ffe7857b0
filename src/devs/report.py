"""``devs report``: one static HTML page about distilled sets and benchmark results.

Inputs are distilled ``.safetensors`` files (with the ``.json`` run record ``devs distill`` writes next to
each), directories (searched recursively for those, for DEvS stage files
``stage<N>-ipc<K>-<hash>.safetensors`` and for benchmark results), and the ``.jsonl`` results of
``benchmarks/devs_table.py`` and ``benchmarks/table1.py``. Unreadable inputs are skipped with a warning.

The page shows every distilled set as a grid (one row per class, each image with a bar chart of its soft
label; for a DEvS run with stage files, one grid per stage), accuracy against images per class for every
method found (one plot per dataset and protocol, with the random baseline and the whole-training-set
ceiling), distillation times per method and per DEvS stage, and each run's configuration and environment.
Pictures are PNG files and tables CSV files next to ``index.html``; the page needs no network and no
JavaScript, and every string taken from an input is HTML-escaped.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from PIL import Image

from .errors import DevsError, ReportError
from .io import DistilledSet, _creation_time, load_distilled
from .reporting import label_grid_figure, plain_text, save_figure
from .runtime import atomic_write_text, check_writable, environment as runtime_environment

logger = logging.getLogger(__name__)

STAGE_FILE = re.compile(r"stage(\d+)-ipc(\d+)-[0-9a-f]+\.safetensors")
EXTRACTOR_FILE = re.compile(r"extractor\d+-[0-9a-f]+\.safetensors")  # trained nets in a checkpoint dir, not sets
# Settings that may differ between runs sharing one stage checkpoint (see DEvS._stage_key), or that only
# stage files carry: ignored when deciding whether a stage file belongs to a run.
_STAGE_VARYING = {"ipc", "schedule", "epochs", "steps_per_stage", "device", "stages", "resolved_schedule",
                  "resolved_epochs", "stage", "stage_key"}
METHOD_ORDER = ("random", "herding", "kcenter", "forgetting", "dc", "dm", "devs")  # as in benchmarks/table1.py
CEILING = "whole"  # table1.py's method name for the whole training set
STAGE_TIMINGS = ("train_s", "features_s", "cluster_s", "average_s")


# ----------------------------------------------------------------------------------------------- inputs
@dataclass
class Stage:
    """A DEvS stage checkpoint: the full distilled set after stage ``number``."""

    path: Path
    number: int
    ipc: int
    distilled: DistilledSet

    @property
    def record(self) -> dict[str, Any]:
        """Sizes, epochs and seconds of this stage, as DEvS stored them in the file."""
        return self.distilled.config.get("stage") or {}


@dataclass
class Run:
    """A distilled file, its run record (empty when there is none) and its matched DEvS stages."""

    path: Path
    distilled: DistilledSet
    record: dict[str, Any]
    stages: list[Stage] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return str(self.record.get("dataset") or self.distilled.dataset)

    @property
    def ipc(self) -> int:
        return int(self.distilled.config.get("ipc") or round(len(self.distilled) / self.distilled.num_classes))

    @property
    def schedule(self) -> list[int]:
        """Images per class after each DEvS stage (empty for other methods)."""
        return list(self.distilled.config.get("resolved_schedule") or [])

    @property
    def label(self) -> str:
        """The method name, with the DEvS schedule when it has several stages (so variants stay apart)."""
        method = self.distilled.method or "distilled"
        return f"{method} (schedule {','.join(map(str, self.schedule))})" if len(self.schedule) > 1 else method


@dataclass
class Point:
    """One accuracy measurement: mean ± std over ``nets`` networks."""

    dataset: str
    protocol: str
    epochs: int | None  # the evaluation's epochs when they overrode the protocol's
    method: str
    ipc: int
    mean: float
    std: float
    nets: int
    source: str
    date: str = ""


@dataclass
class Timing:
    """One distillation's cost, with its DEvS stage records when there are any."""

    dataset: str
    method: str
    ipc: int
    wall_time_s: float | None
    peak_memory_mib: float | None
    cuda_peak_memory_mib: float | None
    stages: list[dict[str, Any]]
    machine: str
    source: str


@dataclass
class Collected:
    """Everything found in the inputs."""

    runs: list[Run] = field(default_factory=list)
    loose_stages: list[Stage] = field(default_factory=list)  # stage files given as inputs but matching no run
    points: list[Point] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, path: Path | str, reason: str) -> None:
        logger.warning("report: skipping %s: %s", path, reason)
        self.skipped.append((str(path), reason))

    def empty(self) -> bool:
        return not (self.runs or self.loose_stages or self.points or self.timings)


def collect(inputs: Iterable[str | Path]) -> Collected:
    """Read every input (see the module docstring); nothing here raises for a bad file."""
    found = Collected()
    pool: dict[Path, Stage] = {}  # every stage file read, by resolved path
    given: list[Path] = []  # stage files named by the inputs
    for path in _expand(inputs, found):
        try:
            if path.suffix == ".jsonl":
                _read_benchmark(path, found)
            elif STAGE_FILE.fullmatch(path.name):
                given.append(_add_stage(path, pool))
            elif path.suffix == ".safetensors":
                found.runs.append(_read_run(path, found))
            else:
                found.skip(path, "not a .safetensors or .jsonl file")
        except (DevsError, OSError, ValueError) as error:
            found.skip(path, str(error))
    matched: set[Path] = set()
    for run in found.runs:
        for stage_path in _stage_files_of(run):
            try:
                _add_stage(stage_path, pool)
            except DevsError as error:
                found.skip(stage_path, str(error))
        run.stages = _match_stages(run, pool.values())
        matched.update(stage.path.resolve() for stage in run.stages)
        found.points += _run_points(run)
        found.timings += [_run_timing(run)] if run.record else []
    found.loose_stages = [pool[path] for path in given if path not in matched]
    return found


def _expand(inputs: Iterable[str | Path], found: Collected) -> list[Path]:
    """Input files, with directories replaced by the .safetensors and .jsonl files under them; no repeats."""
    files: dict[Path, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix in (".safetensors", ".jsonl") and p.is_file()
                            and not p.name.startswith(".") and not EXTRACTOR_FILE.fullmatch(p.name))
            if not inside:
                found.skip(path, "no .safetensors or .jsonl files in this directory")
            files.update((p.resolve(), p) for p in inside if p.resolve() not in files)
        elif path.is_file():
            files.setdefault(path.resolve(), path)
        else:
            found.skip(path, "not found")
    return list(files.values())


def _add_stage(path: Path, pool: dict[Path, Stage]) -> Path:
    """Read a stage file into ``pool`` (once) and return its resolved path."""
    key = path.resolve()
    if key not in pool:
        number, ipc = (int(group) for group in STAGE_FILE.fullmatch(path.name).groups())  # type: ignore[union-attr]
        pool[key] = Stage(path, number, ipc, load_distilled(path))
    return key


def _read_run(path: Path, found: Collected) -> Run:
    """A distilled file and the run record next to it (a missing record is fine, an unreadable one is skipped)."""
    distilled = load_distilled(path)
    record_path = path.with_suffix(".json")
    record: dict[str, Any] = {}
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            found.skip(record_path, f"unreadable run record ({error}); the set is shown without it")
            record = {}
    return Run(path, distilled, record)


def command_option(command: Sequence[str] | str | None, name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in a recorded command line (a list or a shell string)."""
    if not command:
        return None
    try:
        argv = shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]
    except ValueError:
        return None
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.partition("=")[2]
    return None


def _stage_files_of(run: Run) -> list[Path]:
    """Stage files that fit the run's schedule in its checkpoint directories: ``<out>.stages`` and any
    recorded --checkpoint-dir (a relative one is read from the current directory)."""
    wanted = {f"stage{number}-ipc{ipc}-" for number, ipc in enumerate(run.schedule, start=1)}
    directories = [run.path.with_suffix(".stages")]
    recorded = command_option(run.record.get("command"), "--checkpoint-dir")
    if recorded:
        directories.append(Path(recorded))
    files = []
    for directory in directories:
        try:
            files += [path for path in directory.iterdir() if STAGE_FILE.fullmatch(path.name)
                      and path.name[:path.name.rindex("-") + 1] in wanted]
        except OSError:  # not there (the usual case for one of the two), or not readable
            continue
    return sorted(files)


def _match_stages(run: Run, pool: Iterable[Stage]) -> list[Stage]:
    """The stage files of this run, in order: same name pattern, data, seed, epochs and settings.

    Runs sharing a checkpoint directory (several --ipc values, several configurations) also share files;
    among equal candidates one in the run's own ``<out>.stages`` directory is preferred.
    """
    epochs = run.distilled.config.get("resolved_epochs") or []
    own = run.path.with_suffix(".stages").resolve()
    stages = []
    for number, ipc in enumerate(run.schedule, start=1):
        candidates = [stage for stage in pool if stage.number == number and stage.ipc == ipc
                      and _same_chain(run, stage, epochs[number - 1] if number <= len(epochs) else None)]
        if candidates:
            stages.append(min(candidates, key=lambda stage: stage.path.parent.resolve() != own))
    return stages


def _same_chain(run: Run, stage: Stage, epochs: int | None) -> bool:
    """Whether ``stage`` can be a stage of ``run``: the same source data, seed sequence and settings."""
    a, b = run.distilled, stage.distilled

    def settings(config: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in config.items() if key not in _STAGE_VARYING}

    return (a.dataset == b.dataset and a.classes == b.classes and a.source_train_size == b.source_train_size
            and b.seed == (a.seed or 0) + stage.number - 1 and settings(a.config) == settings(b.config)
            and (epochs is None or stage.record.get("epochs") == epochs))


def _run_points(run: Run) -> list[Point]:
    """The evaluations in a run record: the set itself and its random baseline."""
    epochs = command_option(run.record.get("command"), "--eval-epochs")
    points = []
    for result in run.record.get("evaluation") or []:
        try:
            method = "random" if result.get("label") == "random" else run.label
            ipc = round(result["size"] / run.distilled.num_classes)
            points.append(_point(result, run.dataset, method, ipc, epochs, run.path.name, run.distilled.created))
        except (KeyError, TypeError, ValueError) as error:
            logger.warning("report: %s: ignoring a malformed evaluation (%s)", run.path, error)
    return points


def _run_timing(run: Run) -> Timing:
    record = run.record
    return Timing(run.dataset, run.label, run.ipc, record.get("wall_time_s"), record.get("peak_memory_mib"),
                  record.get("cuda_peak_memory_mib"), record.get("stages") or [], recorded_environment(record),
                  run.path.name)


def _point(result: dict[str, Any], dataset: str, method: str, ipc: int, epochs: Any, source: str, date: str) -> Point:
    """A Point from an EvaluationResult dictionary."""
    return Point(str(dataset), str(result["protocol"]), int(epochs) if epochs else None, str(method), int(ipc),
                 float(result["mean"]), float(result["std"]), len(result.get("accuracies") or []), source, str(date))


def _read_benchmark(path: Path, found: Collected) -> None:
    """Rows of benchmarks/devs_table.py or benchmarks/table1.py; malformed lines are counted and skipped."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    bad: list[str] = []
    for number, line in enumerate(lines, start=1):
        try:
            points, timing = _benchmark_row(json.loads(line), path.name)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            bad.append(f"line {number}: {type(error).__name__} {error}")
            continue
        found.points += points
        found.timings += [timing] if timing else []
    if bad and len(bad) == len(lines):
        found.skip(path, f"no benchmark rows ({bad[0]}); give results of benchmarks/devs_table.py or table1.py")
    elif not lines:
        found.skip(path, "empty file")
    elif bad:
        logger.warning("report: %s: skipped %d of %d lines (%s)", path, len(bad), len(lines), bad[0])


def _benchmark_row(row: dict[str, Any], source: str) -> tuple[list[Point], Timing | None]:
    """Points and timing of one result row: devs_table.py rows have 'devs' and 'random', table1.py 'result'."""
    date = str(row.get("date", ""))
    if "devs" in row and "random" in row:  # benchmarks/devs_table.py
        dataset = row["dataset"] + (f"-holdout{row['holdout']}" if row.get("holdout") else "")
        method = "devs" if row.get("config", "default") == "default" else f"devs ({row['config']})"
        epochs = row.get("eval_epochs")
        points = [_point(row["devs"], dataset, method, row["ipc"], epochs, source, date),
                  _point(row["random"], dataset, "random", row["ipc"], epochs, source, date)]
    elif "method" in row and "result" in row:  # benchmarks/table1.py
        dataset, method = row["dataset"], row["method"]
        evaluated = command_option(row.get("evaluate_command"), "--eval-epochs")
        epochs = row.get("ceiling_epochs") if method == CEILING else evaluated
        points = [_point(row["result"], dataset, method, row["ipc"], epochs, source, date)]
    else:
        raise ValueError("neither a devs_table.py row (devs, random) nor a table1.py row (method, result)")
    timing = None
    if row.get("distill_wall_time_s") is not None:
        timing = Timing(str(dataset), str(method), int(row["ipc"]), row["distill_wall_time_s"],
                        row.get("distill_peak_memory_mib"), row.get("distill_cuda_peak_memory_mib"),
                        row.get("stages") or [], str(row.get("machine", "")), source)
    return points, timing


def recorded_environment(record: dict[str, Any]) -> str:
    """Python, torch and machine as a record states them: an 'environment' object or a 'machine' line."""
    env = record.get("environment")
    if isinstance(env, dict) and env:
        return ", ".join(f"{key} {value}" for key, value in env.items())
    return str(env or record.get("machine") or "not recorded")


# ----------------------------------------------------------------------------------------------- plots
def method_sort_key(method: str) -> tuple[int, str]:
    """Methods in Table 1's order, anything else after them alphabetically."""
    base = method.split(" ")[0]
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), method)


def _best(points: Iterable[Point]) -> Point:
    """Of several measurements of one cell, the one with the most nets (then the latest)."""
    return max(enumerate(points), key=lambda item: (item[1].nets, item[1].date, item[0]))[1]


@dataclass
class AccuracyPlot:
    """The series of one (dataset, protocol) plot: one point per method and size, and the ceiling."""

    dataset: str
    protocol: str
    epochs: int | None
    series: dict[str, list[Point]]
    ceiling: Point | None

    @property
    def title(self) -> str:
        epochs = f", {self.epochs} evaluation epochs" if self.epochs else ""
        return f"{self.dataset}, protocol {self.protocol}{epochs}"


def accuracy_plots(points: Sequence[Point]) -> list[AccuracyPlot]:
    """Group points by dataset and protocol; a cell measured twice keeps its best-supported measurement."""
    ceilings: dict[tuple[str, str], list[Point]] = {}
    cells: dict[tuple[str, str, int | None], dict[str, dict[int, list[Point]]]] = {}
    for point in points:
        if point.method == CEILING:
            ceilings.setdefault((point.dataset, point.protocol), []).append(point)
        elif point.ipc > 0:
            by_method = cells.setdefault((point.dataset, point.protocol, point.epochs), {})
            by_method.setdefault(point.method, {}).setdefault(point.ipc, []).append(point)
    plots = []
    for (dataset, protocol, epochs), by_method in sorted(cells.items(), key=lambda item: str(item[0])):
        series = {method: [_best(by_ipc[ipc]) for ipc in sorted(by_ipc)]
                  for method, by_ipc in sorted(by_method.items(), key=lambda item: method_sort_key(item[0]))}
        ceiling = ceilings.get((dataset, protocol))
        plots.append(AccuracyPlot(dataset, protocol, epochs, series, _best(ceiling) if ceiling else None))
    return plots


def accuracy_figure(plot: AccuracyPlot):
    """Test accuracy against images per class, mean ± std error bars, random dashed, ceiling as a line."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    figure = Figure(figsize=(5.6, 3.8), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    colors = iter(f"C{index}" for index in (0, 1, 2, 3, 4, 5, 6, 8, 9) * 10)  # C7 (gray) is the baseline's
    for method, points in plot.series.items():
        baseline = method == "random"
        style = dict(color="0.45", linestyle="--", marker="s") if baseline else dict(color=next(colors), marker="o")
        axes.errorbar([p.ipc for p in points], [p.mean for p in points], yerr=[p.std for p in points], capsize=3,
                      label=plain_text(method), **style)
    if plot.ceiling:
        mean, std = plot.ceiling.mean, plot.ceiling.std
        epochs = f", {plot.ceiling.epochs} epochs" if plot.ceiling.epochs else ""
        axes.axhspan(mean - std, mean + std, color="0.85", alpha=0.6, linewidth=0)
        axes.axhline(mean, color="black", linestyle=":", label=f"whole training set ({mean:.1f} ± {std:.1f}{epochs})")
    sizes = sorted({p.ipc for points in plot.series.values() for p in points})
    if sizes[-1] >= 5 * sizes[0]:
        axes.set_xscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xticks(sizes, [str(size) for size in sizes])
    axes.set_xlabel("images per class")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(plain_text(plot.title), fontsize=11)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return figure


# ----------------------------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A table shown on the page and also written as ``<name>.csv``."""

    name: str
    columns: list[str]
    rows: list[list[Any]]


def _number(value: Any, digits: int = 2) -> Any:
    return round(value, digits) if isinstance(value, float) else ("" if value is None else value)


def accuracy_table(points: Sequence[Point]) -> Table:
    def order(p: Point) -> tuple:
        return p.dataset, p.protocol, str(p.epochs), method_sort_key(p.method), p.ipc

    rows = [[p.dataset, p.protocol, p.epochs or "", p.method, p.ipc, round(p.mean, 2), round(p.std, 2), p.nets,
             p.source] for p in sorted(points, key=order)]
    return Table("accuracy", ["dataset", "protocol", "eval epochs", "method", "images per class", "mean (%)", "std (%)",
                              "nets", "source"], rows)


def timing_table(timings: Sequence[Timing]) -> Table:
    rows = [[t.dataset, t.method, t.ipc, _number(t.wall_time_s), _number(t.peak_memory_mib, 1),
             _number(t.cuda_peak_memory_mib, 1), t.machine, t.source] for t in _sorted_timings(timings)]
    return Table("timings", ["dataset", "method", "images per class", "distillation (s)", "peak memory (MiB)",
                             "peak GPU memory (MiB)", "machine", "source"], rows)


def stage_table(timings: Sequence[Timing]) -> Table:
    sizes = ("stage", "input_size", "output_size", "epochs")
    rows = [[t.dataset, t.method, t.ipc, *(stage.get(name, "") for name in sizes),
             *(_number(stage.get(name), 3) for name in STAGE_TIMINGS), "yes" if stage.get("resumed") else "", t.source]
            for t in _sorted_timings(timings) for stage in t.stages if isinstance(stage, dict)]
    return Table("stages", ["dataset", "method", "images per class", "stage", "input images", "output images", "epochs",
                            "train (s)", "features (s)", "cluster (s)", "average (s)", "resumed", "source"], rows)


def _sorted_timings(timings: Sequence[Timing]) -> list[Timing]:
    return sorted(timings, key=lambda t: (t.dataset, method_sort_key(t.method), t.ipc, t.source))


def runs_table(runs: Sequence[Run]) -> Table:
    rows = []
    for run in runs:
        d = run.distilled
        command = run.record.get("command")
        rows.append([str(run.path), d.dataset, d.method, "" if d.seed is None else d.seed, len(d), d.num_classes,
                     d.devs_version, d.created, recorded_environment(run.record),
                     shlex.join(map(str, command)) if isinstance(command, list) else (command or ""),
                     json.dumps(d.config, sort_keys=True)])
    return Table("runs", ["file", "dataset", "method", "seed", "images", "classes", "devs version", "created",
                          "environment", "command", "config"], rows)


def csv_text(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- the page
def esc(value: Any) -> str:
    """HTML-escape anything for text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def slug(text: str) -> str:
    """A file-name-safe fragment of ``text``."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:40] or "x"


class Page:
    """The HTML page being built; its pictures and tables are written next to it as they are added."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.parts: list[str] = []

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, figure, name: str, alt: str, caption: str = "") -> None:
        """Save a matplotlib figure as ``name`` and show it."""
        path = save_figure(figure, self.out_dir / name)
        with Image.open(path) as image:
            width, height = image.size
        self.add(f'<figure><img src="{esc(name)}" width="{width}" height="{height}" alt="{esc(alt)}">'
                 + (f"<figcaption>{esc(caption)}</figcaption>" if caption else "") + "</figure>")

    def table(self, table: Table, caption: str, csv_only: Sequence[str] = (), folded: bool = False) -> None:
        """Write ``<name>.csv`` and show the table (folded away if asked), linked to it, less ``csv_only`` columns."""
        name = f"{table.name}.csv"
        atomic_write_text(self.out_dir / name, csv_text(table))
        shown = [index for index, column in enumerate(table.columns) if column not in csv_only]
        head = "".join(f"<th>{esc(table.columns[index])}</th>" for index in shown)
        body = "".join("<tr>" + "".join(f"<td>{esc(row[index])}</td>" for index in shown) + "</tr>"
                       for row in table.rows)
        caption = f'{esc(caption)}, {len(table.rows)} rows (<a href="{esc(name)}">{esc(name)}</a>)'
        markup = f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        self.add(f"<details><summary>{caption}</summary>{markup}</details>" if folded else f"<p>{caption}</p>{markup}")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 100%; height: auto; }
figcaption, .meta { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; } table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } pre { white-space: pre-wrap; font-size: 0.8em; }
"""


def build_report(inputs: Iterable[str | Path], out_dir: str | Path, max_per_class: int = 10) -> Path:
    """Write ``out_dir/index.html`` with its PNG and CSV files about ``inputs``; return the page's path.

    Raises ReportError when no input holds anything to show.
    """
    inputs = [str(item) for item in inputs]
    out_dir = Path(out_dir)
    index = check_writable(out_dir / "index.html")
    found = collect(inputs)
    if found.empty():
        reasons = "; ".join(f"{path}: {reason}" for path, reason in found.skipped[:3])
        raise ReportError(f"Nothing to report in {', '.join(inputs)} ({reasons or 'no inputs given'}); give "
                          ".safetensors files written by devs distill, their directories, or benchmark .jsonl results.")
    page = Page(out_dir)
    page.add(f"<h1>devs report</h1><p class=meta>{len(found.runs)} distilled set(s), {len(found.points)} accuracy "
             f"measurement(s) from {esc(', '.join(inputs))}; built {esc(_creation_time())}.</p>")
    _accuracy_section(page, found)
    _grid_section(page, found, max_per_class)
    _timing_section(page, found)
    _runs_section(page, found)
    _skipped_section(page, found)
    page.add(f"<p class=meta>Built with {esc(_versions())}.</p>")
    document = ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>devs report</title>"
                f"<style>{STYLE}</style></head><body>\n" + "\n".join(page.parts) + "\n</body></html>\n")
    atomic_write_text(index, document)  # last, so the page never points at files not yet written
    return index


def _accuracy_section(page: Page, found: Collected) -> None:
    if not found.points:
        return
    page.add("<h2>Accuracy vs. images per class</h2><p class=meta>Test accuracy, mean ± std over the nets of each "
             "evaluation; random = class-balanced random real images of the same size; dotted line and band = "
             "the whole training set.</p>")
    for number, plot in enumerate(accuracy_plots(found.points), start=1):
        page.figure(accuracy_figure(plot), f"accuracy-{number:02d}-{slug(plot.dataset)}-{slug(plot.protocol)}.png",
                    alt=f"accuracy plot: {plot.title}")
    page.table(accuracy_table(found.points), "Every measurement", folded=True)


def _grid_section(page: Page, found: Collected, max_per_class: int) -> None:
    if not (found.runs or found.loose_stages):
        return
    page.add(f"<h2>Distilled sets</h2><p class=meta>One row per class (by most likely label), at most {max_per_class} "
             "images per row; under each image its soft label (blue: its own class, orange: the others).</p>")
    for number, run in enumerate(found.runs, start=1):
        d = run.distilled
        page.add(f"<h3>{esc(run.path)}</h3><p class=meta>dataset {esc(d.dataset)}, method {esc(d.method)}, {len(d)} "
                 f"images of {d.num_classes} classes, seed {esc(d.seed)}</p>")
        name, stages = f"grid-{number:02d}-{slug(run.path.stem)}", len(run.schedule)
        for stage in run.stages:
            if stage.number < stages:  # the last stage is the result itself
                _stage_figure(page, stage, f"{name}-stage{stage.number}.png", max_per_class)
        last = f"stage {stages} of {stages}: " if stages > 1 else ""
        page.figure(label_grid_figure(d, max_per_class, title=f"{last}result, {len(d)} images"), f"{name}.png",
                    alt=f"image grid of {run.path.name}", caption=str(run.path))
    if found.loose_stages:
        page.add("<h3>Other DEvS stage files</h3>")
        loose = sorted(found.loose_stages, key=lambda stage: (str(stage.path.parent), stage.number))
        for number, stage in enumerate(loose, start=1):
            _stage_figure(page, stage, f"stages-{number:02d}-stage{stage.number}-ipc{stage.ipc}.png", max_per_class)


def _stage_figure(page: Page, stage: Stage, name: str, max_per_class: int) -> None:
    record = stage.record
    title = (f"stage {stage.number}: {record.get('input_size', '?')} → {len(stage.distilled)} images, "
             f"{record.get('epochs', '?')} epochs")
    page.figure(label_grid_figure(stage.distilled, max_per_class, title=title), name,
                alt=f"image grid of {stage.path.name}", caption=str(stage.path))


def _timing_section(page: Page, found: Collected) -> None:
    if not found.timings:
        return
    page.add("<h2>Distillation time</h2>")
    page.table(timing_table(found.timings), "Wall-clock time and peak memory of each distillation")
    stages = stage_table(found.timings)
    if stages.rows:
        page.table(stages, "Seconds per DEvS stage: extractor training, feature extraction, clustering, averaging")


def _runs_section(page: Page, found: Collected) -> None:
    if not found.runs:
        return
    page.add("<h2>Runs: configuration and environment</h2>")
    page.table(runs_table(found.runs), "Each distilled set (its resolved configuration is in the CSV and below)",
               csv_only=("config",))
    for run in found.runs:
        config = json.dumps(run.distilled.config, indent=2, sort_keys=True)
        page.add(f"<details><summary>configuration of {esc(run.path)}</summary><pre>{esc(config)}</pre></details>")


def _skipped_section(page: Page, found: Collected) -> None:
    if found.skipped:
        items = "".join(f"<li>{esc(path)}: {esc(reason)}</li>" for path, reason in found.skipped)
        page.add(f"<h2>Skipped inputs</h2><ul>{items}</ul>")


def _versions() -> str:
    """Versions of the software that built the report."""
    import matplotlib

    versions = {**runtime_environment(), "matplotlib": matplotlib.__version__}
    return ", ".join(f"{key} {value}" for key, value in versions.items())
