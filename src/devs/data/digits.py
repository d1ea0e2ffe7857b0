"""scikit-learn's bundled 8x8 digits, registered as ``digits`` (offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .dataset import ImageDataset, ImageSplit, _labels
from .load import register_dataset


@register_dataset("digits")
def load_digits(root: Path | None = None, download: bool = False) -> ImageDataset:
    """scikit-learn's 8x8 digits with a fixed stratified 75/25 split (offline; root is ignored)."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = torch.from_numpy((bunch.images / 16.0).astype(np.float32)[:, None])
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return ImageDataset(
        name="digits",
        classes=tuple(str(k) for k in range(10)),
        train=ImageSplit(images[train_idx], _labels(labels[train_idx])),
        test=ImageSplit(images[test_idx], _labels(labels[test_idx])),
        flip=False,  # mirrored digits are not digits (the DC code's README drops flip for MNIST and SVHN)
    )
