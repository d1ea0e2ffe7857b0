"""Evaluation networks behind a model registry.

ConvNet-3 of Zhao et al. (used by DC, DM, MTT and the DEvS paper) and its width/depth variants, plus the
other networks DC and DM judge distilled sets with (AlexNet, VGG11, ResNet18, MLP), written after
networks.py of github.com/VICO-UoE/DatasetCondensation. Every model takes ``in_channels``, ``num_classes``,
``image_size`` (any size; the layouts below say how) and ``dropout`` (before the classifier).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidParameterError, check_choice
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
        check_choice("norm", norm, NORMS)
        check_choice("pooling", pooling, POOLINGS)
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


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise InvalidParameterError(f"The 'dropout' parameter must be in [0, 1). Got {dropout} instead.")


def _check_width(name: str, width: int) -> None:
    if width < 1:
        raise InvalidParameterError(f"{name} width must be >= 1. Got width={width}.")


def _padded_size(image_size: tuple[int, int], factor: int) -> tuple[int, int]:
    return (math.ceil(image_size[0] / factor) * factor, math.ceil(image_size[1] / factor) * factor)


def _pad_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad ``x`` (centred) to ``size``: after normalization zero is the mean pixel, as DC's conv padding."""
    extra_h, extra_w = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if extra_h <= 0 and extra_w <= 0:
        return x
    return F.pad(x, (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2))


class _Classifier(nn.Module):
    """A trunk (``self.trunk``) giving ``feature_dim`` features, then dropout and one linear classifier.

    Inputs are zero-padded to ``padded_size`` first (a multiple of the trunk's total downsampling).
    """

    padded_size: tuple[int, int]
    feature_dim: int
    trunk: nn.Module

    def _add_head(self, num_classes: int, dropout: float) -> None:
        self.head = nn.Sequential(ShardedDropout(dropout), nn.Linear(self.feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(_pad_to(x, self.padded_size)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class AlexNet(_Classifier):
    """DC's AlexNet (``AlexNetBN`` with norm="batch", ``AlexNet`` with norm="none").

    conv5x5(w) -> pool -> conv5x5(1.5w) -> pool -> conv3x3(2w) -> conv3x3(1.5w) -> conv3x3(1.5w) -> pool,
    each conv with bias and followed by norm and ReLU; w = 128 gives DC's 128, 192, 256, 192, 192 filters.
    Inputs are padded to a multiple of 8 px (28 -> 32, as DC's padding=4 for one-channel inputs), and the
    last map is average-pooled to 4x4 (a no-op at 32 px), so the classifier always sees 1.5w x 4 x 4 features.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 128,
                 norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        _check_dropout(dropout)
        _check_width("AlexNet", width)
        check_choice("norm", norm, NORMS)
        wide, narrow = 2 * width, width * 3 // 2
        layers: list[nn.Module] = []
        for cin, cout, kernel, pool in [(in_channels, width, 5, True), (width, narrow, 5, True),
                                        (narrow, wide, 3, False), (wide, narrow, 3, False), (narrow, narrow, 3, True)]:
            layers += [nn.Conv2d(cin, cout, kernel_size=kernel, padding=kernel // 2), _norm_layer(norm, cout),
                       nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2, 2))
        layers.append(nn.AdaptiveAvgPool2d(4))
        self.trunk = nn.Sequential(*layers)
        self.padded_size = _padded_size(image_size, 8)
        self.feature_dim = narrow * 4 * 4
        self._add_head(num_classes, dropout)


# DC's cfg_vgg["VGG11"] with filters in units of the width (64): a number is a conv layer, "M" a max pool
VGG11_STAGES = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


class VGG11(_Classifier):
    """DC's VGG11 (``VGG11BN`` with norm="batch", ``VGG11`` with norm="instance").

    Eight conv3x3 (with bias) -> norm -> ReLU layers of w, 2w, 4w, 4w, 8w, 8w, 8w, 8w filters (w = 64: 64 ... 512)
    and five 2x2 max pools. Inputs are padded to a multiple of 32 px (28 -> 32, as DC's padding=3 for
    one-channel inputs); the last map is average-pooled to 1x1 (a no-op at 32 px), so 8w features.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 64,
                 norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        _check_dropout(dropout)
        _check_width("VGG11", width)
        check_choice("norm", norm, NORMS)
        layers: list[nn.Module] = []
        channels = in_channels
        for stage in VGG11_STAGES:
            if stage == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            out = int(stage) * width
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), _norm_layer(norm, out),
                       nn.ReLU(inplace=True)]
            channels = out
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.trunk = nn.Sequential(*layers)
        self.padded_size = _padded_size(image_size, 32)
        self.feature_dim = channels
        self._add_head(num_classes, dropout)


class BasicBlock(nn.Module):
    """ResNet's basic block as in DC: two conv3x3 (no bias) with norms; a 1x1 conv + norm shortcut on a shape change."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.norm2 = _norm_layer(norm, planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                                          _norm_layer(norm, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(_Classifier):
    """DC's ResNet18 (``ResNet18BN`` with norm="batch", ``ResNet18`` with norm="instance"): the CIFAR ResNet-18.

    A conv3x3 stem (stride 1, no bias) of w filters, then four stages of two basic blocks with w, 2w, 4w, 8w
    filters (w = 64: 64 ... 512), strides 1, 2, 2, 2, and global average pooling (DC's avg_pool2d(4) at 32 and
    28 px), so 8w features at any input size; no padding needed.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 64,
                 norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        _check_dropout(dropout)
        _check_width("ResNet18", width)
        check_choice("norm", norm, NORMS)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False),
                                   _norm_layer(norm, width), nn.ReLU(inplace=True)]
        planes_in = width
        for multiple, stride in [(1, 1), (2, 2), (4, 2), (8, 2)]:
            planes = multiple * width
            layers += [BasicBlock(planes_in, planes, stride, norm), BasicBlock(planes, planes, 1, norm)]
            planes_in = planes
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.trunk = nn.Sequential(*layers)
        self.padded_size = tuple(image_size)  # type: ignore[assignment]
        self.feature_dim = planes_in
        self._add_head(num_classes, dropout)


