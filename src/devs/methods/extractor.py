"""The feature extractor that DEvS and the feature-based coresets share.

One ConvNet trained with the DEvS paper's recipe (shift, flip, mixup, dropout) on an input set. A trained
extractor is saved under a content hash of its input, settings, epochs and seed, so DEvS at several sizes
and the herding / k-center coresets of the same data train it once and reuse it (``reuse=True``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..models import build_model
from ..errors import OutputError
from ..distributed import Group
from ..runtime import atomic_path
from ..store import ArrayStore
from ..train import Normalizer, TrainRecipe, train_classifier

logger = logging.getLogger(__name__)

MIN_EPOCHS, MAX_EPOCHS = 2, 300


@dataclass(frozen=True)
class ExtractorSpec:
    """Network and training recipe of a feature extractor (defaults: the DEvS paper's)."""

    model: str = "convnet"
    width: int = 128
    depth: int = 3
    norm: str = "instance"
    dropout: float = 0.2
    bottleneck: int | None = None
    max_shift: int = 5
    flip: bool = True
    mixup_alpha: float = 0.4
    lr: float = 0.01
    batch_size: int = 256
    precision: str = "fp32"  # "bf16": trained under bfloat16 autocast

    @classmethod
    def of(cls, owner: Any) -> "ExtractorSpec":
        """The spec made of the same-named attributes of an estimator (e.g. a DEvS instance)."""
        return cls(**{name: getattr(owner, name) for name in cls.__dataclass_fields__})

    def recipe(self, epochs: int) -> TrainRecipe:
        return TrainRecipe(epochs=epochs, batch_size=self.batch_size, lr=self.lr, max_shift=self.max_shift,
                           flip=self.flip, mixup_alpha=self.mixup_alpha, precision=self.precision)

    def build(self, images: torch.Tensor, num_classes: int, seed: int) -> nn.Module:
        return build_model(self.model, in_channels=images.shape[1], num_classes=num_classes,
                           image_size=tuple(images.shape[2:]), width=self.width, depth=self.depth, norm=self.norm,
                           dropout=self.dropout, bottleneck=self.bottleneck, seed=seed)

    def key(self, input_key: str, epochs: int, seed: int, zca: float | None = None) -> str:
        """The trained net's checkpoint key; ``zca``: the ZCA regularization its inputs were whitened with
        (None, per-channel normalization, leaves the key as it was before ZCA existed)."""
        params = asdict(self)
        if params["precision"] == "fp32":  # keys of fp32 extractors stay as they were before the field existed
            del params["precision"]
        payload = {"input": input_key, "params": params, "epochs": epochs, "seed": seed}
        return content_hash(payload if zca is None else {**payload, "zca": float(zca)})


def epochs_for_steps(size: int, steps: int, batch_size: int) -> int:
    """Epochs that make about ``steps`` optimizer steps over ``size`` images, within [2, 300]."""
    return min(MAX_EPOCHS, max(MIN_EPOCHS, round(steps * batch_size / size)))


def content_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(images: torch.Tensor | ArrayStore, labels: torch.Tensor, classes: Sequence[str]) -> str:
    """A content hash of a labelled set, so a checkpoint is never reused for other data."""
    digest = hashlib.blake2b(digest_size=16)
    # A store's digest covers its bytes (computed once, when it was packed); reading 10 GB again is too slow.
    digest.update(images.digest.encode() if isinstance(images, ArrayStore) else images.numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    digest.update(json.dumps(list(classes)).encode())
    return digest.hexdigest()


def checkpoint_file(directory: str | Path | None, name: str) -> Path | None:
    """``directory / name``, creating the directory; None when there is no checkpoint directory."""
    if directory is None:
        return None
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"Cannot create the checkpoint directory {directory}: {error.strerror}; "
                          "choose a writable path.") from None
    return directory / name


def trained_extractor(
    spec: ExtractorSpec,
    images: torch.Tensor,
    targets: torch.Tensor,
    epochs: int,
    seed: int,
    normalizer: Normalizer | Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    path: Path | None = None,
    reuse: bool = False,
    progress: str | None = None,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    compile: bool = False,
    group: Group | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """A net trained on ``images``/``targets`` with ``spec``; loaded from ``path`` when ``reuse`` and it exists.

    ``init_state``: weights to start training from (a warm start) instead of the seed's initialisation.

    A freshly trained net is saved to ``path`` (atomically, by the main rank only) when one is given.
    With an active ``group`` the net trains under DistributedDataParallel.
    """
    group = group or Group()
    net = spec.build(images, targets.shape[1], seed)
    # The main rank decides about reuse (a checkpoint_dir shared by all ranks is assumed).
    if group.broadcast_object(reuse and path is not None and path.exists()):
        net.load_state_dict(load_file(str(path)))
        logger.info("Reusing the trained extractor %s", path)
        return net.to(device).eval()
    if init_state is not None:
        net.load_state_dict(init_state)
    recipe = spec.recipe(epochs).replace(compile=compile)
    train_classifier(net, images, targets, recipe, normalizer, seed, device, progress=progress, on_batch=on_batch,
                     group=group)
    if path is not None and group.is_main:
        with atomic_path(path) as temp_path:
            save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(temp_path))
    return net
