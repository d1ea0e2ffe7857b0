"""``devs pack``: write any loadable data set, or an ImageFolder streamed one image at a time, as a store.

The store (see ``devs.store``) is what a data set larger than memory is distilled from: images are kept as
uint8 on disk, optionally resized (e.g. CIFAR-10 at 128 px is 2.5 GB as uint8 and 9.8 GB as float32), and
read a batch at a time. Packing an ImageFolder never holds more than one image and the running statistics;
the finished store appears atomically (a crash leaves no half-written store under the final name).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .data import ImageDataset, load_dataset
from .data.imagefolder import _SPLITS, _TAR_SUFFIXES, _decode_image, _dir_entries, _Layout, _tar_entries
from .errors import DatasetError, OutputError
from .runtime import apply_default_mode
from .store import FORMAT, SPLITS, open_store

logger = logging.getLogger(__name__)

DEFAULT_SHARD_ROWS = 4096


class _SplitWriter:
    """Appends uint8 [C, H, W] rows to shard files, with labels, a digest and float64 channel sums."""

    def __init__(self, directory: Path, shard_rows: int) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True)
        self.shard_rows = shard_rows
        self.labels: list[str | int] = []
        self.digest = hashlib.blake2b(digest_size=16)
        self.sums: np.ndarray | None = None
        self.squares: np.ndarray | None = None
        self.pixels_per_channel = 0
        self._file = None

    def append(self, image: np.ndarray, label: str | int) -> None:
        count = len(self.labels)
        if count % self.shard_rows == 0:
            if self._file is not None:
                self._file.close()
            self._file = open(self.directory / f"shard-{count // self.shard_rows:05d}.u8", "wb")  # noqa: SIM115
        data = np.ascontiguousarray(image, dtype=np.uint8)
        raw = data.tobytes()
        self._file.write(raw)
        self.digest.update(raw)
        channels = data.reshape(data.shape[0], -1).astype(np.float64) / 255.0
        if self.sums is None:
            self.sums, self.squares = np.zeros(len(channels)), np.zeros(len(channels))
        self.sums += channels.sum(1)
        self.squares += (channels**2).sum(1)
        self.pixels_per_channel += channels.shape[1]
        self.labels.append(label)

    def finish(self, class_index: dict[str, int] | None) -> np.ndarray:
        if self._file is not None:
            self._file.close()
        labels = np.array([class_index[str(x)] if class_index else int(x) for x in self.labels], dtype=np.int64)
        np.save(self.directory / "labels.npy", labels, allow_pickle=False)
        self.digest.update(labels.tobytes())
        return labels


def _resized(pixels: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 [H, W] or [H, W, 3] -> uint8 [C, size, size] (bicubic), or [C, H, W] unchanged."""
    if size is not None and pixels.shape[:2] != (size, size):
        pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC))
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _dataset_rows(dataset: ImageDataset, split: str) -> Iterator[tuple[np.ndarray, int, str]]:
    images, labels = getattr(dataset, split).images, getattr(dataset, split).labels
    for i in range(len(labels)):
        pixels = (images[i].numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        yield (pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)), int(labels[i]), f"{split}[{i}]"


def pack_store(
    source: str | os.PathLike[str] | ImageDataset,
    out: str | os.PathLike[str],
    size: int | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    root: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``source`` as a store at ``out`` and return ``out``.

    ``source``: an ImageFolder directory or tarball (streamed, never loaded whole), a registered data set
    name or a .npz (loaded, then written), or an ImageDataset. ``size``: resize every image to
    size x size pixels (bicubic). ``root``: the data root of a registered data set.
    """
    out = Path(out)
    if size is not None and size < 1:
        raise DatasetError(f"--size must be a positive number of pixels; got {size}.")
    if out.exists() and not (overwrite and (out / "store.json").is_file()):
        raise OutputError(f"{out} already exists; choose a new folder" +
                          (" (or --overwrite to replace an earlier store)." if (out / "store.json").is_file() else "."))
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        apply_default_mode(temp)
        meta = _write(source, temp, size, shard_rows, root, progress)
        (temp / "store.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        open_store(temp)  # check what was written before it gets its final name
        if out.exists():
            shutil.rmtree(out)
        os.replace(temp, out)
    finally:
        if temp.exists():
            shutil.rmtree(temp)
    return out


def _write(source, temp: Path, size: int | None, shard_rows: int, root, progress: bool) -> dict:
    path = None if isinstance(source, ImageDataset) else Path(source)
    streamed = path is not None and path.exists() and (path.is_dir() or path.name.lower().endswith(_TAR_SUFFIXES))
    writers = {split: _SplitWriter(temp / split, shard_rows) for split in SPLITS}
    if streamed:
        layout = _Layout()
        entries = _tar_entries(path, layout) if path.is_file() else _dir_entries(path, layout)
        rows: Iterable = ((_decode_image(e.data, e.name), e.cls, e.name, e.split) for e in entries)
        name = path.name.split(".")[0]
    else:
        dataset = source if isinstance(source, ImageDataset) else load_dataset(source, root=root)
        rows = ((pixels, label, where, split) for split in SPLITS for pixels, label, where in _dataset_rows(dataset, split))
        name = dataset.name
    shape = None
    for pixels, label, where, split in tqdm(rows, desc=f"packing {name}", unit="img", disable=None if progress else True):
        image = _resized(pixels, size)
        if shape is None:
            shape = image.shape
        elif image.shape != shape:
            raise DatasetError(f"image {where} is {image.shape[2]}x{image.shape[1]} with {image.shape[0]} channel(s) "
                               f"but the first image gave {shape}; pass --size to resize every image to one size.")
        writers[split].append(image, label)
    if streamed:
        missing = [split for split in _SPLITS if not writers[split].labels]
        if missing:
            raise DatasetError(f"{path} has no images under {' or '.join(m + '/' for m in missing)}; expected "
                               "ROOT/train/<class>/<image> and ROOT/test/<class>/<image>.")
        classes = sorted({str(x) for x in writers["train"].labels})
        unknown = sorted({str(x) for x in writers["test"].labels} - set(classes))
        if unknown:
            raise DatasetError(f"{path}: test/ has classes that train/ lacks: {unknown[:3]}; give both the same class folders.")
        index = {cls: k for k, cls in enumerate(classes)}
    else:
        classes, index = list(dataset.classes), None
    labels = {split: writers[split].finish(index) for split in SPLITS}
    train = writers["train"]
    mean = train.sums / train.pixels_per_channel
    std = np.sqrt(np.maximum(train.squares / train.pixels_per_channel - mean**2, 0.0))
    if not streamed:  # the exact statistics of the in-memory set, so both give the same normalization
        mean, std = (np.array(x) for x in dataset.channel_stats()) if size is None else (mean, std)
    digest = hashlib.blake2b(digest_size=16)
    for split in SPLITS:
        digest.update(writers[split].digest.digest())
    return {"format": FORMAT, "name": name if size is None else f"{name}-{size}px", "classes": classes,
            "image_shape": list(shape), "shard_rows": shard_rows,
            "counts": {split: len(labels[split]) for split in SPLITS},
            "mean": [float(x) for x in mean], "std": [float(max(x, 1e-6)) for x in std],
            "digest": digest.hexdigest()}
