"""Export a distilled set as an ImageFolder of PNG files with label files, and import such a folder back.

``export_distilled`` (``devs export FILE --to DIR``) writes::

    DIR/<class folder>/<index>.png   one PNG per image, in the folder of its most likely class
    DIR/labels.csv                   columns: file, then one column per class holding the soft label
    DIR/labels.json                  the same labels plus everything needed to rebuild the set

Pixels in 0..1 become uint8 ``round(255 * x)`` (grayscale PNGs as mode L, colour as RGB); values outside
0..1 are clipped, and labels.json says how many were. Label values are written as repr-precise floats, so
the float32 labels come back bit for bit. Class folder names are sanitized (ASCII letters, digits, ``._-``);
the real class names stay in labels.json.

``import_distilled`` (``devs import DIR --out FILE``) rebuilds the set: labels.json is the source of truth
for labels and metadata (labels.csv is for other tools and is not read), the images come from the PNG
files it names, and every field and file is checked. Nothing here runs code from data: plain json and
Pillow only.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
import shutil
import tempfile
import unicodedata
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from .errors import DistilledFileError, OutputError
from .io import DistilledSet
from .runtime import apply_default_mode

logger = logging.getLogger(__name__)

FOLDER_FORMAT = "devs.imagefolder.v1"
LABELS_JSON = "labels.json"
LABELS_CSV = "labels.csv"
MODES = {1: "L", 3: "RGB"}  # channels -> PIL mode
MAX_FOLDER_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_REEXPORT = "re-export the set with devs export"


# --- class folder names ---------------------------------------------------------------------------------


def _slug(name: str) -> str:
    """A folder name made of ASCII letters, digits and ``._-`` only: never empty, '..', hidden or reserved."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()  # 'café' -> 'cafe'
    slug = _UNSAFE.sub("_", ascii_name).strip("._-")[:MAX_FOLDER_NAME].rstrip("._-") or "class"
    return f"_{slug}" if slug.split(".")[0].upper() in _WINDOWS_RESERVED else slug


def class_folders(classes: tuple[str, ...] | list[str]) -> list[str]:
    """One safe folder name per class; if two would clash (ignoring case), every name gets its class index."""
    slugs = [_slug(name) for name in classes]
    if len({slug.casefold() for slug in slugs}) < len(slugs):
        width = len(str(len(slugs) - 1))
        slugs = [f"{index:0{width}d}-{slug}" for index, slug in enumerate(slugs)]
    return slugs


# --- export -----------------------------------------------------------------------------------------------


def _to_uint8(images: torch.Tensor) -> tuple[np.ndarray, dict[str, Any]]:
    """[N, C, H, W] floats in 0..1 -> uint8 [N, H, W, C] (rounded, clipped), plus what clipping did."""
    channels = images.shape[1]
    if channels not in MODES:
        raise DistilledFileError(
            f"Only grayscale (1 channel) or RGB (3 channel) images can be exported as PNG; this set has {channels}."
        )
    pixels = images.detach().to("cpu", torch.float64).numpy()
    outside = int(((pixels < 0) | (pixels > 1)).sum())
    scaled = np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    clipping = {"clipped_pixels": outside, "pixel_range": [float(pixels.min()), float(pixels.max())]}
    return scaled, clipping


def _image_files(distilled: DistilledSet, folders: list[str]) -> list[str]:
    """Relative POSIX path of each image: ``<folder of its most likely class>/<zero-padded index>.png``."""
    width = len(str(len(distilled) - 1))
    hard = distilled.hard_labels.tolist()
    return [f"{folders[k]}/{index:0{width}d}.png" for index, k in enumerate(hard)]


def _write_pngs(pixels: np.ndarray, files: list[str], root: Path) -> None:
    """One PNG per uint8 [H, W, C] array: mode L for one channel, RGB for three."""
    for array, file in zip(pixels, files):
        path = root / file
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path, format="PNG")


