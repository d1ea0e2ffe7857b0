"""The ConvNet of Zhao et al. (used by DC, DM, MTT and the DEvS paper), behind a model registry."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidParameterError
from .registry import Registry
from .runtime import isolated_rng

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register

NORMS = ("instance", "batch", "none")
POOLINGS = ("avg", "max", "none")


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "instance":
        # GroupNorm with one group per channel is instance norm with a learned affine, as in DC's code.
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def _pool_layer(pooling: str) -> nn.Module:
    if pooling == "avg":
        return nn.AvgPool2d(2, 2)
    if pooling == "max":
        return nn.MaxPool2d(2, 2)
    return nn.Identity()


class ShardedDropout(nn.Dropout):
    """Dropout whose masks do not depend on how a batch is split across processes.

    The mask is drawn for the whole global batch from torch's (seeded) global RNG and, while
    ``shard = (global_rows, row_slice)`` is set by a distributed training loop, only this process's rows
    are kept; so every process, and a single process, use the same mask for the same image.
    """

    shard: tuple[int, slice] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        rows = x.shape[0] if self.shard is None else self.shard[0]
        keep = torch.empty((rows, *x.shape[1:]), dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p)
        if self.shard is not None:
            keep = keep[self.shard[1]]
        return x * keep / (1.0 - self.p)


def set_row_shard(net: nn.Module, shard: tuple[int, slice] | None) -> None:
    """Tell every ShardedDropout of ``net`` which rows of a global batch this process computes."""
    for module in net.modules():
        if isinstance(module, ShardedDropout):
            module.shard = shard


class ConvNet(nn.Module):
    """``depth`` blocks of conv3x3(width) -> norm -> ReLU -> pool, then a linear classifier.

    Inputs whose side is not a multiple of 2**depth (e.g. 28x28 MNIST) are zero-padded to the
    next multiple (28 -> 32), as the reference numbers for Fashion-MNIST assume.
    ``dropout`` applies before the classifier; ``bottleneck`` inserts a dense layer of that width
    (with ReLU) between the trunk and the classifier, an option of the DEvS paper.
    ``features(x)`` returns the flattened trunk output, the space DEvS clusters in;
    ``bottleneck_features(x)`` the bottleneck layer's output (after its ReLU), the other space it can use.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        width: int = 128,
        depth: int = 3,
        norm: str = "instance",
        pooling: str = "avg",
        dropout: float = 0.0,
        bottleneck: int | None = None,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise InvalidParameterError(f"Unknown norm {norm!r}. Valid: {', '.join(NORMS)}.")
        if pooling not in POOLINGS:
            raise InvalidParameterError(f"Unknown pooling {pooling!r}. Valid: {', '.join(POOLINGS)}.")
        if depth < 1 or width < 1:
            raise InvalidParameterError(f"ConvNet depth and width must be >= 1. Got depth={depth}, width={width}.")
        if not 0.0 <= dropout < 1.0:
            raise InvalidParameterError(f"The 'dropout' parameter must be in [0, 1). Got {dropout} instead.")
        height, width_px = image_size
        factor = 2**depth if pooling != "none" else 1
        self.padded_size = (math.ceil(height / factor) * factor, math.ceil(width_px / factor) * factor)

        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1),
                _norm_layer(norm, width),
                nn.ReLU(inplace=True),
                _pool_layer(pooling),
            ]
            channels = width
        self.trunk = nn.Sequential(*layers)
        self.feature_dim = width * (self.padded_size[0] // factor) * (self.padded_size[1] // factor)

        head: list[nn.Module] = [ShardedDropout(dropout)]
        head_in = self.feature_dim
        if bottleneck:
            head += [nn.Linear(head_in, bottleneck), nn.ReLU(inplace=True), ShardedDropout(dropout)]
            head_in = bottleneck
        head.append(nn.Linear(head_in, num_classes))
        self.head = nn.Sequential(*head)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        extra_h = self.padded_size[0] - x.shape[-2]
        extra_w = self.padded_size[1] - x.shape[-1]
        if extra_h == 0 and extra_w == 0:
            return x
        return F.pad(x, (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self._pad(x)).flatten(1)

    def bottleneck_features(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.head) < 4:
            raise InvalidParameterError("This ConvNet has no bottleneck layer; build it with bottleneck=N.")
        return self.head[1:3](self.features(x))  # Linear + ReLU; dropout (head[0]) is off at inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("convnet")
def convnet(**kwargs) -> ConvNet:
    """ConvNet-3: 3 blocks of 128 filters, instance norm, average pooling."""
    return ConvNet(**kwargs)


@register_model("convnet-bn")
def convnet_bn(**kwargs) -> ConvNet:
    """ConvNet-3 with batch norm instead of instance norm."""
    return ConvNet(**{"norm": "batch", **kwargs})


def build_model(
    name: str, *, in_channels: int, num_classes: int, image_size: tuple[int, int], seed: int | None = None, **options
) -> nn.Module:
    """Build a registered model; with ``seed`` its initial weights are reproducible and the caller's RNG untouched."""
    factory = MODELS.get(name)
    if seed is None:
        return factory(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options)
    with isolated_rng(seed):
        return factory(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)
