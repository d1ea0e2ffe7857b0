"""Distill a data set whose float32 images do not fit in memory, streamed from a store, and record the cost.

Packs the source (e.g. CIFAR-10's JPEG tarball) into a uint8 store at --size pixels once, then runs
`devs distill --dataset STORE` in a fresh process and appends one JSON line: the float32 size of the data
set, the packing time, the distillation's wall time and peak resident memory (host, and GPU where used),
each stage's timings, the evaluation if asked for, the exact commands, the machine and the date.

    python benchmarks/streaming.py --source ../shared/data/cifar10-jpeg.tar.gz --size 128 \
        --store runs/stores/cifar10-128 --label cpu-w32 -- --ipc 10 --no-evaluate \
        --param depth=5 --param width=32 --param batch_size=64
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="what devs pack reads (a tarball, folder or dataset name)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
    parser.add_argument("--store", required=True, type=Path, help="the store folder (packed once, then reused)")
    parser.add_argument("--label", required=True, help="a name for this configuration in the results")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "streaming.jsonl")
    parser.add_argument("distill_args", nargs=argparse.REMAINDER, help="after --: arguments for devs distill")
    args = parser.parse_args()
    extra = args.distill_args[1:] if args.distill_args[:1] == ["--"] else args.distill_args

    pack_cmd = [sys.executable, "-m", "devs", "pack", args.source, "--out", str(args.store), "--size", str(args.size)]
    pack_s = None
    if not (args.store / "store.json").is_file():
        start = time.perf_counter()
        subprocess.run(pack_cmd, check=True)
        pack_s = round(time.perf_counter() - start, 1)
    meta = json.loads((args.store / "store.json").read_text())
    c, h, w = meta["image_shape"]
    float32_gib = meta["counts"]["train"] * c * h * w * 4 / 2**30

    out = ROOT / "runs" / "streaming" / f"{args.label}.safetensors"
    distill_cmd = [sys.executable, "-m", "devs", "distill", "--dataset", str(args.store), "--out", str(out),
                   "--json", "-q", *extra]
    start = time.perf_counter()
    done = subprocess.run(distill_cmd, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    record = json.loads(done.stdout)
    children_peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    row = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "label": args.label, "store": meta["name"], "train_images": meta["counts"]["train"],
        "image_shape": meta["image_shape"], "train_float32_gib": round(float32_gib, 2), "pack_s": pack_s,
        "distill_wall_s": record["wall_time_s"], "process_wall_s": round(seconds, 1),
        "distill_peak_memory_mib": record["peak_memory_mib"], "process_peak_memory_mib": round(children_peak_mib, 1),
        "cuda_peak_memory_mib": record["cuda_peak_memory_mib"], "stages": record["stages"],
        "evaluation": [{k: r[k] for k in ("label", "protocol", "size", "mean", "std", "accuracies")}
                       for r in record.get("evaluation", [])],
        "pack_command": ["devs", *pack_cmd[3:]], "distill_command": record["command"],
        "environment": record["environment"],
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{args.label}: {meta['counts']['train']} images {c}x{h}x{w} ({float32_gib:.1f} GiB as float32); "
          f"distill {record['wall_time_s']:.0f} s, peak memory {record['peak_memory_mib']:.0f} MiB "
          f"(whole process {children_peak_mib:.0f} MiB), GPU peak {record['cuda_peak_memory_mib']}")
    for result in row["evaluation"]:
        print(f"  {result['label']} ({result['protocol']}): {result['mean']:.2f} ± {result['std']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
