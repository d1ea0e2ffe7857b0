"""The IDX file reader and Fashion-MNIST, registered as ``fashion-mnist``.

IDX files are parsed with numpy (gzipped or not); nothing in them is executed.
"""

from __future__ import annotations

import gzip
import logging
import struct
import zlib
from pathlib import Path

import numpy as np

from ..download import download_file
from ..errors import DatasetError
from .cache import _data_dir
from .dataset import ImageDataset, _split
from .load import register_dataset

logger = logging.getLogger(__name__)

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