class MLP(_Classifier):
    """DC's MLP: flattened pixels -> Linear(w) -> ReLU -> Linear(w) -> ReLU -> classifier, w = 128.

    Its first layer has C*H*W inputs (DC's 28*28*1 or 32*32*3), so its size grows with the images; no padding.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 128,
                 dropout: float = 0.0) -> None:
        super().__init__()
        _check_dropout(dropout)
        _check_width("MLP", width)
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size[0] * image_size[1], width),
                                   nn.ReLU(inplace=True), nn.Linear(width, width), nn.ReLU(inplace=True))
        self.padded_size = tuple(image_size)  # type: ignore[assignment]
        self.feature_dim = width
        self._add_head(num_classes, dropout)


@register_model("convnet")
def convnet(**kwargs) -> ConvNet:
    """ConvNet-3: 3 blocks of 128 filters, instance norm, average pooling (DC's ConvNet)."""
    return ConvNet(**kwargs)


@register_model("convnet-bn")
def convnet_bn(**kwargs) -> ConvNet:
    """ConvNet-3 with batch norm instead of instance norm (DC's ConvNetBN)."""
    return ConvNet(**{"norm": "batch", **kwargs})


def _convnet_variant(name: str, source: str, **fixed) -> None:
    def factory(**kwargs) -> ConvNet:
        return ConvNet(**{**fixed, **kwargs})

    factory.__doc__ = f"ConvNet with {', '.join(f'{k}={v}' for k, v in fixed.items())}, instance norm (DC's {source})."
    register_model(name)(factory)


for _depth in (1, 2, 4):
    _convnet_variant(f"convnet-d{_depth}", f"ConvNetD{_depth}", depth=_depth)
for _width in (32, 64, 256):
    _convnet_variant(f"convnet-w{_width}", f"ConvNetW{_width}", width=_width)


@register_model("alexnet")
def alexnet(**kwargs) -> AlexNet:
    """AlexNet with batch norm (DC's AlexNetBN)."""
    return AlexNet(**kwargs)


@register_model("alexnet-nonorm")
def alexnet_nonorm(**kwargs) -> AlexNet:
    """AlexNet without normalization (DC's AlexNet, its cross-architecture net; DC has no instance-norm one)."""
    return AlexNet(**{"norm": "none", **kwargs})


@register_model("vgg11")
def vgg11(**kwargs) -> VGG11:
    """VGG11 with batch norm (DC's VGG11BN)."""
    return VGG11(**kwargs)


@register_model("vgg11-in")
def vgg11_in(**kwargs) -> VGG11:
    """VGG11 with instance norm (DC's VGG11, its cross-architecture net for tiny training sets)."""
    return VGG11(**{"norm": "instance", **kwargs})


@register_model("resnet18")
def resnet18(**kwargs) -> ResNet18:
    """ResNet18 with batch norm (DC's ResNet18BN)."""
    return ResNet18(**kwargs)


@register_model("resnet18-in")
def resnet18_in(**kwargs) -> ResNet18:
    """ResNet18 with instance norm (DC's ResNet18, its cross-architecture net for tiny training sets)."""
    return ResNet18(**{"norm": "instance", **kwargs})


@register_model("mlp")
def mlp(**kwargs) -> MLP:
    """A 3-layer MLP of width 128 (DC's MLP)."""
    return MLP(**kwargs)


def build_model(
    name: str, *, in_channels: int, num_classes: int, image_size: tuple[int, int], seed: int | None = None, **options
) -> nn.Module:
    """Build a registered model; with ``seed`` its initial weights are reproducible and the caller's RNG untouched."""
    factory = MODELS.get(name)
    if seed is None:
        return factory(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options)
    with isolated_rng(seed):
        return factory(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options)


def count_parameters(name: str, in_channels: int = 3, num_classes: int = 10, image_size: tuple[int, int] = (32, 32),
                     **options) -> int:
    """Trainable parameters of a registered model, built on the meta device (no memory, no initialization)."""
    factory = MODELS.get(name)
    with torch.device("meta"):
        net = factory(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def describe_model(name: str) -> str:
    """The first line of a registered model's docstring."""
    return (MODELS.get(name).__doc__ or "").strip().splitlines()[0]


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)
