"""Where datasets live on disk, and the decode cache: an ImageFolder is decoded once, then read as .npz.

``$DEVS_CACHE_DIR`` holds the cache, ``$DEVS_DATA_DIR`` the downloaded datasets (both default to
``~/.cache/devs``). A cache entry is keyed by the resolved path with the size and mtime of its files.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..runtime import atomic_path
from .dataset import ImageDataset
from .imagefolder import _decode_imagefolder
from .npz import _dataset_from_arrays, _read_npz

logger = logging.getLogger(__name__)


def _cache_dir() -> Path:
    """``$DEVS_CACHE_DIR`` or ``~/.cache/devs``."""
    return Path(os.environ.get("DEVS_CACHE_DIR") or Path.home() / ".cache" / "devs").expanduser()


def _data_dir() -> Path:
    """``$DEVS_DATA_DIR`` or ``~/.cache/devs``: where downloaded datasets live."""
    return Path(os.environ.get("DEVS_DATA_DIR") or Path.home() / ".cache" / "devs").expanduser()


_CACHE_VERSION = "imagefolder-v1"


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to a temp file in the same directory, renamed into place with the umask's permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp_path, open(temp_path, "wb") as f:
        np.savez(f, **arrays)


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
