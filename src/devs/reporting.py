"""Pictures of a distilled set: one row per class (by most likely label).

``save_grid`` writes a plain PNG grid with Pillow (what ``devs distill`` puts next to its output);
``label_grid_figure`` draws the same rows with matplotlib, each image above a small bar chart of its
soft label (what ``devs report`` shows). matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from .io import DistilledSet
from .runtime import atomic_path, check_writable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MIN_TILE = 32  # tiny images (8x8 digits) are scaled up with nearest-neighbour so they stay visible


def display_images(distilled: DistilledSet) -> np.ndarray:
    """The images as float [N, H, W, C] in [0, 1] for display (synthetic images may leave that range)."""
    return distilled.images.clamp(0, 1).numpy().transpose(0, 2, 3, 1)


def class_rows(distilled: DistilledSet, max_per_class: int) -> list[np.ndarray]:
    """For each class, the indices of (at most ``max_per_class`` of) the images whose most likely label it is."""
    hard = distilled.hard_labels.numpy()
    return [np.flatnonzero(hard == cls)[:max_per_class] for cls in range(distilled.num_classes)]


def grid_columns(rows: list[np.ndarray]) -> int:
    """Columns needed for these rows (at least one, so an empty set of rows still draws)."""
    return max(1, max(len(members) for members in rows))


def image_grid(distilled: DistilledSet, max_per_class: int = 20, gap: int = 2, label_width: int = 80) -> Image.Image:
    """Tile the images into rows by class; synthetic images are clamped to [0, 1] for display."""
    images = display_images(distilled)
    height, width, channels = images.shape[1:]
    scale = max(1, -(-MIN_TILE // max(height, width)))
    tile_h, tile_w = height * scale, width * scale
    rows = class_rows(distilled, max_per_class)
    columns = grid_columns(rows)
    canvas = Image.new("RGB", (label_width + columns * (tile_w + gap), len(rows) * (tile_h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (name, members) in enumerate(zip(distilled.classes, rows)):
        top = row * (tile_h + gap)
        draw.text((4, top + tile_h // 2 - 5), name[:12], fill="black")
        for column, index in enumerate(members):
            pixels = (images[index] * 255).round().astype(np.uint8)
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


def plain_text(text: str) -> str:
    """Text that matplotlib draws literally: a '$' from a file must not start mathtext (or fail to parse)."""
    return str(text).replace("$", r"\$")


# Layout of label_grid_figure in data units: every tile is 1 unit wide.
_BAR_HEIGHT = 0.35  # height of the soft-label strip under each tile
_GAP = 0.12  # space between tiles, and between a tile and its strip
_TILE_INCHES = 0.45  # printed width of one tile (two 10-wide grids fit side by side on the page)
_NAME_CHARS = 24  # longer class names are shortened
_CHAR_INCHES = 0.075  # about the width of one character at 9 points


def label_grid_figure(distilled: DistilledSet, max_per_class: int = 10, title: str | None = None) -> "Figure":
    """Images in rows by class (most likely label), each above a bar chart of its soft label.

    In each bar chart the bar of the image's own class is blue and the other classes' bars are orange,
    so a mixed soft label shows at a glance. At most ``max_per_class`` images per row.
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    images = display_images(distilled)
    labels = distilled.labels.numpy()
    rows = class_rows(distilled, max_per_class)
    columns = grid_columns(rows)
    names = [name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS - 1] + "…" for name in distilled.classes]
    tile_h = images.shape[1] / images.shape[2]
    row_h = tile_h + _BAR_HEIGHT + 2 * _GAP
    name_width = 0.25 + _CHAR_INCHES * max(len(name) for name in names)
    width = name_width + columns * (1 + _GAP) * _TILE_INCHES + 0.2
    height = len(rows) * row_h * _TILE_INCHES + (0.45 if title else 0.15)
    figure = Figure(figsize=(width, height), dpi=100)
    axes = figure.add_axes((name_width / width, 0, 1 - name_width / width, 1 - (0.4 if title else 0.1) / height))
    gray = images.shape[3] == 1
    bars, colors = [], []
    for row, (name, members) in enumerate(zip(names, rows)):
        top = -row * row_h
        axes.text(-0.15, top - tile_h / 2, plain_text(name), ha="right", va="center", fontsize=9, clip_on=False)
        for column, index in enumerate(members):
            left = column * (1 + _GAP)
            pixels = images[index, :, :, 0] if gray else images[index]
            axes.imshow(pixels, cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest",
                        extent=(left, left + 1, top - tile_h, top))
            new_bars, new_colors = _label_bars(labels[index], row, left, top - tile_h - _GAP - _BAR_HEIGHT)
            bars += new_bars
            colors += new_colors
    axes.add_collection(PolyCollection(bars, facecolors=colors, edgecolors="none"))
    axes.set_xlim(-0.05, columns * (1 + _GAP))
    axes.set_ylim(-len(rows) * row_h + _GAP, 0.05)
    axes.set_aspect("equal")
    axes.axis("off")
    if title:
        figure.suptitle(plain_text(title), x=0.01, y=1 - 0.05 / height, ha="left", va="top", fontsize=10)
    return figure


def _label_bars(label: np.ndarray, own_class: int, left: float, bottom: float) -> tuple[list, list]:
    """Rectangles (as vertex lists) and colours of one soft label's bar chart in a 1 x _BAR_HEIGHT strip."""
    width, top = 1 / len(label), bottom + _BAR_HEIGHT
    bars, colors = [[(left, bottom), (left + 1, bottom), (left + 1, top), (left, top)]], ["0.92"]  # the scale: 0..1
    for cls, probability in enumerate(label):
        if probability < 1e-3:
            continue
        x0, x1, y1 = left + cls * width, left + (cls + 0.9) * width, bottom + probability * _BAR_HEIGHT
        bars.append([(x0, bottom), (x1, bottom), (x1, y1), (x0, y1)])
        colors.append("tab:blue" if cls == own_class else "tab:orange")
    return bars, colors


def save_figure(figure: "Figure", path: str | Path) -> Path:
    """Write a matplotlib figure as PNG atomically."""
    path = check_writable(path)
    with atomic_path(path) as temp_path:
        figure.savefig(temp_path, format="png")
    return path
