"""The one artifact format: ``devs.distilled.v1`` in a .safetensors file.

Tensors: ``images`` float32 [N, C, H, W] in pixel units (not normalized) and ``labels`` float32 [N, K],
each row a probability distribution. ``__metadata__`` holds strings only (see README "File format").
Loading parses no code: safetensors is a JSON header plus raw bytes. A set distilled with ZCA whitening
(devs.zca) records the transform's description as the optional ``zca`` metadata string (JSON); the images
stay in pixel units, and whoever trains on them whitens them with that transform.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import DistilledFileError, InvalidParameterError
from .formation import check_factor, decode, decode_labels
from .runtime import atomic_path, check_writable
from .zca import _validate as validate_zca

FORMAT = "devs.distilled.v1"
LABEL_SUM_TOLERANCE = 1e-3
REQUIRED_METADATA = ("format", "classes", "mean", "std")


def _creation_time() -> str:
    """Now, or $SOURCE_DATE_EPOCH when set (the reproducible-builds convention), so reruns can be bit-identical."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch else _dt.datetime.now(_dt.timezone.utc)
    return moment.isoformat(timespec="seconds")


def _version() -> str:
    from . import __version__

    return __version__


@dataclass
class DistilledSet:
    """A distilled (or coreset) training set with soft labels, plus where it came from."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: list[float]
    std: list[float]
    dataset: str = ""
    method: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    source_train_size: int | None = None
    devs_version: str = field(default_factory=_version)
    created: str = field(default_factory=lambda: _creation_time())
    # Multi-formation factor (devs.formation): each stored image holds formation**2 training images.
    formation: int = 1
    # ZCA.describe() of the whitening the set was distilled under (rule devs.zca.v1), or None: none.
    zca: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.classes = tuple(str(name) for name in self.classes)
        self.mean = [float(value) for value in self.mean]
        self.std = [float(value) for value in self.std]
        validate(self.images, self.labels, self.classes, self.mean, self.std)
        try:
            check_factor(self.formation, tuple(self.images.shape[2:]))
        except InvalidParameterError as error:
            raise DistilledFileError(str(error)) from None
        if self.zca is not None:
            self.zca = _checked_zca(self.zca)

    def training_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, label rows) to train on: the stored ones, decoded when ``formation`` > 1."""
        return decode(self.images, self.formation), decode_labels(self.labels, self.formation)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def hard_labels(self) -> torch.Tensor:
        """The most likely class of each image."""
        return self.labels.argmax(1)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.hard_labels, minlength=self.num_classes).tolist()

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "classes": json.dumps(list(self.classes)),
            "mean": json.dumps(self.mean),
            "std": json.dumps(self.std),
            "dataset": self.dataset,
            "method": self.method,
            "config": json.dumps(self.config, sort_keys=True),
            "seed": "" if self.seed is None else str(self.seed),
            "source_train_size": "" if self.source_train_size is None else str(self.source_train_size),
            "devs_version": self.devs_version,
            "created": self.created,
            "formation": str(self.formation),
            # Only with ZCA: files without it keep exactly the metadata (and bytes) they had before.
            **({"zca": json.dumps(self.zca, sort_keys=True)} if self.zca is not None else {}),
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename): a crash never leaves a half-written file."""
        path = check_writable(path)
        tensors = {
            "images": self.images.detach().to("cpu", torch.float32).contiguous(),
            "labels": self.labels.detach().to("cpu", torch.float32).contiguous(),
        }
        with atomic_path(path) as temp_path:
            save_file(tensors, str(temp_path), metadata=self.metadata())
            _canonicalize_header(temp_path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DistilledSet":
        return load_distilled(path)


def _canonicalize_header(path: Path) -> None:
    """Rewrite the safetensors JSON header with sorted keys, in place and at the same length.

    safetensors serializes the header from a hash map, so key order (and thus the bytes) varies from
    run to run; sorting makes the same content give the same bytes. The header is only reordered
    (padded with spaces if shorter), never changed in meaning, and left alone if it would grow.
    """
    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(canonical) > length:
            return
        handle.seek(8)
        handle.write(canonical.ljust(length, b" "))


def validate(images: torch.Tensor, labels: torch.Tensor, classes, mean, std) -> None:
    """Raise DistilledFileError unless the tensors and fields form a valid distilled set."""
    if images.dim() != 4:
        raise DistilledFileError(f"'images' must be [N, C, H, W]; got shape {tuple(images.shape)}.")
    if labels.dim() != 2:
        raise DistilledFileError(f"'labels' must be [N, K]; got shape {tuple(labels.shape)}.")
    if len(images) == 0:
        raise DistilledFileError("The distilled set is empty (N = 0).")
    if len(images) != len(labels):
        raise DistilledFileError(f"{len(images)} images but {len(labels)} label rows; they must match.")
    if labels.shape[1] != len(classes):
        raise DistilledFileError(f"Labels have {labels.shape[1]} columns but there are {len(classes)} class names.")
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise DistilledFileError(f"'mean' and 'std' need one value per channel ({images.shape[1]}).")
    if not all(math.isfinite(value) for value in mean) or not all(math.isfinite(v) and v > 0 for v in std):
        raise DistilledFileError("'mean' must be finite and 'std' finite and > 0.")
    if not bool(torch.isfinite(images).all()):
        raise DistilledFileError("'images' contains NaN or Inf values; the file is corrupt, regenerate it.")
    if not bool(torch.isfinite(labels).all()) or bool((labels < 0).any()):
        raise DistilledFileError("'labels' contains NaN, Inf or negative values; each row must be a probability vector.")
    row_sums = labels.double().sum(1)
    worst = float((row_sums - 1).abs().max())
    if worst > LABEL_SUM_TOLERANCE:
        raise DistilledFileError(f"Label rows must sum to 1 (worst row is off by {worst:.3g}); normalize them first.")


def _checked_zca(description: Any) -> dict[str, Any]:
    """A JSON copy of a ZCA description, checked by devs.zca (rule devs.zca.v1, fields, its own fingerprint)."""
    if not isinstance(description, dict):
        raise DistilledFileError(f"'zca' must be a ZCA description (a JSON object); got {type(description).__name__}.")
    try:
        copy = json.loads(json.dumps(description))
    except (TypeError, ValueError) as error:
        raise DistilledFileError(f"'zca' is not JSON-able ({error}).") from None
    validate_zca(copy)
    return copy


def _parse_json(metadata: dict[str, str], key: str, path: Path):
    try:
        return json.loads(metadata[key])
    except (json.JSONDecodeError, TypeError):
        raise DistilledFileError(f"{path}: metadata field {key!r} is not valid JSON.") from None


def load_distilled(path: str | Path) -> DistilledSet:
    """Read and validate a devs.distilled.v1 file."""
    path = Path(path)
    if not path.is_file():
        raise DistilledFileError(f"{path} not found; give the path of a .safetensors file written by devs distill.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise DistilledFileError(f"{path} is truncated or not a .safetensors file ({error}); regenerate it.") from None
    if metadata.get("format") != FORMAT:
        found = metadata.get("format")
        raise DistilledFileError(
            f"{path}: 'format' is {found!r}, expected {FORMAT!r}; this is not a devs distilled-set file."
        )
    missing = [key for key in REQUIRED_METADATA if key not in metadata] + [
        name for name in ("images", "labels") if name not in tensors
    ]
    if missing:
        raise DistilledFileError(f"{path} lacks {', '.join(missing)}; regenerate it with devs distill.")
    config = _parse_json(metadata, "config", path) if metadata.get("config") else {}
    seed = metadata.get("seed") or None
    size = metadata.get("source_train_size") or None
    formation = metadata.get("formation") or "1"  # files from before multi-formation: 1
    zca = _parse_json(metadata, "zca", path) if "zca" in metadata else None  # files without ZCA: None
    if "zca" in metadata and not isinstance(zca, dict):
        raise DistilledFileError(f"{path}: metadata field 'zca' must be a JSON object (a ZCA description); "
                                 f"got {type(zca).__name__}.")
    try:
        return DistilledSet(
            images=tensors["images"].float(),
            labels=tensors["labels"].float(),
            classes=tuple(_parse_json(metadata, "classes", path)),
            mean=_parse_json(metadata, "mean", path),
            std=_parse_json(metadata, "std", path),
            dataset=metadata.get("dataset", ""),
            method=metadata.get("method", ""),
            config=config,
            seed=int(seed) if seed is not None else None,
            source_train_size=int(size) if size is not None else None,
            devs_version=metadata.get("devs_version", ""),
            created=metadata.get("created", ""),
            formation=int(formation),
            zca=zca,
        )
    except DistilledFileError as error:
        raise DistilledFileError(f"{path}: {error}") from None
    except (TypeError, ValueError) as error:
        raise DistilledFileError(f"{path}: malformed metadata ({error}); regenerate it.") from None
