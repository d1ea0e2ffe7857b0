"""Batched augmentation as tensor ops: random shift, horizontal flip, mixup, CutMix.

All functions take a whole batch and a local generator; there are no per-image Python loops.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by an independent integer offset in [-max_shift, max_shift] on both axes.

    Uncovered pixels become 0, which is the dataset mean for normalized inputs.
    """
    if max_shift <= 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (max_shift, max_shift, max_shift, max_shift))
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator, device=generator.device)
    offsets = offsets.to(images.device)
    rows = (offsets[0][:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (offsets[1][:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator, device=generator.device) < 0.5
    flip = flip.to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(-1), images)


def mixup(
    images: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    generator: torch.Generator,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018): convex combination of the batch with a shuffled copy of itself.

    One mixing weight per batch, drawn from Beta(alpha, alpha); targets are probability vectors.
    """
    if alpha <= 0:
        return images, targets
    lam = float(rng.beta(alpha, alpha))
    order = torch.randperm(images.shape[0], generator=generator, device=generator.device).to(images.device)
    mixed_images = lam * images + (1.0 - lam) * images[order]
    mixed_targets = lam * targets + (1.0 - lam) * targets[order]
    return mixed_images, mixed_targets


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """CutMix's box (Yun et al. 2019) for mixing weight ``lam``: sides ``int(side * sqrt(1 - lam))``
    around a uniform centre, clipped to the image, so the kept share can exceed ``lam`` at the edges.
    Returns (top, bottom, left, right)."""
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


def cutmix(
    images: torch.Tensor,
    targets: torch.Tensor,
    prob: float,
    beta: float,
    generator: torch.Generator,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix as IDC evaluates with it: with probability ``prob`` per batch, one box (``cutmix_box``,
    weight from Beta(beta, beta)) of every image is pasted from a shuffled copy of the batch, and the
    targets (probability vectors) mix by the area each image keeps. Otherwise the batch is unchanged."""
    if prob <= 0 or float(rng.random()) >= prob:
        return images, targets
    lam = float(rng.beta(beta, beta))
    height, width = images.shape[-2:]
    top, bottom, left, right = cutmix_box(height, width, lam, rng)
    order = torch.randperm(images.shape[0], generator=generator, device=generator.device).to(images.device)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[order, :, top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (height * width)
    return mixed, kept * targets + (1.0 - kept) * targets[order]
