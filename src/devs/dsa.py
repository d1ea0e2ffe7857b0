"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021) as batched torch ops.

DSA augments the real and the synthetic batch of a class with the *same* randomly drawn
transformation, so that matching their statistics is not blurred by augmentation noise, and every
transformation is differentiable with respect to the images. ``sample_siamese`` draws one
transformation from a local generator; the returned ``DrawnAugment`` applies it to any batch.
``sample_per_image`` draws parameters for each image instead: the augmentation of the ``dsa``
evaluation protocol (networks trained on a distilled set, as in the DSA, DM and MTT papers).

As in the official code's default single mode (``aug_mode='S'``), each draw picks one of the
strategy's groups (``color`` = brightness, saturation and contrast together; ``crop``; ``cutout``;
``flip``; ``scale``; ``rotate``) for the whole batch, with one parameter set for all its images
(siamese) or one per image. Magnitudes are those of the official ``ParamDiffAug``.

IDC (Kim et al. 2022) evaluates with a composed variant instead (``sample_composed``): flip, color and
cutout on every batch, and one of the other groups, each with its own parameters per image.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .errors import InvalidParameterError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass(frozen=True)
class DSAParams:
    """Augmentation magnitudes (the official ``ParamDiffAug`` defaults)."""

    flip_prob: float = 0.5
    scale_ratio: float = 1.2  # scale factors in [1/1.2, 1.2] per axis
    rotate_degrees: float = 15.0  # angle in [-15, 15] degrees
    crop_ratio: float = 0.125  # translation up to 1/8 of the side, zero fill
    cutout_ratio: float = 0.5  # a zeroed square of half the side
    brightness: float = 1.0  # add U(-0.5, 0.5) * 1.0
    saturation: float = 2.0  # scale the deviation from the channel mean by U(0, 2)
    contrast: float = 0.5  # scale the deviation from the image mean by U(0.5, 1.5)


def parse_strategy(strategy: str | None) -> tuple[str, ...]:
    """``"color_crop_..."`` -> ``("color", "crop", ...)``; ``None``, ``""`` or ``"none"`` -> no augmentation."""
    if strategy is None:
        return ()
    if not isinstance(strategy, str):
        raise InvalidParameterError(f"The DSA strategy must be a string such as {DEFAULT_STRATEGY!r}; "
                                    f"got {strategy!r}.")
    if strategy.lower() in ("", "none"):
        return ()
    groups = tuple(strategy.split("_"))
    unknown = [group for group in groups if group not in GROUPS]
    if unknown:
        raise InvalidParameterError(
            f"Unknown DSA augmentation(s) {', '.join(map(repr, unknown))} in {strategy!r}. "
            f"Join any of {', '.join(GROUPS)} with '_' (default {DEFAULT_STRATEGY!r}), or use 'none'."
        )
    return groups


@dataclass(frozen=True)
class DrawnAugment:
    """One drawn transformation; ``augment(x)`` applies exactly it to a batch ``x`` [N, C, H, W].

    Each value is a tensor of length 1 (one draw shared by every image: siamese) or N (one per image).
    """

    kind: str
    values: dict[str, Any] = field(default_factory=dict)
    params: DSAParams = DSAParams()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _APPLY[self.kind](x, self.values, self.params)


def sample_siamese(groups: tuple[str, ...], generator: torch.Generator, image_size: tuple[int, int],
                   params: DSAParams = DSAParams()) -> DrawnAugment:
    """Draw one group of ``groups`` and one parameter set for every image, from ``generator`` (a CPU
    generator: no device sync). DC and DM apply the draw to their real and synthetic batches alike."""
    return _draw(groups, generator, image_size, 1, params)


def sample_per_image(groups: tuple[str, ...], generator: torch.Generator, image_size: tuple[int, int], count: int,
                     params: DSAParams = DSAParams()) -> DrawnAugment:
    """Draw one group of ``groups`` for the batch and parameters for each of its ``count`` images (the
    official code's evaluation-time augmentation, ``aug_mode='S'`` with ``seed=-1``)."""
    return _draw(groups, generator, image_size, count, params)


ALWAYS_IN_COMPOSED = ("flip", "color")  # applied first, in this order; "cutout" is applied last


