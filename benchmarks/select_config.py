"""Pick the DEvS setting with the best mean validation accuracy (holdout rows only; never test rows).

    python benchmarks/select_config.py benchmarks/results/cifar10-holdout.jsonl --protocol dc

Prints the chosen config name on stdout and a summary table on stderr. Only configs evaluated at every
images-per-class value present in the file are eligible, so a half-finished setting cannot win.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from devs_table import read_rows


def select(rows: list[dict], protocol: str) -> str:
    scores: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        if row.get("holdout") and row["protocol"] == protocol:
            scores[row.get("config", "default")][row["ipc"]] = row["devs"]["mean"]
    if not scores:
        raise SystemExit(f"no holdout rows under protocol {protocol!r}")
    sizes = set().union(*(set(by_ipc) for by_ipc in scores.values()))
    complete = {name: by_ipc for name, by_ipc in scores.items() if set(by_ipc) == sizes}
    for name, by_ipc in sorted(scores.items()):
        cells = "  ".join(f"ipc{ipc}: {acc:5.2f}" for ipc, acc in sorted(by_ipc.items()))
        print(f"{name:<20} {cells}{'' if name in complete else '  (incomplete)'}", file=sys.stderr)
    best = max(complete, key=lambda name: statistics.fmean(complete[name].values()))
    print(f"chosen: {best} (best mean over ipc {sorted(sizes)})", file=sys.stderr)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+")
    parser.add_argument("--protocol", default="dc")
    args = parser.parse_args()
    rows = [row for path in args.results for row in read_rows(Path(path))]
    print(select(rows, args.protocol))


if __name__ == "__main__":
    main()
