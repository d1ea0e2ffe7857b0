"""What ``devs report`` shows, as data: accuracy plots and their figures, and the tables (with CSV text)
of accuracy measurements, distillation times, DEvS stage times and runs."""

from __future__ import annotations

import csv
import io
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..reporting import plain_text
from .collect import CEILING, FrontierPoint, Point, Run, Timing, recorded_environment

METHOD_ORDER = ("random", "herding", "kcenter", "forgetting", "dc", "dm", "devs")  # as in benchmarks/table1.py
STAGE_TIMINGS = ("train_s", "features_s", "cluster_s", "average_s")


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


RANDOM_SUBSETS = "random subsets"  # benchmarks/frontier.py's name for the same-size random real baseline


def frontier_groups(points: Sequence[FrontierPoint]) -> dict[tuple[str, str, int], list[FrontierPoint]]:
    """Points by (dataset, protocol, images per class): one time-to-accuracy figure each."""
    groups: dict[tuple[str, str, int], list[FrontierPoint]] = {}
    for point in points:
        groups.setdefault((point.dataset, point.protocol, point.ipc), []).append(point)
    return dict(sorted(groups.items()))


def frontier_figure(points: Sequence[FrontierPoint]):
    """Accuracy against distillation seconds (log scale) of one group: a line per entry through its sets
    (devs's methods solid and marked "ours", the others dashed), the random real subsets as a grey band."""
    from matplotlib.figure import Figure

    import matplotlib

    figure = Figure(figsize=(8.6, 4.4), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    first = points[0]
    entries = sorted({p.entry for p in points if p.entry != RANDOM_SUBSETS}, key=method_sort_key)
    colors = matplotlib.colormaps["tab20"].colors  # 20 distinct colours, and a marker cycle beside them
    for index, entry in enumerate(entries):
        series = sorted((p for p in points if p.entry == entry), key=lambda p: p.seconds)
        ours = series[0].ours
        axes.errorbar([max(p.seconds, 0.1) for p in series], [p.mean for p in series], yerr=[p.std for p in series],
                      capsize=3, markersize=5, color=colors[index % len(colors)], marker="os^vDPX*h<>p"[index % 12],
                      linestyle="-" if ours else "--", label=plain_text(entry + (" (ours)" if ours else "")))
    random = [p for p in points if p.entry == RANDOM_SUBSETS]
    if random:
        mean, std = random[0].mean, random[0].std
        axes.axhspan(mean - std, mean + std, color="0.85", alpha=0.6, linewidth=0)
        axes.axhline(mean, color="0.45", linestyle=":", label=f"random real subsets ({mean:.1f} ± {std:.1f})")
    axes.set_xscale("log")
    jobs = max(p.jobs for p in points)
    shared = f", up to {jobs} entries at once: upper bounds" if jobs > 1 else ""
    axes.set_xlabel(f"distillation seconds (the whole run{shared}; log scale)")
    axes.set_ylabel(f"test accuracy (%), protocol {first.protocol}")
    axes.set_title(plain_text(f"{first.dataset}, {first.ipc} per class: accuracy against time"), fontsize=11)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes: no point hidden
    return figure


def transfer_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Cross-architecture results (benchmarks/cross_arch.py rows) as one table: a row per (set, labels) and per
    random subset size, a column per model, each cell mean ± std (%) over that cell's nets."""
    models = list(dict.fromkeys(row["model"] for row in rows))

    def protocol(row: dict[str, Any]) -> str:
        epochs = row.get("eval_epochs")
        return row["protocol"] + (f", {epochs} epoch{'' if epochs == 1 else 's'}" if epochs else "")

    cells: dict[tuple, dict[str, dict[str, Any]]] = {}
    for row in rows:
        split = f"holdout {row['holdout']}" if row.get("holdout") else "test"
        context = (Path(row["dataset"]).name, split, protocol(row), row["size"])
        if row.get("random"):
            cells.setdefault((*context, 0, "random subset", "hard"), {})[row["model"]] = row["random"]
        label = f"{row.get('method') or 'distilled'} ({Path(row['file']).name})"
        # A one-hot set's second label mode trains the same nets; cross_arch.py copies it and says so.
        labels = row["labels"] + (f" (= {row['same_as']}, one-hot rows)" if row.get("same_as") else "")
        cells.setdefault((*context, 1, label, labels), {})[row["model"]] = row["set"]
    table_rows = []
    for key in sorted(cells):
        data, split, proto, size, _, label, labels = key
        shown = [f"{cells[key][m]['mean']:.1f} ± {cells[key][m]['std']:.1f}" if m in cells[key] else "" for m in models]
        table_rows.append([data, split, proto, size, label, labels, *shown])
    return Table("architectures", ["data", "split", "protocol", "images", "set", "labels", *models], table_rows)


def frontier_table(points: Sequence[FrontierPoint]) -> Table:
    rows = [[p.dataset, p.protocol, p.ipc, p.entry, "yes" if p.ours else "", _number(p.seconds, 1), _number(p.mean),
             _number(p.std), p.nets, p.source]
            for p in sorted(points, key=lambda p: (p.dataset, p.protocol, p.ipc, p.entry, p.seconds))]
    return Table("frontier", ["dataset", "protocol", "ipc", "entry", "devs's", "seconds", "mean", "std", "nets",
                              "source"], rows)


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
