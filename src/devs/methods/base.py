"""What every distillation method shares: the estimator contract, input coercion, the registry.

A method is ``Method(**params).fit(data) -> self`` with the result in ``distilled_`` (scikit-learn's
contract): ``__init__`` only stores parameters, ``fit`` validates them and does the work.
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..data import ImageDataset, ImageSplit
from ..errors import DatasetError, InvalidParameterError
from ..io import DistilledSet
from ..registry import Registry
from ..train import Normalizer
from ..zca import ZCA

METHODS: Registry[Callable[..., "DistillationMethod"]] = Registry("method")
register_method = METHODS.register
# Parameters added after files and checkpoints were written, with their defaults: at these values they are left
# out of configs and checkpoint keys, so older files and keys stay valid.
LATER_DEFAULTS: dict[str, Any] = {"zca": None, "precision": "fp32", "loss": "mean", "finetune_loss": "mean",
                                  "restore_contrast": False, "real_batches": "random", "representative_every": 10,
                                  "finetune_real_batches": "random", "finetune_match": "distribution"}


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)


def get_method(name: str, **params) -> "DistillationMethod":
    """Instantiate a registered method; unknown parameters fail with the list of valid ones."""
    cls = METHODS.get(name)
    valid = cls.param_names()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        message = f"Method {name!r} has no parameter(s) {', '.join(unknown)}. Valid: {', '.join(valid)}."
        if "zca" in unknown:
            message += f" ZCA whitening (zca) is supported by: {', '.join(zca_methods())}."
        raise InvalidParameterError(message)
    return cls(**params)


def zca_methods() -> list[str]:
    """The registered methods that take a ``zca`` parameter (ZCA whitening of what their nets see)."""
    return [name for name in METHODS.names() if "zca" in METHODS.get(name).param_names()]


@dataclass(frozen=True)
class TrainingData:
    """The labelled training images a method distills, with what the output file must record."""

    images: torch.Tensor  # float32 [N, C, H, W] pixel units
    labels: torch.Tensor  # int64 [N]
    classes: tuple[str, ...]
    mean: list[float]
    std: list[float]
    name: str
    flip: bool = True  # whether horizontal flips keep the class (ImageDataset.flip)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def one_hot(self) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.labels, self.num_classes).float()


def _images_to_nchw(images: Any) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    elif not tensor.is_floating_point():
        raise DatasetError(f"Images must be uint8 (0..255) or float (0..1); got dtype {tensor.dtype}.")
    tensor = tensor.float()
    if tensor.dim() == 3:  # [N, H, W] grayscale
        tensor = tensor[:, None]
    elif tensor.dim() == 4 and tensor.shape[-1] in (1, 3) and tensor.shape[1] not in (1, 3):
        tensor = tensor.permute(0, 3, 1, 2)  # channels-last [N, H, W, C]
    if tensor.dim() != 4:
        raise DatasetError(f"Images must be [N, H, W], [N, H, W, C] or [N, C, H, W]; got shape {tuple(tensor.shape)}.")
    return tensor.contiguous()


def _stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return mean.tolist(), std.tolist()


def as_training_data(data: Any, classes: list[str] | None = None) -> TrainingData:
    """Accept an ImageDataset, an ImageSplit, an (images, labels) pair of arrays/tensors, or a torch Dataset."""
    if isinstance(data, ImageDataset):
        mean, std = data.channel_stats()
        return TrainingData(data.train.images, data.train.labels, data.classes, mean, std, data.name, data.flip)
    if isinstance(data, TrainingData):
        return data
    if isinstance(data, ImageSplit):
        images, labels, name = data.images, data.labels, "tensors"
    elif isinstance(data, tuple) and len(data) == 2:
        images, labels, name = data[0], data[1], "arrays"
    elif isinstance(data, torch.utils.data.Dataset):
        pairs = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        if not pairs:
            raise DatasetError("The torch Dataset is empty.")
        images = torch.stack([torch.as_tensor(np.asarray(image)) for image, _ in pairs])
        labels = [int(label) for _, label in pairs]
        name = type(data).__name__
    else:
        raise DatasetError(
            f"Cannot distill a {type(data).__name__}; pass an ImageDataset (devs.load_dataset), "
            "an (images, labels) pair, or a torch Dataset of (image, label)."
        )
    images = _images_to_nchw(images)
    labels = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
    if len(images) != len(labels):
        raise DatasetError(f"{len(images)} images but {len(labels)} labels; they must match.")
    if len(labels) == 0:
        raise DatasetError("No training images were given.")
    if int(labels.min()) < 0:
        raise DatasetError("Labels must be class indices >= 0.")
    num_classes = int(labels.max()) + 1 if classes is None else len(classes)
    if int(labels.max()) >= num_classes:
        raise DatasetError(f"Label {int(labels.max())} is out of range for {num_classes} classes.")
    names = tuple(classes) if classes is not None else tuple(str(i) for i in range(num_classes))
    mean, std = _stats(images)
    return TrainingData(images, labels, names, mean, std, name)


def check_number(owner: str, name: str, value: Any, *, integer: bool, low: float, high: float = float("inf")) -> None:
    """scikit-learn's wording: "The 'ipc' parameter of DEvS must be an int in the range [1, inf). Got 0 instead." """
    kind = "an int" if integer else "a number"
    ok = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    if not ok or not low <= value <= high:
        upper = "inf)" if high == float("inf") else f"{high}]"
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be {kind} in the range [{low}, {upper}. Got {value!r} instead."
        )


