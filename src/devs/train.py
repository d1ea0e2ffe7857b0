"""Training, feature extraction and accuracy for classifiers on whole in-memory tensors.

airbench's habits: the data set is one tensor on the device, normalized once, augmented per batch
with tensor ops; ``train_classifier`` returns the trained net.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .augment import mixup, random_flip, random_shift
from .errors import InvalidParameterError
from .runtime import isolated_rng, make_generator

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainRecipe:
    """How to train one network. Defaults are DC's evaluation protocol without augmentation."""

    epochs: int = 300
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_drop_at: float = 0.5  # multiply the learning rate by 0.1 after this fraction of the epochs (DC)
    max_shift: int = 0  # random shift in pixels, 0 = off
    flip: bool = False  # random horizontal flip
    mixup_alpha: float = 0.0  # 0 = no mixup
    precision: str = "fp32"  # "bf16" runs forward/backward under bfloat16 autocast
    # torch.compile the net: on a 2-core CPU about 1.5x the images/s after 20-50 s of compiling (once per
    # process and architecture), so it pays on long runs only. Results match eager up to float rounding.
    compile: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InvalidParameterError(f"The 'epochs' parameter must be an int in the range [1, inf). Got {self.epochs} instead.")
        if self.batch_size < 1:
            raise InvalidParameterError(f"The 'batch_size' parameter must be an int in the range [1, inf). Got {self.batch_size} instead.")
        if self.lr <= 0:
            raise InvalidParameterError(f"The 'lr' parameter must be > 0. Got {self.lr} instead.")
        if self.precision not in PRECISIONS:
            raise InvalidParameterError(f"Unknown precision {self.precision!r}. Valid: {', '.join(PRECISIONS)}.")

    def replace(self, **changes) -> "TrainRecipe":
        return dataclasses.replace(self, **changes)


class Normalizer:
    """Per-channel (x - mean) / std with the statistics of the source training set."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=device)[None, :, None, None]
        self.std = torch.tensor(list(std), dtype=torch.float32, device=device)[None, :, None, None]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(self.mean.device, torch.float32) - self.mean) / self.std


def _autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_classifier(
    net: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    recipe: TrainRecipe,
    normalizer: Normalizer,
    seed: int,
    device: torch.device,
    progress: str | None = None,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> nn.Module:
    """Train ``net`` on ``images`` (pixel units) and ``targets`` (probability rows) with ``recipe``.

    Soft targets use cross-entropy against probabilities. ``on_batch(index, logits)``, if given, sees the
    row indices of every training batch and the net's (detached) logits on it, as trained (augmented).
    Returns the net in eval mode.
    """
    if len(images) != len(targets):
        raise InvalidParameterError(f"{len(images)} images but {len(targets)} label rows.")
    net = net.to(device)
    data = normalizer(images.to(device))
    targets = targets.to(device, torch.float32)
    generator = make_generator(seed, device if device.type == "cuda" else "cpu")
    beta_rng = np.random.default_rng(seed)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    drop_epoch = int(recipe.epochs * recipe.lr_drop_at)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[drop_epoch], gamma=0.1)
    net.train()
    model = torch.compile(net) if recipe.compile else net  # shares net's parameters
    with isolated_rng(seed, device):  # dropout masks come from the global RNG
        _run_epochs(model, data, targets, recipe, optimizer, scheduler, generator, beta_rng, progress, on_batch)
    net.eval()
    return net


def _run_epochs(net, data, targets, recipe, optimizer, scheduler, generator, beta_rng, progress, on_batch) -> None:
    n = len(data)
    batch_size = min(recipe.batch_size, n)
    device = data.device
    bar = tqdm(range(recipe.epochs), desc=progress, disable=None if progress else True, leave=False, unit="epoch")
    for _ in bar:
        order = torch.randperm(n, generator=generator, device=generator.device).to(device)
        epoch_loss = torch.zeros((), device=device)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            batch, batch_targets = data[index], targets[index]
            batch = random_shift(batch, recipe.max_shift, generator)
            if recipe.flip:
                batch = random_flip(batch, generator)
            batch, batch_targets = mixup(batch, batch_targets, recipe.mixup_alpha, generator, beta_rng)
            with _autocast(recipe.precision, device):
                logits = net(batch)
            if on_batch is not None:
                on_batch(index, logits.detach())
            loss = F.cross_entropy(logits.float(), batch_targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.detach() * len(index)  # no host sync per batch
        scheduler.step()
        if not bar.disable:
            bar.set_postfix(loss=f"{float(epoch_loss) / n:.3f}")


@torch.no_grad()
def _batched(
    net_fn, images: torch.Tensor, normalizer: Normalizer, device: torch.device, batch_size: int, precision: str,
    progress: str | None = None,
):
    outputs = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=progress, disable=None if progress else True, leave=False, unit="batch"):
        batch = normalizer(images[start : start + batch_size].to(device))
        with _autocast(precision, device):
            outputs.append(net_fn(batch).float().cpu())
    return torch.cat(outputs)


def extract_features(
    net: nn.Module,
    images: torch.Tensor,
    normalizer: Normalizer,
    device: torch.device,
    batch_size: int = 1024,
    precision: str = "fp32",
    progress: str | None = None,
) -> torch.Tensor:
    """Flattened trunk features of ``images``, float32 on the CPU."""
    net.eval()
    return _batched(net.features, images, normalizer, device, batch_size, precision, progress)


def predict_logits(
    net: nn.Module,
    images: torch.Tensor,
    normalizer: Normalizer,
    device: torch.device,
    batch_size: int = 1024,
    precision: str = "fp32",
) -> torch.Tensor:
    net.eval()
    return _batched(net, images, normalizer, device, batch_size, precision)


def accuracy(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalizer: Normalizer,
    device: torch.device,
    precision: str = "fp32",
) -> float:
    """Top-1 accuracy in [0, 1]."""
    logits = predict_logits(net, images, normalizer, device, precision=precision)
    return float((logits.argmax(1) == labels.cpu()).float().mean())
