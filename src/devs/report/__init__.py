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

One module per job, each importing only the ones above it:

    collect.py   reading the inputs: Stage, Run, Point, Timing, Collected and ``collect``
    figures.py   what is shown: accuracy plots and figures, the tables and their CSV text
    page.py      the HTML page: Page, its sections, ``build_report``

The image grids themselves come from ``devs.reporting``, which ``devs distill`` uses too. The function
``collect`` is imported from ``devs.report.collect`` (here that name is the module).
"""

from __future__ import annotations

from .collect import Collected, Point, Run, Stage, Timing
from .figures import Table, csv_text
from .page import build_report

__all__ = [
    "Collected",
    "Point",
    "Run",
    "Stage",
    "Table",
    "Timing",
    "build_report",
    "csv_text",
]
