"""Image-classification datasets as whole tensors: registered loaders, ImageFolder, and .npz files.

``load_dataset`` takes a registered name (``digits``, ``fashion-mnist``, ``cifar10``) or a path to
an ImageFolder directory ``ROOT/{train,test}/<class>/<image>``, a ``.tar``/``.tar.gz``/``.tgz`` of
one, or a ``.npz`` file. Every dataset comes back as float32 ``[N, C, H, W]`` images in pixel units
([0, 1], not normalized) and int64 labels, and is validated before it is returned.

Nothing here executes code from the data: IDX and CIFAR binary files are parsed with numpy, ``.npz``
files are read with ``allow_pickle=False``, and the CIFAR python-version pickles go through an
unpickler that only admits numpy's array reconstruction functions.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import logging
import lzma
import os
import pickle
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .download import (
    check_tar_member,
    download_file,
    safe_extract_tar,
    tar_member_parts,
    verify_file,
)
from .errors import DatasetError, UnknownNameError
from .registry import Registry
from .store import ArrayStore, is_store, open_store

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "ImageDataset",
    "ImageSplit",
    "holdout_split",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]


# --------------------------------------------------------------------------------------------
# The dataset types
# --------------------------------------------------------------------------------------------


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
    )


DATASETS: Registry[Callable[[Path | None, bool], ImageDataset]] = Registry("dataset")
register_dataset = DATASETS.register

_PATH_HINT = (
    "A path to an ImageFolder directory, a .tar/.tar.gz/.tgz of one, or a .npz file also works."
)
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


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


def _cache_dir() -> Path:
    """``$DEVS_CACHE_DIR`` or ``~/.cache/devs``."""
    return Path(os.environ.get("DEVS_CACHE_DIR") or Path.home() / ".cache" / "devs").expanduser()


def _data_dir() -> Path:
    """``$DEVS_DATA_DIR`` or ``~/.cache/devs``: where downloaded datasets live."""
    return Path(os.environ.get("DEVS_DATA_DIR") or Path.home() / ".cache" / "devs").expanduser()


# --------------------------------------------------------------------------------------------
# digits (scikit-learn, bundled)
# --------------------------------------------------------------------------------------------


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
    )


# --------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files)
# --------------------------------------------------------------------------------------------

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# file stem -> md5 of the official .gz (the Debian package's .gz files differ byte-wise but
# decompress to the same IDX data, so local files are checked by parsing, not by md5)
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12e480ee83cd310",
}
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # ndim -> magic number of unsigned-byte IDX files


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file (gzipped or not) with ``ndim`` dimensions into uint8."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path} is not a valid gzip file ({exc}); it is corrupted") from exc
    if len(raw) < 4:
        raise DatasetError(f"{path} is too short to be an IDX file ({len(raw)} bytes)")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != _IDX_MAGIC[ndim]:
        raise DatasetError(
            f"{path} has IDX magic number {magic:#010x}; expected {_IDX_MAGIC[ndim]:#010x} "
            f"(unsigned bytes, {ndim} dimension(s))"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path} is truncated inside its IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path} declares dimensions {dims} ({expected} bytes of data) but holds "
            f"{len(raw) - header} bytes; it is truncated or corrupted"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_idx(directory: Path, stem: str) -> Path | None:
    """The file for ``stem`` in ``directory``, gzipped or not, with '-idx' or '.idx' spelling."""
    for base in (stem, stem.replace("-idx", ".idx")):
        for name in (f"{base}.gz", base):
            if (directory / name).is_file():
                return directory / name
    return None


def _fashion_mnist_dir(root: Path | None, download: bool) -> Path:
    """Find (or, with ``download``, fill) the directory holding the four IDX files."""
    if root is not None:
        candidates = [root]
    else:
        candidates = [FASHION_MNIST_SYSTEM_DIR, _data_dir() / "fashion-mnist"]
    for directory in candidates:
        if all(_find_idx(directory, stem) for stem in FASHION_MNIST_FILES):
            return directory
    target = candidates[0] if root is not None else candidates[-1]
    if not download:
        searched = " or ".join(str(d) for d in candidates)
        raise DatasetError(
            f"Fashion-MNIST not found or corrupted in {searched}; install the Debian package "
            "dataset-fashion-mnist, pass --data-root DIR, or pass --download"
        )
    for stem, md5 in FASHION_MNIST_FILES.items():
        if _find_idx(target, stem) is None:
            download_file(f"{FASHION_MNIST_URL}{stem}.gz", target / f"{stem}.gz", md5=md5)
    return target


@register_dataset("fashion-mnist")
def load_fashion_mnist(root: Path | None = None, download: bool = False) -> ImageDataset:
    """Fashion-MNIST from its four IDX files, 1x28x28 (the Debian package dir by default)."""
    directory = _fashion_mnist_dir(root, download)
    logger.info("reading Fashion-MNIST from %s", directory)
    splits = []
    for prefix in ("train", "t10k"):
        image_file = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
        label_file = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
        if image_file is None or label_file is None:  # deleted between the check and the read
            raise DatasetError(f"Fashion-MNIST {prefix} files vanished from {directory}")
        try:
            images, labels = read_idx(image_file, 3), read_idx(label_file, 1)
        except DatasetError as exc:
            raise DatasetError(
                f"{exc}; delete it and pass --download, or reinstall dataset-fashion-mnist"
            ) from exc
        if len(images) != len(labels):
            raise DatasetError(
                f"{image_file} holds {len(images)} images but {label_file} holds "
                f"{len(labels)} labels"
            )
        splits.append(_split(images[:, None], labels))
    return ImageDataset("fashion-mnist", FASHION_MNIST_CLASSES, splits[0], splits[1])


# --------------------------------------------------------------------------------------------
# CIFAR-10 (binary batches; python-version pickles through a restricted unpickler)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# .npz arrays (also the ImageFolder cache format)
# --------------------------------------------------------------------------------------------

_NPZ_LAYOUT = (
    "expected keys x_train and x_test (uint8 [N, H, W] or [N, H, W, C] with C 1 or 3), "
    "y_train and y_test (integer [N]), and optionally classes (unicode strings [K])"
)
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz file, refusing pickled (object) arrays."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise DatasetError(f"{path} is a single array, not a .npz archive; {_NPZ_LAYOUT}")
            missing = [key for key in _NPZ_KEYS if key not in npz.files]
            if missing:
                raise DatasetError(
                    f"{path} lacks {', '.join(missing)} "
                    f"(it has {', '.join(npz.files) or 'nothing'}); {_NPZ_LAYOUT}"
                )
            return {key: npz[key] for key in (*_NPZ_KEYS, "classes") if key in npz.files}
    except ValueError as exc:
        raise DatasetError(
            f"{path} holds pickled object arrays, which devs refuses to load ({exc}); {_NPZ_LAYOUT}"
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot read {path}: {exc}; it is not a valid .npz file") from exc


def _dataset_from_arrays(name: str, arrays: dict[str, np.ndarray], source: str) -> ImageDataset:
    """Build a dataset from channels-last uint8 images and integer labels, checking the layout."""
    splits = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        channels_ok = x.ndim == 3 or (x.ndim == 4 and x.shape[3] in (1, 3))
        if x.dtype != np.uint8 or not channels_ok:
            raise DatasetError(f"{source}: x_{split} is {x.dtype} {x.shape}; {_NPZ_LAYOUT}")
        if y.dtype.kind not in "iu" or y.shape != (len(x),):
            raise DatasetError(
                f"{source}: y_{split} is {y.dtype} {y.shape} for {len(x)} images; {_NPZ_LAYOUT}"
            )
        splits[split] = (x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2), y)
    if "classes" in arrays:
        classes = arrays["classes"]
        if classes.dtype.kind != "U" or classes.ndim != 1:
            raise DatasetError(
                f"{source}: classes is {classes.dtype} {classes.shape}; {_NPZ_LAYOUT}"
            )
        class_names = tuple(str(c) for c in classes)
    else:
        labels = [y for _, y in splits.values() if len(y)]
        num_classes = max(int(y.max()) for y in labels) + 1 if labels else 0
        class_names = tuple(str(k) for k in range(num_classes))
    return ImageDataset(name, class_names, _split(*splits["train"]), _split(*splits["test"]))


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to a temp file in the same directory, then os.replace into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# ImageFolder: ROOT/{train,test}/<class>/<image>, as a directory or a tarball
# --------------------------------------------------------------------------------------------

_SPLITS = ("train", "test")
_CACHE_VERSION = "imagefolder-v1"


@dataclass
class _Entry:
    """One image file found in an ImageFolder tree, with its undecoded bytes."""

    split: str
    cls: str
    name: str  # shown in messages
    data: bytes


@dataclass
class _Layout:
    """Class folders seen per split (including empty ones)."""

    class_dirs: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in _SPLITS})
    splits_seen: set[str] = field(default_factory=set)


def _load_imagefolder(path: Path, name: str) -> ImageDataset:
    """Load an ImageFolder directory or tarball, through the decoded-array cache."""
    cache = _cache_dir() / "imagefolder" / f"{name}-{_cache_key(path)}.npz"
    if cache.is_file():
        try:
            dataset = _dataset_from_arrays(name, _read_npz(cache), str(path))
            logger.info("loaded %s from cache %s", path, cache)
            return dataset
        except DatasetError as exc:
            logger.warning("ignoring unreadable cache %s (%s); decoding again", cache, exc)
    logger.info("decoding %s (cached afterwards in %s)", path, cache.parent)
    arrays = _decode_imagefolder(path)
    try:
        _write_npz_atomic(cache, arrays)
    except OSError as exc:
        logger.warning("could not write cache %s (%s); the next load will decode again", cache, exc)
    return _dataset_from_arrays(name, arrays, str(path))


def _cache_key(path: Path) -> str:
    """Hash of the resolved path with size and mtime (of every file, for a directory)."""
    resolved = path.resolve()
    digest = hashlib.sha256(f"{_CACHE_VERSION}\0{resolved}".encode())
    if resolved.is_dir():
        for file in sorted(p for p in resolved.rglob("*") if p.is_file()):
            stat = file.stat()
            relative = file.relative_to(resolved)
            digest.update(f"\0{relative}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    else:
        stat = resolved.stat()
        digest.update(f"\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _decode_imagefolder(path: Path) -> dict[str, np.ndarray]:
    """Decode every image of an ImageFolder directory or tarball into npz-layout arrays."""
    layout = _Layout()
    entries = _tar_entries(path, layout) if path.is_file() else _dir_entries(path, layout)
    return _decode_entries(entries, layout, str(path))


def _dir_entries(root: Path, layout: _Layout) -> Iterator[_Entry]:
    """Walk ``root/{train,test}/<class>/<image>`` (or one folder below root that holds them)."""
    base = root
    if not any((root / split).is_dir() for split in _SPLITS):
        subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subdirs) == 1 and any((subdirs[0] / split).is_dir() for split in _SPLITS):
            base = subdirs[0]
    files: list[tuple[str, str, Path]] = []
    for split in _SPLITS:
        split_dir = base / split
        if not split_dir.is_dir():
            continue
        layout.splits_seen.add(split)
        for cls_dir in sorted(split_dir.iterdir()):
            if cls_dir.name.startswith("."):
                continue
            if not cls_dir.is_dir():
                raise DatasetError(f"{cls_dir} is outside a class folder; {_expected(split)}")
            layout.class_dirs[split].add(cls_dir.name)
            for file in sorted(cls_dir.iterdir()):
                if file.name.startswith("."):
                    continue
                if not file.is_file():
                    raise DatasetError(f"{file} is a nested folder; {_expected(split)}")
                files.append((split, cls_dir.name, file))
    for split, cls, file in files:
        yield _Entry(split, cls, str(file), file.read_bytes())


def _open_decompressed(archive: Path) -> io.BufferedIOBase:
    """``archive`` opened for sequential reading, decompressed by its magic bytes.

    tarfile reads this forward only, one member after another, which is faster than its
    ``r|*`` stream mode and never extracts anything to disk.
    """
    with archive.open("rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(archive, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(archive, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(archive, "rb")
    return archive.open("rb")


def _tar_entries(archive: Path, layout: _Layout) -> Iterator[_Entry]:
    """Stream the members of an ImageFolder tarball in one pass, without extracting to disk."""
    prefix: tuple[str, ...] | None = None
    try:
        with _open_decompressed(archive) as stream, tarfile.open(fileobj=stream, mode="r:") as tf:
            for member in tf:
                check_tar_member(member, archive)
                parts = tar_member_parts(member.name)
                if parts and parts[0] in _SPLITS:
                    this_prefix = ()
                elif len(parts) > 1 and parts[1] in _SPLITS:
                    this_prefix = parts[:1]
                else:
                    continue  # README, top-level folder, ...
                if prefix is None:
                    prefix = this_prefix
                elif this_prefix != prefix:
                    raise DatasetError(
                        f"{archive} holds more than one ImageFolder root "
                        f"({'/'.join(prefix) or '.'} and {'/'.join(this_prefix) or '.'}); "
                        "put one dataset per archive"
                    )
                rest = parts[len(prefix):]
                split = rest[0]
                layout.splits_seen.add(split)
                if member.isdir():
                    if len(rest) == 2:
                        layout.class_dirs[split].add(rest[1])
                    elif len(rest) > 2:
                        raise DatasetError(
                            f"{member.name} in {archive} is a nested folder; {_expected(split)}"
                        )
                    continue
                if rest[-1].startswith("."):
                    continue
                if len(rest) != 3:
                    raise DatasetError(
                        f"{member.name} in {archive} is misplaced; {_expected(split)}"
                    )
                layout.class_dirs[split].add(rest[1])
                data = tf.extractfile(member)
                if data is None:
                    raise DatasetError(f"cannot read {member.name} in {archive}")
                yield _Entry(split, rest[1], f"{member.name} (in {archive})", data.read())
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise DatasetError(
            f"cannot read {archive}: {exc}; it is truncated or not a tarball"
        ) from exc


def _decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode one L or RGB image into uint8 ``[H, W]`` or ``[H, W, 3]``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode not in ("L", "RGB"):
                raise DatasetError(
                    f"image {name} has mode {image.mode}; expected L (grayscale) or RGB: convert "
                    "the images (e.g. with Pillow's Image.convert) and retry"
                )
            return np.asarray(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(
            f"cannot decode image {name}: {exc}; it is corrupt or truncated: replace or delete it"
        ) from exc


def _decode_entries(
    entries: Iterable[_Entry], layout: _Layout, source: str
) -> dict[str, np.ndarray]:
    """Decode every entry, check one shared size and mode, and assemble sorted arrays."""
    found: dict[str, list[tuple[str, str, np.ndarray]]] = {s: [] for s in _SPLITS}
    reference: tuple[tuple[int, ...], str] | None = None  # (array shape, first file)
    for entry in tqdm(entries, desc=f"decoding {Path(source).name}", unit="img", disable=None):
        pixels = _decode_image(entry.data, entry.name)
        if reference is None:
            reference = (pixels.shape, entry.name)
        elif pixels.shape != reference[0]:
            raise DatasetError(
                f"image {entry.name} is {_describe(pixels.shape)} but {reference[1]} is "
                f"{_describe(reference[0])}; all images must share one size and mode: resize or convert them"
            )
        found[entry.split].append((entry.cls, entry.name, pixels))

    missing = [split for split in _SPLITS if split not in layout.splits_seen]
    if missing:
        raise DatasetError(
            f"{source} has no {' or '.join(m + '/' for m in missing)} folder; expected the "
            "ImageFolder layout ROOT/train/<class>/<image> and ROOT/test/<class>/<image>"
        )
    for split in _SPLITS:
        with_images = {cls for cls, _, _ in found[split]}
        empty = sorted(layout.class_dirs[split] - with_images)
        if empty:
            raise DatasetError(f"{source}: class folder {split}/{empty[0]} has no images; add images to it or remove it")
    classes = sorted(layout.class_dirs["train"])
    if len(classes) < 2:
        raise DatasetError(
            f"{source}: train/ has {len(classes)} class folder(s); at least 2 are needed: add a folder per class"
        )
    if set(layout.class_dirs["test"]) != set(classes):
        only_train = sorted(set(classes) - layout.class_dirs["test"])
        only_test = sorted(layout.class_dirs["test"] - set(classes))
        raise DatasetError(
            f"{source}: test/ must have the same class folders as train/ "
            f"(only in train: {only_train or 'none'}; only in test: {only_test or 'none'})"
        )
    index = {cls: k for k, cls in enumerate(classes)}
    arrays: dict[str, np.ndarray] = {"classes": np.array(classes, dtype=str)}
    for split in _SPLITS:
        samples = sorted(found[split], key=lambda s: (s[0], s[1]))
        arrays[f"x_{split}"] = np.stack([pixels for _, _, pixels in samples])
        arrays[f"y_{split}"] = np.array([index[cls] for cls, _, _ in samples], dtype=np.int64)
    return arrays


def _expected(split: str) -> str:
    return f"expected {split}/<class>/<image>"


def _describe(shape: tuple[int, ...]) -> str:
    """``(32, 32, 3)`` -> ``32x32 RGB``; ``(28, 28)`` -> ``28x28 L`` (width x height)."""
    mode = "RGB" if len(shape) == 3 else "L"
    return f"{shape[1]}x{shape[0]} {mode}"
