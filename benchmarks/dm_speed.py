"""Seconds for a few DM iterations on random data (default: 6,000 Fashion-MNIST-shaped 1x28x28 images, CPU).

    python benchmarks/dm_speed.py LABEL
    python benchmarks/dm_speed.py LABEL --shape 3 32 32 --ipc 10 --formation 2 --iterations 20 --device cuda
    python benchmarks/dm_speed.py LABEL --results FILE.jsonl     # also append the times as one JSON line

Run it on two commits, alternating, to compare them (BENCHMARKS.md "Distribution matching on the CPU");
``PYTHONPATH=OTHER_CHECKOUT/src`` runs another commit's code. The first iteration (allocations, library
start-up) is timed apart from the rest.
"""

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path

import torch

import devs
from devs.data import ImageDataset, ImageSplit
from devs.methods.distribution_matching import DistributionMatching
from devs.runtime import cpu_description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("label", nargs="?", default="")
    parser.add_argument("--shape", type=int, nargs=3, default=(1, 28, 28), metavar=("C", "H", "W"))
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--formation", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or auto (DM's embeddings under autocast)")
    parser.add_argument("--results", help="append the result as one JSON line here")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.images, *args.shape, generator=generator)
    labels = torch.arange(args.images) % 10
    data = ImageDataset(name="fake", classes=tuple(str(i) for i in range(10)), train=ImageSplit(images, labels),
                        test=ImageSplit(images[:100], labels[:100]))
    settings = dict(ipc=args.ipc, formation=args.formation, device=args.device, progress=False,
                    precision=args.precision)
    first = DistributionMatching(iterations=1, **settings).fit(data).elapsed_s_
    start = time.perf_counter()
    DistributionMatching(iterations=args.iterations, **settings).fit(data)
    if args.device != "cpu":
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    print(f"{args.label} {args.iterations} DM iterations {total:.1f} s ({1000 * total / args.iterations:.0f} ms each; "
          f"a 1-iteration fit alone: {first:.2f} s)", flush=True)
    if args.results:
        row = {"label": args.label, "shape": list(args.shape), "images": args.images, "ipc": args.ipc,
               "formation": args.formation, "iterations": args.iterations, "device": args.device,
               "precision": args.precision, "cpu": cpu_description(),
               "seconds": total, "ms_per_iteration": 1000 * total / args.iterations, "first_fit_s": first,
               "devs_source": str(Path(devs.__file__).resolve().parent),
               "command": shlex.join([sys.executable, *sys.argv]),
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
