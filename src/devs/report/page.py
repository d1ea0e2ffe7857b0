"""The HTML page of ``devs report``: ``build_report`` writes ``index.html`` with its PNG and CSV files.

The page has one section per kind of content (accuracy plots, image grids per run and DEvS stage, timings,
run configurations, skipped inputs); it needs no network and no JavaScript, and every string taken from an
input is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from PIL import Image

from ..errors import ReportError
from ..io import _creation_time
from ..reporting import label_grid_figure, save_figure
from ..runtime import atomic_write_text, check_writable, environment as runtime_environment
from .collect import Collected, Stage, collect
from .figures import (
    Table,
    accuracy_figure,
    accuracy_plots,
    accuracy_table,
    csv_text,
    frontier_figure,
    frontier_groups,
    frontier_table,
    transfer_table,
    runs_table,
    stage_table,
    timing_table,
)


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
    _frontier_section(page, found)
    _transfer_section(page, found)
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


def _frontier_section(page: Page, found: Collected) -> None:
    if not found.frontier:
        return
    page.add("<h2>Accuracy vs. distillation time</h2><p class=meta>Each set's test accuracy (mean ± std over its "
             "nets) against the seconds its distillation took, the whole run included (benchmarks/frontier.py): "
             "lines through an anytime run's snapshots, one point for methods with one cost; solid = devs's "
             "methods, dashed = the others; band = random real subsets of the same size.</p>")
    for (dataset, protocol, ipc), points in frontier_groups(found.frontier).items():
        page.figure(frontier_figure(points), f"frontier-{slug(dataset)}-{slug(protocol)}-ipc{ipc}.png",
                    alt=f"accuracy against distillation time: {dataset}, {protocol}, {ipc} per class")
    page.table(frontier_table(found.frontier), "Every set of the time-to-accuracy runs", folded=True)


def _transfer_section(page: Page, found: Collected) -> None:
    if not found.transfer:
        return
    nets = sorted({len(row["set"].get("accuracies") or []) for row in found.transfer})
    page.add("<h2>Across architectures</h2><p class=meta>Each set judged by other networks than the one it was "
             "distilled with (benchmarks/cross_arch.py): test accuracy (%), mean ± std over "
             f"{esc(' or '.join(map(str, nets)))} nets per cell, with the set's soft labels or their argmax (hard); "
             "random subset = class-balanced real images of the same size, one-hot labels, a new subset per net.</p>")
    page.table(transfer_table(found.transfer), "Sets by model")


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
