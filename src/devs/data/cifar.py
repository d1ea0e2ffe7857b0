"""CIFAR-10, registered as ``cifar10``: binary batches, or python-version pickles.

Binary batches are parsed with numpy; the python-version pickles go through an unpickler that only
admits numpy's array reconstruction functions.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..download import download_file, safe_extract_tar, verify_file
from ..errors import DatasetError
from .cache import _data_dir
from .dataset import ImageDataset, _split
from .load import register_dataset

logger = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_RECORD = 1 + 3 * 32 * 32


def _cifar_layout(root: Path) -> tuple[str, Path] | None:
    """``("bin" | "py", directory)`` of the first complete CIFAR-10 batch directory under root."""
    for directory in (root / "cifar-10-batches-bin", root):
        if all((directory / f"{name}.bin").is_file() for name in (*_CIFAR_TRAIN, "test_batch")):
            return "bin", directory
    for directory in (root / "cifar-10-batches-py", root):
        if all((directory / name).is_file() for name in (*_CIFAR_TRAIN, "test_batch")):
            return "py", directory
    return None


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise DatasetError(
            f"{path} has {raw.size} bytes, not a positive multiple of the {_CIFAR_RECORD}-byte "
            "CIFAR-10 record; it is truncated or corrupted: delete it and pass --download"
        )
    records = raw.reshape(-1, _CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


# numpy's _reconstruct, wherever this numpy version keeps it (numpy.core or numpy._core)
_ARRAY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and plain containers, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DatasetError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed in CIFAR-10 "
                "batches; the file is not a genuine CIFAR-10 batch (use the binary version)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DatasetError("refusing a pickle with persistent ids in a CIFAR-10 batch")


def _unpickle(path: Path) -> Any:
    """Load a python-version CIFAR batch through the numpy-only unpickler."""
    try:
        with path.open("rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"cannot read CIFAR-10 batch {path}: {exc}; it is corrupted") from exc


def _lookup(mapping: Any, key: str, path: Path) -> Any:
    """``mapping[key]`` for python-2 (bytes) or python-3 (str) pickled dict keys."""
    if isinstance(mapping, dict):
        for candidate in (key.encode(), key):
            if candidate in mapping:
                return mapping[candidate]
    raise DatasetError(f"{path} is not a CIFAR-10 batch: no {key!r} entry")


def _read_cifar_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python-version batch: a dict with 'data' uint8 [N, 3072] and 'labels'."""
    batch = _unpickle(path)
    data, labels = _lookup(batch, "data", path), _lookup(batch, "labels", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3072,):
        raise DatasetError(f"{path}: 'data' is not a uint8 [N, 3072] array")
    labels = np.asarray(labels)
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DatasetError(f"{path}: 'labels' is not {len(data)} integers")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_classes(kind: str, directory: Path) -> tuple[str, ...]:
    """Class names from batches.meta(.txt), or the standard names when the file is absent."""
    if kind == "bin":
        meta = directory / "batches.meta.txt"
        if meta.is_file():
            names = [line.strip() for line in meta.read_text(errors="replace").splitlines()]
            return tuple(name for name in names if name)
    else:
        meta = directory / "batches.meta"
        if meta.is_file():
            names = _lookup(_unpickle(meta), "label_names", meta)
            return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return CIFAR10_CLASSES


@register_dataset("cifar10")
def load_cifar10(root: Path | None = None, download: bool = False) -> ImageDataset:
    """CIFAR-10 3x32x32 from the official batches in root (default ``$DEVS_DATA_DIR/cifar10``)."""
    root = root if root is not None else _data_dir() / "cifar10"
    layout = _cifar_layout(root)
    if layout is None and download:
        archive = root / "cifar-10-binary.tar.gz"
        if not verify_file(archive, md5=CIFAR10_MD5):
            download_file(CIFAR10_URL, archive, md5=CIFAR10_MD5)
        safe_extract_tar(archive, root)
        layout = _cifar_layout(root)
    if layout is None:
        raise DatasetError(
            f"CIFAR-10 not found or corrupted in {root} (expected cifar-10-batches-bin/ with "
            "data_batch_1.bin ... data_batch_5.bin and test_batch.bin); pass --data-root DIR "
            "or pass --download (163 MB)"
        )
    kind, directory = layout
    logger.info("reading CIFAR-10 (%s batches) from %s", kind, directory)
    read = _read_cifar_bin if kind == "bin" else _read_cifar_py
    suffix = ".bin" if kind == "bin" else ""
    train = [read(directory / f"{name}{suffix}") for name in _CIFAR_TRAIN]
    test_images, test_labels = read(directory / f"test_batch{suffix}")
    return ImageDataset(
        name="cifar10",
        classes=_cifar_classes(kind, directory),
        train=_split(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
        test=_split(test_images, test_labels),
    )
