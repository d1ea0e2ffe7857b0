"""Image-classification datasets as whole tensors: registered loaders, ImageFolder, and .npz files.

``load_dataset`` takes a registered name (``digits``, ``fashion-mnist``, ``cifar10``) or a path to
an ImageFolder directory ``ROOT/{train,test}/<class>/<image>``, a ``.tar``/``.tar.gz``/``.tgz`` of
one, or a ``.npz`` file. Every dataset comes back as float32 ``[N, C, H, W]`` images in pixel units
([0, 1], not normalized) and int64 labels, and is validated before it is returned.

Nothing here executes code from the data: IDX and CIFAR binary files are parsed with numpy, ``.npz``
files are read with ``allow_pickle=False``, and the CIFAR python-version pickles go through an
unpickler that only admits numpy's array reconstruction functions.

One module per job, one per source format:

    dataset.py      ImageSplit, ImageDataset, holdout_split, validation and pixel helpers
    load.py         the registry, list_datasets, load_dataset and its path dispatch
    digits.py       scikit-learn's digits          idx.py    IDX files, Fashion-MNIST
    cifar.py        CIFAR-10 batches               npz.py    .npz arrays
    imagefolder.py  ImageFolder directories and tarballs, decoded
    cache.py        data and cache directories, the decode cache
"""

from __future__ import annotations

from .dataset import ImageDataset, ImageSplit, holdout_split
from .load import DATASETS, list_datasets, load_dataset, register_dataset

# Importing the loaders registers them, in this order (the order list_datasets reports).
from .digits import load_digits
from .idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    FASHION_MNIST_SYSTEM_DIR,
    FASHION_MNIST_URL,
    load_fashion_mnist,
    read_idx,
)
from .cifar import CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10_URL, load_cifar10

__all__ = [
    "DATASETS",
    "ImageDataset",
    "ImageSplit",
    "holdout_split",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
