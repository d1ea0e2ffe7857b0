"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021) as batched torch ops.

DSA augments the real and the synthetic batch of a class with the *same* randomly drawn
transformation, so that matching their statistics is not blurred by augmentation noise, and every
transformation is differentiable with respect to the images. ``sample_siamese`` draws one
transformation from a local generator; the returned ``SiameseAugment`` applies it to any batch.

As in the official code's default single mode (``aug_mode='S'``), each draw picks one of the
strategy's groups (``color`` = brightness, saturation and contrast together; ``crop``; ``cutout``;
``flip``; ``scale``; ``rotate``) and one parameter set for the whole batch. Magnitudes are those of
the official ``ParamDiffAug``.
"""

from __future__ import annotations

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
class SiameseAugment:
    """One drawn transformation; ``augment(x)`` applies exactly it to a batch ``x`` [N, C, H, W]."""

    kind: str
    values: dict[str, Any] = field(default_factory=dict)
    params: DSAParams = DSAParams()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _APPLY[self.kind](x, self.values, self.params)


def sample_siamese(groups: tuple[str, ...], generator: torch.Generator, image_size: tuple[int, int],
                   params: DSAParams = DSAParams()) -> SiameseAugment:
    """Draw one group of ``groups`` and its parameters from ``generator`` (a CPU generator: no device sync)."""
    if not groups:
        return SiameseAugment("identity")
    kind = groups[int(torch.randint(len(groups), (1,), generator=generator))]
    u = torch.rand(3, generator=generator).tolist()  # always three draws, so the stream does not depend on kind
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
    return SiameseAugment(kind, values, params)


def _uniform_int(u: float, low: int, high: int) -> int:
    """An integer uniform on [low, high] from a uniform float u in [0, 1)."""
    return low + min(int(u * (high - low + 1)), high - low)


def _color(x: torch.Tensor, v: dict, p: DSAParams) -> torch.Tensor:
    x = x + (v["brightness"] - 0.5) * p.brightness
    channel_mean = x.mean(dim=1, keepdim=True)
    x = (x - channel_mean) * (v["saturation"] * p.saturation) + channel_mean
    image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - image_mean) * (v["contrast"] + p.contrast) + image_mean


def _crop(x: torch.Tensor, v: dict, p: DSAParams) -> torch.Tensor:
    """Translate by (dy, dx) pixels with zero fill: out[i, j] = x[i + dy, j + dx]."""
    dy, dx = v["dy"], v["dx"]
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return x
    height, width = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    return padded[..., pad + dy : pad + dy + height, pad + dx : pad + dx + width]


def _cutout(x: torch.Tensor, v: dict, p: DSAParams) -> torch.Tensor:
    """Zero a size[0] x size[1] rectangle centred at (cy, cx), clipped to the image."""
    height, width = x.shape[-2:]
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    top, left = v["cy"] - v["size"][0] // 2, v["cx"] - v["size"][1] // 2
    inside_rows = (rows >= top) & (rows < top + v["size"][0])
    inside_cols = (cols >= left) & (cols < left + v["size"][1])
    keep = ~(inside_rows[:, None] & inside_cols[None, :])
    return x * keep.to(x.dtype)


def _flip(x: torch.Tensor, v: dict, p: DSAParams) -> torch.Tensor:
    return x.flip(-1) if v["flip"] else x


def _affine(x: torch.Tensor, matrix: list[list[float]]) -> torch.Tensor:
    """Resample ``x`` through one 2x3 affine matrix (normalised coordinates, zero padding)."""
    theta = torch.tensor(matrix, dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def _scale(x: torch.Tensor, v: dict, p: DSAParams) -> torch.Tensor:
    return _affine(x, [[v["sx"], 0.0, 0.0], [0.0, v["sy"], 0.0]])


def _rotate(x: torch.Tensor, v: dict, p: DSAParams) -> torch.Tensor:
    cos, sin = math.cos(v["angle"]), math.sin(v["angle"])
    return _affine(x, [[cos, -sin, 0.0], [sin, cos, 0.0]])


_APPLY = {
    "identity": lambda x, v, p: x,
    "color": _color,
    "crop": _crop,
    "cutout": _cutout,
    "flip": _flip,
    "scale": _scale,
    "rotate": _rotate,
}