def _write_csv(path: Path, classes: tuple[str, ...], files: list[str], labels: list[list[float]]) -> None:
    """labels.csv: a header ``file, <class>...`` and one row per image with repr-precise label values."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", *classes])
        writer.writerows([file, *(repr(value) for value in row)] for file, row in zip(files, labels))


def _labels_document(distilled: DistilledSet, folders: list[str], files: list[str], labels: list[list[float]],
                     clipping: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to rebuild the set, with one ``{file, label}`` entry per image in row order."""
    return {
        "format": FOLDER_FORMAT,
        "classes": list(distilled.classes),
        "class_folders": folders,
        "image_shape": list(distilled.image_shape),
        "pixel_encoding": "PNG uint8; pixel value = PNG value / 255",
        **clipping,
        "mean": distilled.mean,
        "std": distilled.std,
        "dataset": distilled.dataset,
        "method": distilled.method,
        "config": distilled.config,
        "seed": distilled.seed,
        "source_train_size": distilled.source_train_size,
        "devs_version": distilled.devs_version,
        "created": distilled.created,
        # >1: each PNG holds formation x formation training images (devs.formation); train on the decoded ones
        "formation": distilled.formation,
        # Only for a set distilled with ZCA whitening: its description (devs.zca), to evaluate with
        **({"zca": distilled.zca} if distilled.zca is not None else {}),
        "images": [{"file": file, "label": row} for file, row in zip(files, labels)],
    }


def _json_text(document: dict[str, Any]) -> str:
    """JSON with one line per top-level field and one line per image entry (readable, and small diffs)."""
    dump = lambda value: json.dumps(value, ensure_ascii=False)  # noqa: E731
    fields = [f" {dump(key)}: {dump(value)}" for key, value in document.items() if key != "images"]
    entries = ",\n".join(f"  {dump(entry)}" for entry in document["images"])
    return "{\n" + ",\n".join([*fields, f' "images": [\n{entries}\n ]']) + "\n}\n"


