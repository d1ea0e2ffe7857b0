"""The containers every loader returns, and the checks and conversions every loader shares.

``ImageSplit`` and ``ImageDataset`` hold float32 ``[N, C, H, W]`` images in pixel units ([0, 1]) and
int64 labels; ``holdout_split`` holds out a validation split from the training images; ``_validate``
checks what every loader promises before ``load_dataset`` returns a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DatasetError
from ..store import ArrayStore


@dataclass(frozen=True)
class ImageSplit:
    """One split: float32 images ``[N, C, H, W]`` in [0, 1] and int64 labels ``[N]``.

    ``images`` is a tensor, or an ``ArrayStore`` (a packed store on disk, read a batch at a time).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.labels.ndim != 1:
            raise DatasetError(
                f"an ImageSplit needs images [N, C, H, W] and labels [N]; got images "
                f"{tuple(self.images.shape)} and labels {tuple(self.labels.shape)}"
            )
        if self.images.shape[0] != self.labels.shape[0]:
            raise DatasetError(
                f"an ImageSplit has {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image-classification dataset with a train and a test split."""

    name: str
    classes: tuple[str, ...]
    train: ImageSplit
    test: ImageSplit
    # Whether a horizontal flip keeps an image's class: not for digits (a mirrored 2, 3, 7 is no digit), so
    # no method or protocol flips them; a path dataset says so with --no-flip.
    flip: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and (population) std of the train images, in pixel units."""
        if isinstance(self.train.images, ArrayStore):  # computed once, when the store was packed
            return list(self.train.images.mean), list(self.train.images.std)
        std, mean = torch.std_mean(self.train.images, dim=(0, 2, 3), correction=0)
        return mean.tolist(), std.tolist()


def holdout_split(dataset: ImageDataset, size: int, seed: int = 0) -> ImageDataset:
    """Replace the test split by ``size`` class-stratified training images held out from training.

    Settings are chosen on this validation split, never on the test split.
    """
    from sklearn.model_selection import train_test_split

    if isinstance(dataset.train.images, ArrayStore):
        raise DatasetError(
            f"--holdout copies the training images in memory, which a store ({dataset.name!r}) exists to avoid; "
            "pack a store whose test/ folder holds the validation images instead."
        )
    labels = dataset.train.labels.numpy()
    if not dataset.num_classes <= size <= len(labels) - dataset.num_classes:
        raise DatasetError(
            f"A holdout of {size} images must lie between {dataset.num_classes} and "
            f"{len(labels) - dataset.num_classes} for {dataset.name!r}."
        )
    keep, held = train_test_split(np.arange(len(labels)), test_size=size, stratify=labels, random_state=seed)
    keep, held = torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(held))
    return ImageDataset(
        name=f"{dataset.name}-holdout{size}",
        classes=dataset.classes,
        train=ImageSplit(dataset.train.images[keep], dataset.train.labels[keep]),
        test=ImageSplit(dataset.train.images[held], dataset.train.labels[held]),
        flip=dataset.flip,
    )


def _validate(dataset: ImageDataset, source: str) -> None:
    """Check what every loader promises; raise DatasetError saying what is wrong."""
    problems = []
    if dataset.num_classes < 2:
        problems.append(f"it has {dataset.num_classes} class(es); at least 2 are needed")
    for split_name, split in (("train", dataset.train), ("test", dataset.test)):
        if len(split) == 0:
            problems.append(f"the {split_name} split is empty")
            continue
        if split.images.dtype != torch.float32 or split.labels.dtype != torch.int64:
            problems.append(
                f"the {split_name} split has {split.images.dtype} images and {split.labels.dtype} "
                "labels; expected float32 and int64"
            )
            continue
        low, high = int(split.labels.min()), int(split.labels.max())
        if low < 0 or high >= dataset.num_classes:
            problems.append(
                f"the {split_name} labels span [{low}, {high}] but there are "
                f"{dataset.num_classes} classes (labels must be in [0, {dataset.num_classes}))"
            )
    if len(dataset.train) and len(dataset.test):
        if dataset.train.images.shape[1:] != dataset.test.images.shape[1:]:
            problems.append(
                f"train images are {tuple(dataset.train.images.shape[1:])} but test images are "
                f"{tuple(dataset.test.images.shape[1:])}"
            )
    if problems:
        raise DatasetError(f"dataset {source!r} is not usable: " + "; ".join(problems))


def _pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` array -> float32 tensor in [0, 1]."""
    array = np.ascontiguousarray(images, dtype=np.uint8)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(torch.float32).div_(255.0)


def _labels(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(labels, dtype=np.int64))


def _split(images_nchw: np.ndarray, labels: np.ndarray) -> ImageSplit:
    return ImageSplit(_pixels(images_nchw), _labels(labels))