@dataclass(frozen=True)
class ComposedAugment:
    """Several draws applied one after another."""

    draws: tuple[DrawnAugment, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for draw in self.draws:
            x = draw(x)
        return x


def sample_composed(groups: tuple[str, ...], generator: torch.Generator, image_size: tuple[int, int], count: int,
                    params: DSAParams = DSAParams()) -> ComposedAugment:
    """IDC's evaluation-time augmentation (its ``DiffAug`` in single mode, per image): flip and color (if in
    ``groups``), then one of the remaining groups but cutout, then cutout (if in ``groups``), every draw
    with its own parameters for each of the ``count`` images."""
    first = [group for group in ALWAYS_IN_COMPOSED if group in groups]
    middle = tuple(group for group in groups if group not in (*ALWAYS_IN_COMPOSED, "cutout"))
    order = [(group,) for group in first] + ([middle] if middle else []) + ([("cutout",)] if "cutout" in groups else [])
    return ComposedAugment(tuple(_draw(chosen, generator, image_size, count, params) for chosen in order))


def augment_groups(x: torch.Tensor, sizes: list[int], draws: list[DrawnAugment]) -> torch.Tensor:
    """``draws[g]`` applied to the g-th run of ``sizes[g]`` consecutive rows of ``x``, for every g at once.

    The same as ``torch.cat([draw(part) for draw, part in zip(draws, x.split(sizes))])`` (every
    transformation acts on each image alone), in one call per kind of transformation instead of one per
    draw: DM augments each class with its own draw, and on a GPU those small per-class calls cost more in
    launches than in arithmetic. Differentiable like the draws themselves.
    """
    if len(sizes) != len(draws) or sum(sizes) != len(x):
        raise ValueError(f"{len(draws)} draws for {len(sizes)} groups of {sum(sizes)} rows, but x has {len(x)} rows")
    starts = [0, *itertools.accumulate(sizes[:-1])]
    kinds: dict[str, list[int]] = {}
    for group, draw in enumerate(draws):
        kinds.setdefault(draw.kind, []).append(group)
    if len(kinds) == 1 and draws[0].kind == "identity":
        return x
    pieces, rows = [], []
    for kind, members in kinds.items():
        index = torch.cat([torch.arange(starts[g], starts[g] + sizes[g]) for g in members])
        values = _per_row_values([draws[g] for g in members], [sizes[g] for g in members])
        pieces.append(_APPLY[kind](x[index.to(x.device)], values, draws[members[0]].params))
        rows.append(index)
    order = torch.cat(rows)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    return torch.cat(pieces)[inverse.to(x.device)]


def _per_row_values(draws: list[DrawnAugment], sizes: list[int]) -> dict[str, Any]:
    """The values of draws of one kind, each repeated over its own rows (constants, such as the cutout
    size, are the same in every draw of one image size)."""
    merged: dict[str, Any] = {}
    for key, first in draws[0].values.items():
        if isinstance(first, torch.Tensor):
            merged[key] = torch.cat([draw.values[key].expand(size) if len(draw.values[key]) == 1 else draw.values[key]
                                     for draw, size in zip(draws, sizes)])
        else:
            merged[key] = first
    return merged


def _draw(groups: tuple[str, ...], generator: torch.Generator, image_size: tuple[int, int], count: int,
          params: DSAParams) -> DrawnAugment:
    if not groups:
        return DrawnAugment("identity")
    kind = groups[int(torch.randint(len(groups), (1,), generator=generator))]
    u = torch.rand(3, count, generator=generator)  # always three draws, so the stream does not depend on kind
    height, width = image_size
    values: dict[str, Any]
    if kind == "color":
        values = {"brightness": u[0], "saturation": u[1], "contrast": u[2]}
    elif kind == "crop":
        shift = (int(height * params.crop_ratio + 0.5), int(width * params.crop_ratio + 0.5))
        values = {"dy": _uniform_int(u[0], -shift[0], shift[0]), "dx": _uniform_int(u[1], -shift[1], shift[1])}
    elif kind == "cutout":
        size = (int(height * params.cutout_ratio + 0.5), int(width * params.cutout_ratio + 0.5))
        # The centre ranges over [0, side) (one more place for even sizes), as in the official code.
        values = {"size": size, "cy": _uniform_int(u[0], 0, height - size[0] % 2),
                  "cx": _uniform_int(u[1], 0, width - size[1] % 2)}
    elif kind == "flip":
        values = {"flip": u[0] < params.flip_prob}
    elif kind == "scale":
        low = 1.0 / params.scale_ratio
        values = {"sx": low + u[0] * (params.scale_ratio - low), "sy": low + u[1] * (params.scale_ratio - low)}
    else:  # rotate
        values = {"angle": (u[0] - 0.5) * 2 * math.radians(params.rotate_degrees)}
    return DrawnAugment(kind, values, params)


def _uniform_int(u: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Integers uniform on [low, high] from uniform floats u in [0, 1)."""
    return low + (u * (high - low + 1)).long().clamp(max=high - low)


def _per_row(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A length-1 or length-N drawn value, moved beside ``x``."""
    return value.to(x.device, non_blocking=True)


def _per_image(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A length-1 or length-N value as an [N or 1, 1, 1, 1] tensor beside ``x``, for broadcasting."""
    return _per_row(value, x).reshape(-1, 1, 1, 1)


def _color(x: torch.Tensor, v: dict, p: DSAParams) -> torch.Tensor:
    brightness, saturation, contrast = (_per_image(v[k], x).to(x.dtype) for k in ("brightness", "saturation", "contrast"))
    x = x + (brightness - 0.5) * p.brightness
    channel_mean = x.mean(dim=1, keepdim=True)
    x = (x - channel_mean) * (saturation * p.saturation) + channel_mean
    image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - image_mean) * (contrast + p.contrast) + image_mean


def _crop(x: torch.Tensor, v: dict, p: DSAParams) -> torch.Tensor:
    """Translate by (dy, dx) pixels with zero fill: out[i, j] = x[i + dy, j + dx]."""
    height, width = x.shape[-2:]
    dy, dx = _per_row(v["dy"], x), _per_row(v["dx"], x)
    theta = _identity_theta(x, len(dy))
    # In align_corners=False coordinates one pixel is 2 / side; nearest sampling keeps pixels exact.
    theta[:, 0, 2], theta[:, 1, 2] = dx * (2.0 / width), dy * (2.0 / height)
    return _resample(x, theta, mode="nearest")


def _cutout(x: torch.Tensor, v: dict, p: DSAParams) -> torch.Tensor:
    """Zero a size[0] x size[1] rectangle centred at (cy, cx), clipped to the image."""
    height, width = x.shape[-2:]
    rows = torch.arange(height, device=x.device)[None, :]
    cols = torch.arange(width, device=x.device)[None, :]
    top = _per_row(v["cy"], x)[:, None] - v["size"][0] // 2
    left = _per_row(v["cx"], x)[:, None] - v["size"][1] // 2
    inside_rows = (rows >= top) & (rows < top + v["size"][0])  # [N or 1, H]
    inside_cols = (cols >= left) & (cols < left + v["size"][1])  # [N or 1, W]
    keep = ~(inside_rows[:, :, None] & inside_cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


def _flip(x: torch.Tensor, v: dict, p: DSAParams) -> torch.Tensor:
    return torch.where(_per_image(v["flip"], x), x.flip(-1), x)


def _identity_theta(x: torch.Tensor, count: int) -> torch.Tensor:
    return torch.eye(2, 3, dtype=x.dtype, device=x.device).repeat(count, 1, 1)


def _resample(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Resample ``x`` through 2x3 affine matrices ``theta`` [N or 1, 2, 3] (normalised coordinates, zero padding)."""
    theta = theta.expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, align_corners=False)


def _scale(x: torch.Tensor, v: dict, p: DSAParams) -> torch.Tensor:
    sx, sy = _per_row(v["sx"], x).to(x.dtype), _per_row(v["sy"], x).to(x.dtype)
    theta = _identity_theta(x, len(sx))
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    return _resample(x, theta)


def _rotate(x: torch.Tensor, v: dict, p: DSAParams) -> torch.Tensor:
    angle = _per_row(v["angle"], x).to(x.dtype)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                         torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1)
    return _resample(x, theta)


_APPLY = {
    "identity": lambda x, v, p: x,
    "color": _color,
    "crop": _crop,
    "cutout": _cutout,
    "flip": _flip,
    "scale": _scale,
    "rotate": _rotate,
}
