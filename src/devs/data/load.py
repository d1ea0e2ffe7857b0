"""The dataset registry and ``load_dataset``: a registered name, or a path dispatched on its type.

A path is a store written by ``devs pack``, an ImageFolder directory or tarball, or a ``.npz`` file.
The registered loaders live in their own modules (``digits``, ``idx``, ``cifar``) and register
themselves here when ``devs.data`` is imported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import DatasetError, UnknownNameError
from ..registry import Registry
from ..store import is_store, open_store
from .cache import _load_imagefolder
from .dataset import ImageDataset, ImageSplit, _validate
from .imagefolder import _TAR_SUFFIXES
from .npz import _dataset_from_arrays, _read_npz

logger = logging.getLogger(__name__)

DATASETS: Registry[Callable[[Path | None, bool], ImageDataset]] = Registry("dataset")
register_dataset = DATASETS.register
_PATH_HINT = (
    "A path to an ImageFolder directory, a .tar/.tar.gz/.tgz of one, or a .npz file also works."
)


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching a shell-style ``pattern``."""
    return DATASETS.names(pattern)


def load_dataset(
    name_or_path: str | os.PathLike[str], root: str | Path | None = None, download: bool = False
) -> ImageDataset:
    """Load a registered dataset by name, or an ImageFolder directory/tarball or ``.npz`` by path.

    ``root`` and ``download`` apply to registered datasets only. A registered name wins over a
    file of the same name; write ``./digits`` to mean the file.
    """
    spec = os.fspath(name_or_path)
    if spec in DATASETS:
        loader = DATASETS.get(spec)
        dataset = loader(Path(root).expanduser() if root is not None else None, download)
        source = spec
    else:
        path = Path(spec).expanduser()
        looks_like_path = os.sep in spec or spec.endswith((*_TAR_SUFFIXES, ".npz"))
        if not path.exists() and looks_like_path:
            raise DatasetError(
                f"{path} not found; give an existing ImageFolder directory, .tar/.tar.gz or .npz, "
                f"or a registered dataset ({', '.join(DATASETS.names())})."
            )
        if not path.exists():
            message = DATASETS.unknown_message(spec)
            separator = " " if message.endswith("?") else ". "
            raise UnknownNameError(f"{message}{separator}{_PATH_HINT}")
        dataset = _load_path(path)
        source = str(path)
    _validate(dataset, source)
    logger.info(
        "loaded %s: %d train + %d test images of shape %s, %d classes",
        dataset.name,
        len(dataset.train),
        len(dataset.test),
        dataset.image_shape,
        dataset.num_classes,
    )
    return dataset


def _load_path(path: Path) -> ImageDataset:
    """Dispatch a path on its type: directory, tarball or .npz."""
    lower = path.name.lower()
    if path.is_dir() and is_store(path):
        return _load_store(path)
    if path.is_dir():
        return _load_imagefolder(path, path.resolve().name)
    if lower.endswith(".npz"):
        return _dataset_from_arrays(_stem(path), _read_npz(path), str(path))
    if lower.endswith(_TAR_SUFFIXES):
        return _load_imagefolder(path, _stem(path))
    raise DatasetError(
        f"cannot load {path}: not a directory, tarball ({', '.join(_TAR_SUFFIXES)}) or .npz file"
    )


def _load_store(path: Path) -> ImageDataset:
    """A store written by ``devs pack``: its splits stay on disk and are read a batch at a time."""
    meta, splits = open_store(path)
    return ImageDataset(
        name=str(meta["name"]),
        classes=tuple(str(c) for c in meta["classes"]),
        train=ImageSplit(splits["train"], splits["train"].labels),  # type: ignore[arg-type]
        test=ImageSplit(splits["test"], splits["test"].labels),  # type: ignore[arg-type]
    )


def _stem(path: Path) -> str:
    """File name without its dataset suffix: ``cifar10-jpeg.tar.gz`` -> ``cifar10-jpeg``."""
    name = path.name
    for suffix in (*_TAR_SUFFIXES, ".npz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
