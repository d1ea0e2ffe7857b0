"""Check every accuracy in BENCHMARKS.md's tables against the records the table cites.

Each markdown table that holds a "mean ± std" cell must follow a comment naming its records,

    <!-- records: benchmarks/results/a.jsonl benchmarks/results/b.jsonl -->

(or ``<!-- records: none: why -->`` for a table of numbers that have no record, said plainly). Every such
cell, except in columns whose header names numbers from elsewhere (paper, published, target), must equal
the mean and population std of the per-net accuracies of some result in those files, recomputed here and
rounded as the cell is. Results are found anywhere in a record: any object with an ``accuracies`` list.

    python benchmarks/check_claims.py [BENCHMARKS.md]     # prints each failure; exit status 1 if any
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = re.compile(r"<!--\s*records:\s*(.*?)\s*-->")
CELL = re.compile(r"(-?\d+\.\d+)\s*±\s*(\d+\.\d+)")
EXTERNAL = ("paper", "published", "target", "dc's table", "reported")


@dataclass
class Failure:
    line: int
    text: str

    def __str__(self) -> str:
        return f"BENCHMARKS.md:{self.line}: {self.text}"


def _results(value) -> list[list[float]]:
    """Every ``accuracies`` list anywhere inside a JSON value."""
    found = []
    if isinstance(value, dict):
        if isinstance(value.get("accuracies"), list) and value["accuracies"]:
            found.append([float(a) for a in value["accuracies"]])
        for inner in value.values():
            found += _results(inner)
    elif isinstance(value, list):
        for inner in value:
            found += _results(inner)
    return found


def load_results(paths: list[Path]) -> list[tuple[float, float]]:
    """(mean, population std) of every result in the record files (JSON lines or one JSON document)."""
    pairs = []
    for path in paths:
        text = path.read_text()
        documents = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" \
            else [json.loads(text)]
        for accuracies in _results(documents):
            pairs.append((statistics.fmean(accuracies), statistics.pstdev(accuracies)))
    return pairs


def _matches(cell_mean: str, cell_std: str, pairs: list[tuple[float, float]]) -> bool:
    def same(shown: str, value: float) -> bool:  # shown is value rounded to the digits shown
        return abs(value - float(shown)) <= 0.5 * 10 ** -len(shown.split(".")[1]) + 1e-9
    return any(same(cell_mean, mean) and same(cell_std, std) for mean, std in pairs)


def _tables(lines: list[str]) -> list[tuple[int, int]]:
    spans, start = [], None
    for number, line in enumerate(lines + [""]):
        if line.startswith("|") and start is None:
            start = number
        elif not line.startswith("|") and start is not None:
            spans.append((start, number))
            start = None
    return spans


def check(markdown: Path) -> list[Failure]:
    lines = markdown.read_text().splitlines()
    failures: list[Failure] = []
    for start, end in _tables(lines):
        if not any(CELL.search(line) for line in lines[start:end]):
            continue
        above = next((RECORDS.search(line) for line in reversed(lines[max(0, start - 4):start]) if RECORDS.search(line)), None)
        if above is None:
            failures.append(Failure(start + 1, "a table of results without a '<!-- records: ... -->' line above it"))
            continue
        cited = above.group(1)
        if cited.startswith("none"):
            continue
        paths = [ROOT / name for name in cited.split()]
        missing = [str(path.relative_to(ROOT)) for path in paths if not path.exists()]
        if missing:
            failures.append(Failure(start + 1, f"cites missing records {missing}"))
            continue
        pairs = load_results(paths)
        header = [cell.strip().lower() for cell in lines[start].strip("|").split("|")]
        for number in range(start + 2, end):
            cells = lines[number].strip().strip("|").split("|")
            for column, cell in enumerate(cells):
                name = header[column] if column < len(header) else ""
                if any(word in name for word in EXTERNAL):
                    continue
                for mean, std in CELL.findall(cell):
                    if not _matches(mean, std, pairs):
                        failures.append(Failure(number + 1, f"{mean} ± {std} (column {name!r}) is in none of {cited}"))
    return failures


def main() -> None:
    markdown = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "BENCHMARKS.md"
    failures = check(markdown)
    for failure in failures:
        print(failure)
    print(f"{len(failures)} problems" if failures else "every cited accuracy matches its records")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
