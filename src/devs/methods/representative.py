"""DREAM's representative real batches (Liu et al., ICCV 2023) for distribution matching.

DM compares each class's synthetic images with a random batch of its real images at every iteration.
DREAM replaces the random batch by representatives: the class's images are clustered by k-means in a
network's feature space into as many clusters as the batch holds, the member nearest each centre joins the
batch, and the clustering is redone every ``every`` iterations (DREAM: 10). Such a batch covers the class
evenly, without the outliers and near-duplicates a random draw brings; DREAM reports that matching then
converges in far fewer iterations.

Two departures, both for cost on small machines: the feature space is fixed for the run (devs+'s DM step
uses DEvS's first extractor, trained on all the data; DM a random ConvNet drawn once from its seed), where
DREAM embeds with the network it is training at that moment; and each clustering takes a random pool of
``POOL_FACTOR`` x the batch from the class instead of the whole class, so that a fixed feature space still
gives new batches. The draws depend only on the seed, the class and the block of ``every`` iterations, so
a resumed run gets the same batches without storing them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..cluster import kmeans_assign, nearest_rows
from ..train import features_without_grad

POOL_FACTOR = 4  # each clustering draws this many times the batch from the class
KMEANS_ITERATIONS = 30  # Lloyd iterations per clustering (it usually settles earlier)
EMBED_ROWS = 1024  # images embedded per call when the run starts


class RepresentativeBatches:
    """Which real images of each class form its batch at each iteration (indices into the training set)."""

    def __init__(self, features: torch.Tensor, members: list[torch.Tensor], batch: int, every: int, seed: int):
        self.features = features  # [N, D] on the CPU, one row per training image
        self.members = members  # per class, the rows of its images
        self.batch = batch
        self.every = every
        self.seed = seed
        self._current: dict[int, tuple[int, torch.Tensor]] = {}  # class -> (block, its rows)

    def rows(self, cls: int, iteration: int) -> torch.Tensor:
        """The rows of class ``cls``'s real batch at ``iteration``."""
        block = iteration // self.every
        if cls in self._current and self._current[cls][0] == block:
            return self._current[cls][1]
        draw_seed = (self.seed * 1_000_003 + block) * 1_009 + cls  # the same batch after a resume
        generator = torch.Generator().manual_seed(draw_seed)
        members = self.members[cls]
        pool = members[torch.randperm(len(members), generator=generator)[: POOL_FACTOR * self.batch]]
        if len(pool) > self.batch:
            features = self.features[pool]
            assignments = torch.as_tensor(kmeans_assign(features, self.batch, seed=draw_seed, backend="torch",
                                                        max_iter=KMEANS_ITERATIONS))
            pool = pool[nearest_rows(features, assignments, self.batch)]
        self._current[cls] = (block, pool)
        return pool


def embed_training_set(net: nn.Module, images, count: int) -> torch.Tensor:
    """The trunk features of rows 0 .. ``count`` - 1, on the CPU: ``images(rows)`` gives them normalized."""
    net.eval()
    rows = torch.arange(count)
    return torch.cat([features_without_grad(net, images(part)).float().cpu() for part in rows.split(EMBED_ROWS)])
