"""Pilot for multi-formation: train on CIFAR-10 validation images reduced to half size and scaled back up.

Decoding a 2 x 2 multi-formation set gives exactly such images, so this measures what packing would give
before any packing code exists. ``random``: 40 random real images per class (the pixels of 10 per class);
a file path: the images of that distilled set (e.g. devs+ at 40 per class). One net, dc protocol, on the
5,000-image validation split (``--holdout 5000``, seed 0), with torch.compile.

    python benchmarks/formation_pilot.py random 1
    python benchmarks/formation_pilot.py runs/plus40.safetensors 1
"""
import sys
import time
from pathlib import Path

import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from devs.data import holdout_split, load_dataset  # noqa: E402
from devs.evaluate import evaluate  # noqa: E402
from devs.formation import decode, downsample, encode  # noqa: E402
from devs.io import DistilledSet, load_distilled  # noqa: E402
from devs.methods.coresets import random_subset_indices  # noqa: E402

ds = holdout_split(load_dataset(str(Path(__file__).resolve().parents[1] / ".data/cifar10-jpeg.tar.gz")), 5000, seed=0)
mean, std = ds.channel_stats()


def lowres(x, f=2):
    """What training sees after packing ``x`` f x f: reduced, then decoded back to full size."""
    return decode(encode(downsample(x, f), f), f)


def run(name, images, labels):
    s = DistilledSet(images=images, labels=labels, classes=ds.classes, mean=mean, std=std, method=name)
    t = time.time()
    r = evaluate(s, ds, protocol="dc", runs=int(sys.argv[2]) if len(sys.argv) > 2 else 1, compile=True, progress=False)
    print(name, len(images), r.summary(), r.accuracies, f"{time.time()-t:.0f}s", flush=True)


what = sys.argv[1]
if what == "random":
    y = ds.train.labels
    idx = random_subset_indices(y, [40] * 10, seed=0)
    x = ds.train.images[idx].float()
    run("random40-lowres", lowres(x), F.one_hot(y[idx], 10).float())
else:
    s = load_distilled(what)
    run(what + "-lowres", lowres(s.images), s.labels)
