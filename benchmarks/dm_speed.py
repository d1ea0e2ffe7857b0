"""Seconds for a few DM iterations on the CPU, on Fashion-MNIST-shaped random data (6,000 1x28x28 images).

    python benchmarks/dm_speed.py LABEL

Run it on two commits, alternating, to compare them (BENCHMARKS.md "Distribution matching on the CPU").
"""

import sys
import time

import torch

from devs.data import ImageDataset, ImageSplit
from devs.methods.matching import DistributionMatching

generator = torch.Generator().manual_seed(0)
images = torch.rand(6000, 1, 28, 28, generator=generator)
labels = torch.arange(6000) % 10
data = ImageDataset(name="fake", classes=tuple(str(i) for i in range(10)), train=ImageSplit(images, labels),
                    test=ImageSplit(images[:100], labels[:100]))
dm = DistributionMatching(ipc=1, iterations=6, device="cpu", progress=False)
start = time.perf_counter()
dm.fit(data)
print(sys.argv[1] if len(sys.argv) > 1 else "", "6 DM iterations %.1f s" % (time.perf_counter() - start))
