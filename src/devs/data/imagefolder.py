"""ImageFolder ``ROOT/{train,test}/<class>/<image>``, as a directory or a tarball, decoded to arrays.

Tarballs are streamed in one pass and never extracted to disk; every image is decoded with Pillow
and must share one size and mode. ``devs pack`` streams the same entries into a store.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..download import check_tar_member, tar_member_parts
from ..errors import DatasetError

_SPLITS = ("train", "test")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


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