def check_ipc(owner: str, ipc: Any, data: TrainingData) -> None:
    """The target images per class must exist in every class."""
    check_number(owner, "ipc", ipc, integer=True, low=1)
    counts = torch.bincount(data.labels, minlength=data.num_classes)
    smallest = int(counts.min())
    if ipc > smallest:
        raise InvalidParameterError(
            f"ipc={ipc} images per class is more than the smallest class holds ({smallest}); choose ipc <= {smallest}."
        )


def check_zca(owner: str, value: Any) -> None:
    """``zca``: None (off) or the ZCA regularization, a finite number > 0 (MTT's is 0.1)."""
    ok = value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                           and value > 0)
    if not ok:
        raise InvalidParameterError(
            f"The 'zca' parameter of {owner} must be None (no whitening) or the ZCA regularization, a number in the "
            f"range (0, inf) such as 0.1 (MTT's). Got {value!r} instead."
        )


class Whitening:
    """ZCA whitening on ``device``, used where a ``train.Normalizer`` would be (same call: pixels in, net inputs out)."""

    def __init__(self, zca: ZCA, device: torch.device) -> None:
        self.zca, self.device = zca, device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.zca(images.to(self.device, torch.float32))


InputTransform = Normalizer | Whitening


def to_pixels(transform: InputTransform, images: torch.Tensor) -> torch.Tensor:
    """The inverse of ``transform``: net inputs back to pixel units (unclipped)."""
    if isinstance(transform, Whitening):
        return transform.zca.unwhiten(images, check_finite=False)
    return images * transform.std + transform.mean


class DistillationMethod:
    """Base class: stores keyword parameters; subclasses implement ``fit``."""

    name: str = ""
    # Parameters that change how a run executes but never its result; kept out of the file's config.
    runtime_params: tuple[str, ...] = ()
    # Methods that learn step by step hand out their set at given elapsed times (devs.snapshots) when this is
    # set before ``fit``; the others have nothing in between to hand out.
    supports_snapshots: bool = False
    snapshots: Any = None  # a devs.snapshots.Snapshots, or None
    # This method's own LATER_DEFAULTS: parameters it gained after its files were written whose names other
    # methods had from the start (so they cannot go in the shared table), with their defaults.
    added_later: dict[str, Any] = {}

    @classmethod
    def param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p for p in signature.parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def fit(self, data: Any) -> "DistillationMethod":  # pragma: no cover - interface
        raise NotImplementedError

    def _settings(self, exclude: Any = ()) -> dict[str, Any]:
        """``get_params()`` less ``exclude``, and less the parameters added after files were written while they
        keep their default (LATER_DEFAULTS): files and checkpoint keys of runs without them stay what they were
        before the parameters existed."""
        later = {**LATER_DEFAULTS, **self.added_later}
        return {k: v for k, v in self.get_params().items() if k not in exclude
                and not (k in later and v == later[k])}

    def _key_settings(self, exclude: Any = ()) -> dict[str, Any]:
        """``_settings`` for a checkpoint key: ``precision`` as resolved for this fit (``precision_``; "auto"
        becomes what it chose), and absent when that is fp32, so fp32 keys stay as they were before it."""
        params = self._settings(exclude={*exclude, "precision"})
        if getattr(self, "precision_", "fp32") != "fp32":
            params["precision"] = self.precision_
        return params

    def _input_transform(self, data: TrainingData, device: torch.device, fitted: ZCA | None = None) -> InputTransform:
        """What the nets see: per-channel normalization, or with ``zca`` set the ZCA whitening fitted on ``data``
        (``fitted``: one already fitted there, passed through). Sets ``zca_`` (the ZCA or None), which the
        result records (``DistilledSet.zca``)."""
        regularization = getattr(self, "zca", None)
        if regularization is None:
            self.zca_ = None
            return Normalizer(data.mean, data.std, device)
        if fitted is None or fitted.regularization != float(regularization) or fitted.normalize:
            fitted = ZCA.fit(data.images, regularization=regularization, dataset=data.name)
        self.zca_ = fitted
        return Whitening(fitted, device)

    def _config(self, data: TrainingData) -> dict[str, Any]:
        """The file's config: the parameters (less the runtime ones), the data's flip, and the precision used
        where it is not the default ("auto" recorded as what it became on this device)."""
        config = {**_jsonable(self._settings(exclude=self.runtime_params)), "data_flip": data.flip}
        if getattr(self, "precision", "fp32") != "fp32":
            config["precision"] = self.precision_
        return config

    def _result(self, data: TrainingData, images: torch.Tensor, labels: torch.Tensor, seed: int,
                formation: int = 1) -> DistilledSet:
        zca = getattr(self, "zca_", None)
        return DistilledSet(
            images=images,
            labels=labels,
            classes=data.classes,
            mean=data.mean,
            std=data.std,
            dataset=data.name,
            method=self.name,
            config=self._config(data),
            seed=seed,
            source_train_size=len(data.images),
            formation=formation,
            zca=zca.describe() if zca is not None else None,
        )


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = list(value)
        else:
            out[key] = str(value)
    return out
