"""Pictures of a distilled set: a PNG grid, one row per class (by most likely label)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .io import DistilledSet
from .runtime import atomic_path, check_writable

MIN_TILE = 32  # tiny images (8x8 digits) are scaled up with nearest-neighbour so they stay visible


def image_grid(distilled: DistilledSet, max_per_class: int = 20, gap: int = 2, label_width: int = 80) -> Image.Image:
    """Tile the images into rows by class; synthetic images are clamped to [0, 1] for display."""
    images = distilled.images.clamp(0, 1).numpy()
    channels, height, width = images.shape[1:]
    scale = max(1, -(-MIN_TILE // max(height, width)))
    tile_h, tile_w = height * scale, width * scale
    hard = distilled.hard_labels.numpy()
    columns = max(1, min(max_per_class, max(np.bincount(hard, minlength=distilled.num_classes))))
    rows = distilled.num_classes
    canvas = Image.new("RGB", (label_width + columns * (tile_w + gap), rows * (tile_h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, name in enumerate(distilled.classes):
        top = row * (tile_h + gap)
        draw.text((4, top + tile_h // 2 - 5), name[:12], fill="black")
        members = np.flatnonzero(hard == row)[:columns]
        for column, index in enumerate(members):
            pixels = (images[index].transpose(1, 2, 0) * 255).round().astype(np.uint8)
            tile = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).convert("RGB")
            tile = tile.resize((tile_w, tile_h), Image.NEAREST)
            canvas.paste(tile, (label_width + column * (tile_w + gap), top))
    return canvas


def save_grid(distilled: DistilledSet, path: str | Path, max_per_class: int = 20) -> Path:
    """Write the grid PNG atomically."""
    path = check_writable(path)
    with atomic_path(path) as temp_path:
        image_grid(distilled, max_per_class=max_per_class).save(temp_path, format="PNG")
    return path