def _check_destination(directory: Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty folder unless ``overwrite`` (and then only a previous export)."""
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory} is a file; give a directory path for --to.")
    if not directory.is_dir() or not any(directory.iterdir()):
        return
    if not overwrite:
        raise OutputError(f"{directory} exists and is not empty; choose another --to directory or pass --overwrite.")
    if not (directory / LABELS_JSON).is_file():
        raise OutputError(f"{directory} is not empty and has no {LABELS_JSON}, so it is not a devs export; "
                          "--overwrite only replaces an earlier export: remove it yourself or choose another --to.")


@contextlib.contextmanager
def _staging_dir(directory: Path) -> Iterator[Path]:
    """A fresh hidden folder next to ``directory``, removed afterwards unless it was renamed into place."""
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    except OSError as error:
        raise OutputError(f"Cannot write to {directory.parent}: {error.strerror}; choose a writable --to.") from None
    try:
        apply_default_mode(staging)
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, directory: Path) -> None:
    """Rename the finished folder to ``directory``, moving an existing one aside first and deleting it after.

    Readers see the old folder or the complete new one, never a partial one (between the two renames the
    path briefly does not exist).
    """
    old = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.old") if directory.exists() else None
    try:
        if old is not None:
            os.rename(directory, old)
        try:
            os.rename(staging, directory)
        except OSError:
            if old is not None:
                os.rename(old, directory)
            raise
    except OSError as error:
        raise OutputError(f"Cannot create {directory}: {error.strerror}; choose another --to directory.") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_distilled(distilled: DistilledSet, directory: str | Path, overwrite: bool = False) -> Path:
    """Write ``distilled`` as PNG files in an ImageFolder layout plus labels.csv and labels.json.

    Everything is written into a temporary folder next to ``directory`` and renamed into place, so a failure
    leaves no partial export. A non-empty ``directory`` is refused unless ``overwrite`` is set (and then only
    if it holds a labels.json, i.e. is an earlier export).
    """
    directory = Path(directory)
    _check_destination(directory, overwrite)
    pixels, clipping = _to_uint8(distilled.images)
    if clipping["clipped_pixels"]:
        logger.warning("%d pixel values outside 0..1 were clipped to 0..1 (recorded in %s as clipped_pixels)",
                       clipping["clipped_pixels"], LABELS_JSON)
    folders = class_folders(distilled.classes)
    files = _image_files(distilled, folders)
    labels = distilled.labels.detach().to("cpu", torch.float32).tolist()  # exact float32 values as Python floats
    with _staging_dir(directory) as staging:
        _write_pngs(pixels, files, staging)
        _write_csv(staging / LABELS_CSV, distilled.classes, files, labels)
        document = _labels_document(distilled, folders, files, labels, clipping)
        (staging / LABELS_JSON).write_text(_json_text(document), encoding="utf-8")
        _move_into_place(staging, directory)
    return directory


# --- import -----------------------------------------------------------------------------------------------


def _read_document(directory: Path) -> dict[str, Any]:
    """Parse DIR/labels.json (plain json) and check that it is a devs export."""
    if not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "not found"
        raise DistilledFileError(f"{directory} {problem}; give a folder written by devs export.")
    path = directory / LABELS_JSON
    if not path.is_file():
        raise DistilledFileError(f"{directory} has no {LABELS_JSON}; give a folder written by devs export.")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DistilledFileError(f"{path} is not valid JSON ({error}); restore it or {_REEXPORT}.") from None
    if not isinstance(document, dict) or document.get("format") != FOLDER_FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise DistilledFileError(f"{path}: 'format' is {found!r}, expected {FOLDER_FORMAT!r}; {_REEXPORT}.")
    return document


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "classes": (list,), "class_folders": (list,), "image_shape": (list,), "images": (list,),
    "mean": (list,), "std": (list,), "config": (dict,), "dataset": (str,), "method": (str,),
    "devs_version": (str,), "created": (str,), "seed": (int, type(None)), "source_train_size": (int, type(None)),
}


def _check_fields(document: dict[str, Any], path: Path) -> None:
    """Every field import needs is present with the right JSON type."""
    for key, types in _FIELD_TYPES.items():
        value = document.get(key)
        if key not in document or not isinstance(value, types) or isinstance(value, bool):
            kinds = " or ".join("null" if kind is type(None) else kind.__name__ for kind in types)
            raise DistilledFileError(f"{path}: field {key!r} is missing or not a {kinds}; restore it or {_REEXPORT}.")


def _check_classes(document: dict[str, Any], path: Path) -> None:
    """Class names are strings and their folders are the ones export derives from them."""
    classes, folders = document["classes"], document["class_folders"]
    if not all(isinstance(name, str) for name in classes):
        raise DistilledFileError(f"{path}: 'classes' must be a list of strings; restore it or {_REEXPORT}.")
    if folders != class_folders(classes):
        raise DistilledFileError(
            f"{path}: class names {classes} do not match class_folders {folders} (expected {class_folders(classes)}); "
            f"restore the class names or {_REEXPORT}."
        )


def _image_mode_and_size(document: dict[str, Any], path: Path) -> tuple[str, tuple[int, int]]:
    """PIL mode and (width, height) every PNG must have, from image_shape [C, H, W]."""
    shape = document["image_shape"]
    valid = len(shape) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    if not valid or shape[0] not in MODES:
        raise DistilledFileError(f"{path}: 'image_shape' must be [C, H, W] with C 1 or 3; got {shape}; {_REEXPORT}.")
    return MODES[shape[0]], (shape[2], shape[1])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _entries(document: dict[str, Any], path: Path) -> tuple[list[str], list[list[float]]]:
    """The file and label row of every image, in row order; each well formed, no file named twice."""
    entries, num_classes = document["images"], len(document["classes"])
    if not entries:
        raise DistilledFileError(f"{path} lists no images; {_REEXPORT}.")
    files: list[str] = []
    labels: list[list[float]] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        file = entry.get("file") if isinstance(entry, dict) else None
        label = entry.get("label") if isinstance(entry, dict) else None
        if not isinstance(file, str) or not isinstance(label, list) or not all(_is_number(v) for v in label):
            raise DistilledFileError(f"{path}: images[{index}] must be {{\"file\": path, \"label\": [numbers]}}; "
                                     f"restore it or {_REEXPORT}.")
        if len(label) != num_classes:
            raise DistilledFileError(f"{path}: the label of {file} has {len(label)} values but there are "
                                     f"{num_classes} classes; give one probability per class.")
        if file in seen:
            raise DistilledFileError(f"{path} names {file} more than once; each image needs its own file.")
        seen.add(file)
        files.append(file)
        labels.append(label)
    return files, labels


def _inside(directory: Path, file: str, path: Path) -> Path:
    """``directory / file`` for a ``<folder>/<name>.png`` path that stays inside ``directory`` (no '..', links out)."""
    relative = PurePosixPath(file)
    climbs = relative.is_absolute() or ".." in relative.parts or "\\" in file or len(relative.parts) != 2
    target = directory.joinpath(*relative.parts)
    if climbs or not target.resolve().is_relative_to(directory.resolve()):
        raise DistilledFileError(f"{path} names {file!r}, which is not a <class folder>/<name>.png path inside "
                                 f"{directory}; fix the entry or {_REEXPORT}.")
    return target


def _read_png(target: Path, file: str, mode: str, size: tuple[int, int]) -> np.ndarray:
    """Decode one PNG that must have the set's mode and size (checked before decoding the pixels)."""
    if not target.is_file():
        raise DistilledFileError(f"{target} is missing (named in {LABELS_JSON}); restore it or {_REEXPORT}.")
    try:
        with Image.open(target, formats=["PNG"]) as image:
            if image.mode != mode:
                raise DistilledFileError(f"{file} is mode {image.mode} but the set's images are {mode}; all images "
                                         f"must share one mode: convert it with Pillow's Image.convert({mode!r}).")
            if image.size != size:
                raise DistilledFileError(f"{file} is {image.size[0]}x{image.size[1]} but the set's images are "
                                         f"{size[0]}x{size[1]}; all images must share one size: resize it.")
            image.load()
            return np.asarray(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DistilledFileError(f"cannot decode {target} as PNG ({error}); restore it or {_REEXPORT}.") from None


def _images_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    """uint8 [H, W] or [H, W, 3] arrays -> float32 [N, C, H, W] in 0..1."""
    stacked = torch.from_numpy(np.stack(arrays))
    if stacked.dim() == 3:
        stacked = stacked.unsqueeze(-1)
    return stacked.permute(0, 3, 1, 2).float().div(255).contiguous()


def _check_placement(distilled: DistilledSet, files: list[str], path: Path) -> None:
    """Each PNG sits in the folder of its label's most likely class, as export put it."""
    folders = class_folders(distilled.classes)
    for file, k in zip(files, distilled.hard_labels.tolist()):
        folder = PurePosixPath(file).parts[0]
        if folder != folders[k]:
            raise DistilledFileError(
                f"{path}: {file} is in folder {folder!r} but its label's most likely class is "
                f"{distilled.classes[k]!r} (folder {folders[k]!r}); move the file there or fix its label."
            )


def import_distilled(directory: str | Path) -> DistilledSet:
    """Rebuild a DistilledSet from a folder written by ``export_distilled``, validating every field and file."""
    directory = Path(directory)
    path = directory / LABELS_JSON
    document = _read_document(directory)
    _check_fields(document, path)
    _check_classes(document, path)
    mode, size = _image_mode_and_size(document, path)
    files, labels = _entries(document, path)
    arrays = [_read_png(_inside(directory, file, path), file, mode, size) for file in files]
    try:
        distilled = DistilledSet(
            images=_images_tensor(arrays),
            labels=torch.tensor(labels, dtype=torch.float32),
            classes=tuple(document["classes"]),
            mean=document["mean"],
            std=document["std"],
            dataset=document["dataset"],
            method=document["method"],
            config=document["config"],
            seed=document["seed"],
            source_train_size=document["source_train_size"],
            devs_version=document["devs_version"],
            created=document["created"],
            formation=document.get("formation", 1),  # exports from before multi-formation: 1
            zca=document.get("zca"),  # exports without ZCA: None
        )
    except DistilledFileError as error:  # devs.io's validation: label sums, NaN, channel counts, ...
        raise DistilledFileError(f"{path}: {error}") from None
    except (TypeError, ValueError) as error:
        raise DistilledFileError(f"{path}: malformed field ({error}); restore it or {_REEXPORT}.") from None
    _check_placement(distilled, files, path)
    return distilled
