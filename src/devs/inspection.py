"""What is in a distilled set: sizes, classes, label entropy, pixel range, metadata and config.

``describe`` returns plain JSON-ready data (``devs inspect --json`` prints it as is); ``format_description``
renders the same data as an aligned text table (``devs inspect``).
"""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Any

import torch

from .io import FORMAT, DistilledSet

ENTROPY_UNIT = "nats"  # natural logarithm: a uniform label over K classes has entropy ln K


def label_entropy(labels: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of each label row in nats (0 ln 0 counts as 0), computed in float64."""
    return torch.special.entr(labels.double()).sum(1)


def _pixel_stats(images: torch.Tensor) -> dict[str, Any]:
    pixels = images.double()
    return {
        "min": float(pixels.min()),
        "max": float(pixels.max()),
        "mean": float(pixels.mean()),
        "outside_0_1": int(((pixels < 0) | (pixels > 1)).sum()),
    }


def _entropy_stats(labels: torch.Tensor) -> dict[str, Any]:
    entropy = label_entropy(labels)
    return {
        "unit": ENTROPY_UNIT,
        "mean": float(entropy.mean()),
        "max": float(entropy.max()),
        "uniform": math.log(labels.shape[1]),  # the largest possible value, for scale
    }


def describe(distilled: DistilledSet) -> dict[str, Any]:
    """Summarize a distilled set as a JSON-ready dict (the fields ``devs inspect`` shows)."""
    counts = distilled.class_counts()
    return {
        "format": FORMAT,
        "images": len(distilled),
        "image_shape": list(distilled.image_shape),
        "classes": list(distilled.classes),
        "class_counts": [{"class": name, "count": count} for name, count in zip(distilled.classes, counts)],
        "label_entropy": _entropy_stats(distilled.labels),
        "pixels": _pixel_stats(distilled.images),
        "metadata": {
            "method": distilled.method,
            "dataset": distilled.dataset,
            "seed": distilled.seed,
            "source_train_size": distilled.source_train_size,
            "created": distilled.created,
            "devs_version": distilled.devs_version,
            "mean": distilled.mean,
            "std": distilled.std,
            "formation": distilled.formation,
            **({"zca": _zca_summary(distilled.zca)} if distilled.zca else {}),
        },
        "config": distilled.config,
    }


def _zca_summary(description: dict[str, Any]) -> dict[str, Any]:
    """What a reader needs to know of a set's ZCA whitening (the whole description is in the file)."""
    return {key: description.get(key) for key in ("rule", "regularization", "dataset", "train_size", "sha256")}


def _text(value: Any) -> str:
    """One printable line: strings as they are (escaped if they hold control characters), the rest as JSON."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return value if value.isprintable() else json.dumps(value, ensure_ascii=False)[1:-1]
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _flatten(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts become dotted keys (``stage.epochs``); lists and scalars stay values."""
    rows: list[tuple[str, Any]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def _width(text: str) -> int:
    """Columns ``text`` takes on a terminal (East Asian wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _aligned(rows: list[tuple[str, Any]], indent: str = "") -> list[str]:
    """``key  value`` lines with the values in one column."""
    keys = [_text(key) for key, _ in rows]
    column = max(map(_width, keys), default=0) + 2
    return [f"{indent}{key}{' ' * (column - _width(key))}{_text(value)}" for key, (_, value) in zip(keys, rows)]


def format_description(description: dict[str, Any]) -> str:
    """Render ``describe``'s dict as an aligned, human-readable table."""
    entropy, pixels, meta = description["label_entropy"], description["pixels"], description["metadata"]
    channels, height, width = description["image_shape"]
    outside = f" ({pixels['outside_0_1']} values outside 0..1)" if pixels["outside_0_1"] else ""
    summary = [
        *([("file", description["file"])] if "file" in description else []),  # added by devs inspect
        ("format", description["format"]),
        ("images", f"{description['images']} x {channels}x{height}x{width} (C x H x W)"),
        ("classes", len(description["classes"])),
        ("label entropy", f"mean {entropy['mean']:.4f}, max {entropy['max']:.4f} {entropy['unit']} "
                          f"(uniform over {len(description['classes'])} classes: {entropy['uniform']:.4f})"),
        ("pixels", f"min {pixels['min']:.4g}, max {pixels['max']:.4g}, mean {pixels['mean']:.4g}{outside}"),
        *[(key.replace("_", " "), value) for key, value in meta.items()],
    ]
    lines = [*_aligned(summary), "", "images per class (by most likely label):"]
    lines += _aligned([(row["class"], row["count"]) for row in description["class_counts"]], indent="  ")
    lines += ["", "config:"]
    lines += _aligned(_flatten(description["config"]), indent="  ") or ["  -"]
    return "\n".join(lines)
