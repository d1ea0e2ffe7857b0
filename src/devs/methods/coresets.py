"""Coreset baselines: real training images chosen per class, with one-hot labels."""

from __future__ import annotations

from typing import Any

import torch

from ..runtime import make_generator
from .base import DistillationMethod, TrainingData, as_training_data, check_ipc, check_number, register_method


def balanced_counts(total: int, num_classes: int) -> list[int]:
    """Split ``total`` images over the classes as evenly as possible (the first classes get the remainder)."""
    base, extra = divmod(total, num_classes)
    return [base + (1 if cls < extra else 0) for cls in range(num_classes)]


def random_subset_indices(labels: torch.Tensor, counts: list[int], seed: int) -> torch.Tensor:
    """Indices of ``counts[c]`` distinct random images of each class c, grouped by class."""
    generator = make_generator(seed)
    chosen = []
    for cls, count in enumerate(counts):
        members = torch.nonzero(labels == cls).flatten()
        if count > len(members):
            raise ValueError(f"class {cls} has {len(members)} images, fewer than {count}")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(chosen)


@register_method("random")
class RandomSubset(DistillationMethod):
    """A class-balanced random subset of the real training images: the baseline every table needs."""

    name = "random"

    def __init__(self, ipc: int = 10, *, random_state: int = 0) -> None:
        self.ipc = ipc
        self.random_state = random_state

    def fit(self, data: Any) -> "RandomSubset":
        data: TrainingData = as_training_data(data)
        check_ipc("RandomSubset", self.ipc, data)
        check_number("RandomSubset", "random_state", self.random_state, integer=True, low=0)
        index = random_subset_indices(data.labels, [self.ipc] * data.num_classes, self.random_state)
        self.indices_ = index
        self.distilled_ = self._result(data, data.images[index], data.one_hot()[index], self.random_state)
        return self
