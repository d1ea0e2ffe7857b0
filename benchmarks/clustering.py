"""Clustering time of devs's k-means backends: scikit-learn's MiniBatchKMeans (the paper's) against faiss.

Features are synthetic but shaped like DEvS's: --points x --dim non-negative vectors (ReLU of a Gaussian
mixture with 100 centres, like pooled ConvNet-3 trunk features of 50,000 CIFAR-10 images, 2,048-d), or with
--extractor the real trunk features of a dataset under a saved DEvS extractor (computed once, cached in
--cache). Each (backend, k) runs in a subprocess under --timeout seconds, so one slow case cannot stall the
table. Appends one JSON line per case to --results and prints a markdown table.

    python benchmarks/clustering.py --ks 500 10000 --results benchmarks/results/clustering.jsonl
    python benchmarks/clustering.py --ks 10 100 500 --backends torch sklearn --dataset .data/cifar10-jpeg.tar.gz \
        --holdout 5000 --extractor runs/.../extractor1-HASH.safetensors --results benchmarks/results/clustering.jsonl
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from devs_table import machine


def features(points: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, dim)).astype(np.float32)
    noise = rng.normal(scale=2.0, size=(points, dim)).astype(np.float32)
    return np.maximum(centres[rng.integers(0, 100, points)] + noise, 0.0)


def real_features(dataset: str, holdout: int | None, extractor: str, cache: Path) -> np.ndarray:
    """Trunk features of the training images under a saved DEvS extractor (default ExtractorSpec), cached."""
    if cache.exists():
        return np.load(cache)
    import torch
    from safetensors.torch import load_file

    from devs.data import holdout_split, load_dataset
    from devs.methods.extractor import ExtractorSpec
    from devs.train import Normalizer, extract_features

    data = load_dataset(dataset)
    data = holdout_split(data, holdout, seed=0) if holdout else data
    net = ExtractorSpec().build(data.train.images[:1], data.num_classes, seed=0)
    net.load_state_dict(load_file(extractor))
    cpu = torch.device("cpu")
    values = extract_features(net, data.train.images, Normalizer(*data.channel_stats(), cpu), cpu).numpy()
    np.save(cache, values)
    return values


def one_case(backend: str, k: int, points: int, dim: int, cache: Path | None = None, device: str = "cpu") -> dict:
    from devs.cluster import kmeans_assign

    data = np.load(cache) if cache else features(points, dim)
    dim = data.shape[1]
    start = time.perf_counter()
    assignments = kmeans_assign(data, k, seed=0, backend=backend, device=device)
    if backend == "torch" and device != "cpu":
        import torch

        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    # Inertia per point: the clustering quality beside its cost.
    centroids = np.zeros((k, dim), dtype=np.float64)
    np.add.at(centroids, assignments, data)
    centroids /= np.maximum(np.bincount(assignments, minlength=k), 1)[:, None]
    inertia = float(((data - centroids[assignments]) ** 2).sum(1).mean())
    return {"seconds": seconds, "inertia_per_point": inertia, "clusters": int(len(np.unique(assignments)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--ks", type=int, nargs="+", default=[500, 10_000])
    parser.add_argument("--backends", nargs="+", default=["sklearn", "faiss"])
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--device", default="cpu", help="where the torch backend computes (the others run on the CPU)")
    parser.add_argument("--results")
    parser.add_argument("--dataset", help="with --extractor: the data set whose training images are featurised")
    parser.add_argument("--holdout", type=int, help="with --dataset: hold out N images first, as devs --holdout does")
    parser.add_argument("--extractor", help="a DEvS extractor checkpoint (extractor1-*.safetensors)")
    parser.add_argument("--cache", default="runs/clustering-features.npy", help="where real features are cached")
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)  # internal: BACKEND K, run in a subprocess
    args = parser.parse_args()
    cache = Path(args.cache) if args.extractor else None
    if args.case:
        print(json.dumps(one_case(args.case[0], int(args.case[1]), args.points, args.dim, cache, args.device)))
        return
    source = "synthetic"
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        args.points, args.dim = real_features(args.dataset, args.holdout, args.extractor, cache).shape
        source = f"{args.dataset} (holdout {args.holdout}) trunk features, extractor {Path(args.extractor).name}"
    rows = []
    for k in args.ks:
        for backend in args.backends:
            command = [sys.executable, __file__, "--case", backend, str(k), "--points", str(args.points),
                       "--dim", str(args.dim), "--device", args.device]
            command += ["--extractor", args.extractor, "--cache", str(cache)] if cache else []
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                result = {"seconds": None, "timed_out_after_s": args.timeout}
            except subprocess.CalledProcessError as error:
                result = {"seconds": None, "error": error.stderr.strip().splitlines()[-1:]}
            row = {"backend": backend, "k": k, "points": args.points, "dim": args.dim, "features": source,
                   "device": args.device, **result,
                   "machine": machine(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            rows.append(row)
            if args.results:
                with Path(args.results).open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"| k | backend | seconds | inertia per point |  ({args.points} x {args.dim} features)")
    print("|---|---|---|---|")
    for row in rows:
        seconds = f"{row['seconds']:.1f}" if row["seconds"] is not None else (
            f"> {row['timed_out_after_s']:.0f} (stopped)" if "timed_out_after_s" in row else f"error: {row.get('error')}")
        inertia = f"{row['inertia_per_point']:.0f}" if "inertia_per_point" in row else ""
        print(f"| {row['k']} | {row['backend']} | {seconds} | {inertia} |")


if __name__ == "__main__":
    main()
