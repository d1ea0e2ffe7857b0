"""An on-disk array store for data sets larger than memory, read a batch of rows at a time.

Layout of a store directory (``devs.store.v1``)::

    store.json                 format, classes, image shape, per-split counts, per-channel mean/std, digest
    <split>/labels.npy         int64 [N] (read with allow_pickle=False: loading never runs code)
    <split>/shard-00000.u8 ... raw C-order uint8 [rows, C, H, W], ``shard_rows`` rows per file

Rows are read with positioned reads (``os.pread``), not memory maps, so the bytes pass through the OS
page cache instead of staying in this process's resident memory: a process streaming a 10 GB store
keeps only the batch it is working on. ``ArrayStore`` answers the few tensor operations devs uses on
training images (``len``, ``shape``, ``dtype``, indexing by a slice or an index array, giving float32
in [0, 1]), so training, feature extraction and evaluation read it batch by batch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import DatasetError

FORMAT = "devs.store.v1"
SPLITS = ("train", "test")


def is_store(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / "store.json").is_file()


class RowFiles:
    """Fixed-size rows of one dtype spread over shard files, read by row number with os.pread."""

    def __init__(self, paths: Sequence[Path], shard_rows: int, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.paths = list(paths)
        self.shard_rows = int(shard_rows)
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(row_shape)) * self.dtype.itemsize
        self._descriptors: dict[int, int] = {}

    def __getstate__(self) -> dict[str, Any]:  # file descriptors do not travel to other processes
        return {**self.__dict__, "_descriptors": {}}

    def _descriptor(self, shard: int) -> int:
        if shard not in self._descriptors:
            self._descriptors[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return self._descriptors[shard]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed) as one array [len(rows), *row_shape]."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        # One read per run of consecutive rows within a shard (a slice is a single read per shard).
        breaks = np.flatnonzero((np.diff(sorted_rows) != 1) | (np.diff(sorted_rows // self.shard_rows) != 0)) + 1
        for run in np.split(np.arange(len(rows)), breaks):
            if len(run) == 0:
                continue
            first = int(sorted_rows[run[0]])
            shard, offset = divmod(first, self.shard_rows)
            wanted = len(run) * self.row_bytes
            data = os.pread(self._descriptor(shard), wanted, offset * self.row_bytes)
            if len(data) != wanted:
                raise DatasetError(f"{self.paths[shard]} is shorter than its store.json says; re-create the store.")
            flat[order[run]] = np.frombuffer(data, dtype=np.uint8).reshape(len(run), self.row_bytes)
        return out

    def close(self) -> None:
        for descriptor in self._descriptors.values():
            os.close(descriptor)
        self._descriptors.clear()

    def __del__(self) -> None:
        self.close()


class ArrayStore:
    """One split of a store: uint8 images on disk, labels in memory; ``store[index]`` reads float32 rows."""

    dtype = torch.float32
    ndim = 4

    def __init__(self, files: RowFiles, labels: torch.Tensor, mean: list[float], std: list[float], digest: str,
                 name: str) -> None:
        self.files = files
        self.labels = labels
        self.mean = list(mean)
        self.std = list(std)
        self.digest = digest
        self.name = name
        self.shape = torch.Size([len(labels), *files.row_shape])

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"ArrayStore({self.name!r}, shape={tuple(self.shape)})"

    def rows(self, index: Any) -> np.ndarray:
        """Row numbers for a slice, an int, or an index array/tensor (negative indices allowed)."""
        if isinstance(index, slice):
            return np.arange(*index.indices(len(self)))
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        rows = np.asarray(index, dtype=np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + len(self), rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for a store of {len(self)} images")
        return rows

    def read_uint8(self, index: Any) -> np.ndarray:
        return self.files.read(self.rows(index))

    def __getitem__(self, index: Any) -> torch.Tensor:
        """Float32 images in [0, 1], shape [len(index), C, H, W] (an int gives [C, H, W])."""
        pixels = torch.from_numpy(self.read_uint8(index)).float().div_(255.0)
        return pixels[0] if isinstance(index, (int, np.integer)) else pixels


def open_store(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, ArrayStore]]:
    """The metadata and the splits of a store directory, checked against its files."""
    root = Path(path)
    try:
        meta = json.loads((root / "store.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{root / 'store.json'} is unreadable ({error}); re-create it with 'devs pack'.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DatasetError(f"{root} is not a {FORMAT} store (store.json format {meta.get('format')!r}); "
                           "re-create it with 'devs pack'.")
    try:
        shape = tuple(int(x) for x in meta["image_shape"])
        shard_rows = int(meta["shard_rows"])
        splits = {}
        for split in SPLITS:
            count = int(meta["counts"][split])
            labels = np.load(root / split / "labels.npy", allow_pickle=False)
            if labels.shape != (count,) or labels.dtype != np.int64:
                raise DatasetError(f"{root / split / 'labels.npy'} holds {labels.dtype} {labels.shape}, "
                                   f"expected int64 ({count},); re-create the store with 'devs pack'.")
            shards = [root / split / f"shard-{i:05d}.u8" for i in range(-(-count // shard_rows))]
            row_bytes = int(np.prod(shape))
            for i, shard in enumerate(shards):
                rows = min(shard_rows, count - i * shard_rows)
                if not shard.is_file() or shard.stat().st_size != rows * row_bytes:
                    raise DatasetError(f"{shard} is missing or has the wrong size; re-create the store with 'devs pack'.")
            files = RowFiles(shards, shard_rows, shape, np.uint8)
            splits[split] = ArrayStore(files, torch.from_numpy(labels), meta["mean"], meta["std"],
                                       str(meta["digest"]), f"{meta['name']}/{split}")
    except (KeyError, TypeError, ValueError, OSError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"{root} is not a complete {FORMAT} store ({error!r}); re-create it with 'devs pack'.") from None
    return meta, splits
