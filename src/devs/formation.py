"""Multi-formation: one stored image holds ``factor**2`` training images at 1/``factor`` of the resolution.

The idea is IDC's (Kim et al., "Dataset Condensation via Efficient Synthetic-Data Parameterization",
ICML 2022): natural images lose little at half resolution, so a fixed pixel budget buys more, smaller
training images. A stored [C, H, W] image is split into a ``factor`` x ``factor`` grid of tiles
(row-major); decoding upsamples each tile back to H x W (bilinear) and gives it the stored image's label
row. The decoder has no parameters: whoever trains on a distilled set only needs ``factor``, which the
file records (``DistilledSet.formation``). ``factor=1`` is the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import InvalidParameterError


def check_factor(factor: object, image_size: tuple[int, int], owner: str = "formation") -> int:
    """``factor`` as an int >= 1 that divides both image sides, or a typed error saying what fits."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise InvalidParameterError(f"The {owner!r} factor must be an int >= 1 (1: off). Got {factor!r} instead.")
    height, width = image_size
    if height % factor or width % factor:
        raise InvalidParameterError(
            f"A formation factor of {factor} must divide the image sides ({height} x {width}); "
            f"choose a divisor of both, e.g. 2 for 32 x 32 or 28 x 28 images."
        )
    return factor


def downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, H / factor, W / factor] by averaging factor x factor blocks."""
    return images if factor == 1 else F.avg_pool2d(images, factor)


def encode(tiles: torch.Tensor, factor: int) -> torch.Tensor:
    """Pack consecutive groups of ``factor**2`` low-resolution tiles [N * f^2, C, h, w] into [N, C, f h, f w]."""
    if factor == 1:
        return tiles
    count, channels, height, width = tiles.shape
    if count % (factor * factor):
        raise InvalidParameterError(f"{count} tiles do not fill whole images of {factor * factor} tiles each.")
    grid = tiles.reshape(count // factor**2, factor, factor, channels, height, width)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(count // factor**2, channels, factor * height, factor * width)


def split(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The inverse of ``encode``: [N, C, H, W] -> [N * f^2, C, H / f, W / f], each image's tiles row-major."""
    if factor == 1:
        return images
    count, channels, height, width = images.shape
    grid = images.reshape(count, channels, factor, height // factor, factor, width // factor)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(count * factor**2, channels, height // factor, width // factor)


def decode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The training images of stored ``images``: each tile upsampled to the full size (bilinear).

    Differentiable, so methods that learn the stored pixels (DM) can optimise through it.
    """
    if factor == 1:
        return images
    size = tuple(images.shape[2:])
    return F.interpolate(split(images, factor), size=size, mode="bilinear", align_corners=False)


def decode_labels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    """Each stored label row repeated once per tile, in the order ``decode`` yields the tiles."""
    return labels.repeat_interleave(factor * factor, dim=0)


def pack_labels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    """One label row per stored image: the mean of its tiles' rows (still a probability vector)."""
    if factor == 1:
        return labels
    return labels.reshape(-1, factor * factor, labels.shape[1]).mean(1)
