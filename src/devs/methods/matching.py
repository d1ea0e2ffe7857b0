"""The loop that gradient matching (DC, devs.methods.gradient_matching) and distribution matching (DM,
devs.methods.distribution_matching) share: both learn the pixels.

Both learn ``ipc`` synthetic images per class by gradient descent on the pixels, starting from random
real images of that class, against a freshly initialised ConvNet-3 (instance norm) every iteration.
As in the official code, the images are optimised in normalised units (the source set's mean/std), or
with ``zca`` in ZCA-whitened units (devs.zca; MTT's ``--zca`` preprocessing, real batches whitened alike);
the result holds them converted back to pixel units, unclipped (they may leave [0, 1], which the
devs.distilled.v1 format allows). Labels are one-hot rows, ``ipc`` images per class, class-major.
Here: the loop (``_PixelMatching``: the start from real images, a fresh net per iteration, snapshots,
the time budget, progress checkpoints and resuming) and the real-image sampler; each method adds its
iteration.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..dsa import parse_strategy
from ..errors import InvalidParameterError
from ..formation import check_factor, downsample, encode
from ..io import DistilledSet
from ..models import build_model
from ..runtime import make_generator, resolve_device
from ..store import ArrayStore
from ..train import resolve_precision
from .base import (
    DistillationMethod,
    InputTransform,
    TrainingData,
    as_training_data,
    check_ipc,
    check_number,
    check_zca,
    to_pixels,
)
from .extractor import checkpoint_file, content_hash, fingerprint
from .progress import MatchingProgress, load_progress, save_progress
from .representative import RepresentativeBatches

logger = logging.getLogger(__name__)
IMAGE_MOMENTUM = 0.5  # SGD momentum on the images, both papers' code
SAVE_EVERY_S = 60.0  # seconds between two progress checkpoints (a save takes milliseconds)
ZCA_FORMATION = ("{owner} cannot combine zca with formation > 1: ZCA whitening mixes every pixel with every other, "
                 "so it does not commute with the downsampling that packs the tiles; use zca or formation, not both.")


class ClassSampler:
    """Random real images of one class (the official ``get_images``), drawn from a local generator."""

    def __init__(self, images: torch.Tensor | ArrayStore, labels: torch.Tensor, num_classes: int,
                 generator: torch.Generator, normalizer: InputTransform):
        # A tensor is normalised once and kept on the device; a store is read (and normalised) per draw.
        self.images = images if isinstance(images, ArrayStore) else normalizer(images)
        self.normalizer = normalizer
        self.labels = labels.cpu()
        self.members = [torch.nonzero(self.labels == cls).flatten() for cls in range(num_classes)]
        self.generator = generator

    def sample(self, cls: int, count: int) -> torch.Tensor:
        """``count`` distinct images of ``cls`` (all of them, shuffled, if the class is smaller)."""
        members = self.members[cls]
        # The permutation is drawn on the CPU so that CPU and GPU runs use the same stream.
        return self.take(members[torch.randperm(len(members), generator=self.generator)[:count]])

    def sample_any(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` distinct random images of any class, normalized, and their class indices (CPU)."""
        rows = torch.randperm(len(self.labels), generator=self.generator)[:count]
        return self.take(rows), self.labels[rows]

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        """The training images at ``rows`` (CPU indices), normalized, on the images' device."""
        if isinstance(self.images, ArrayStore):
            return self.normalizer(self.images[rows])
        return self.images[rows.to(self.images.device)]


@dataclass
class MatchingState:
    """What one run works on: the synthetic images (a leaf tensor, normalised) and how to get real ones."""

    images: torch.Tensor  # [K * ipc, C, H, W], requires_grad
    labels: torch.Tensor  # int64 [K * ipc], class-major
    ipc: int
    num_classes: int
    sampler: ClassSampler
    generator: torch.Generator
    device: torch.device
    flip: bool = True  # whether augmentation may flip (TrainingData.flip)
    iteration: int = 0  # the iteration under way (the loop sets it)
    representatives: RepresentativeBatches | None = None  # DM's real batches when real_batches="representative"

    def class_images(self, cls: int) -> torch.Tensor:
        return self.images[cls * self.ipc : (cls + 1) * self.ipc]

def check_positive(owner: str, name: str, value: Any) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be a number in the range (0, inf). Got {value!r} instead."
        )


class _PixelMatching(DistillationMethod):
    """The loop DC and DM share: init from real images, one fresh net per iteration, SGD on the pixels.

    Subclasses define ``_iteration(state, net, optimizer)``, which updates the images and returns the
    iteration's loss as a detached scalar tensor.
    """

    runtime_params = ("device", "progress", "checkpoint_dir", "resume")
    supports_snapshots = True
    precision_: str = "fp32"  # the precision fit resolved (DM's ``precision``; DC always fp32)
    formation: int = 1  # stored images hold formation**2 training images (a parameter of both DM and DC)
    dsa: str | None  # the matching's DSA strategy (DM: the paper's; DC: none unless set)
    ipc: int
    iterations: int
    lr_img: float
    batch_real: int
    width: int
    depth: int
    time_budget_s: float | None
    zca: float | None
    device: str
    random_state: int
    progress: bool
    checkpoint_dir: str | Path | None
    resume: bool

    # ----------------------------------------------------------------------------- validation
    def _validate(self) -> None:
        owner = type(self).__name__
        check_number(owner, "iterations", self.iterations, integer=True, low=1)
        check_positive(owner, "lr_img", self.lr_img)
        check_number(owner, "batch_real", self.batch_real, integer=True, low=1)
        check_number(owner, "width", self.width, integer=True, low=1)
        check_number(owner, "depth", self.depth, integer=True, low=1)
        check_number(owner, "random_state", self.random_state, integer=True, low=0)
        if self.time_budget_s is not None:
            check_number(owner, "time_budget_s", self.time_budget_s, integer=False, low=0.0)
        if self.resume and self.checkpoint_dir is None:
            raise InvalidParameterError(f"resume=True needs a checkpoint_dir to resume from ({owner}).")
        check_zca(owner, self.zca)
        if self.zca is not None and self.formation != 1:
            raise InvalidParameterError(ZCA_FORMATION.format(owner=owner))

    def _resolved(self) -> dict[str, Any]:
        """Settings derived from the parameters, recorded in the file's config."""
        return {}

    # ----------------------------------------------------------------------------- the loop
    def fit(self, data: Any) -> "_PixelMatching":
        """Learn ``ipc`` images per class from ``data`` and leave the result in ``distilled_``."""
        start = time.perf_counter()  # the time budget covers the whole fit, setup included
        self._validate()
        data = as_training_data(data)
        check_ipc(type(self).__name__, self.ipc, data)
        device = resolve_device(self.device)
        # fp32, or bf16 autocast in the embeddings (DM's precision). "auto" stays fp32 on a CPU even with bf16
        # units: DM iterations ran 0.85x as fast in bf16 there (BENCHMARKS "Speed", bf16 autocast).
        self.precision_ = resolve_precision(getattr(self, "precision", "fp32"), device, pays_on_cpu=False)
        # Per-channel units, or ZCA-whitened (zca); devs+'s DM step passes DEvS's fitted ZCA (fitted_zca).
        normalizer = self._input_transform(data, device, fitted=getattr(self, "fitted_zca", None))
        state = self._initial_state(data, normalizer, device)
        optimizer = torch.optim.SGD([state.images], lr=self.lr_img, momentum=IMAGE_MOMENTUM)
        checkpoint, losses, spent_before = self._resume(self._checkpoint(data, state), state, optimizer)
        start -= spent_before  # a resumed run keeps its clock (time_budget_s, snapshots)
        snapshots = self.snapshots
        if snapshots is not None and spent_before:
            snapshots.skip_until(spent_before)
        disable = None if self.progress else True  # None: a bar only on a terminal, as DEvS does
        bar = tqdm(range(len(losses), self.iterations), desc=self.name, disable=disable, leave=False, unit="it",
                   initial=len(losses), total=self.iterations)
        saved_at = time.perf_counter()
        for iteration in bar:
            state.iteration = iteration
            net = self._fresh_net(data, state, seed=int(torch.randint(2**31 - 1, (1,), generator=state.generator)))
            losses.append(self._iteration(state, net, optimizer))
            if not bar.disable and iteration % 10 == 0:  # reading the loss syncs a GPU, so not every step
                bar.set_postfix(loss=f"{float(losses[-1]):.4f}")
            if snapshots is not None:
                snapshots.take(self._elapsed(start, device), lambda: self._current_set(data, normalizer, state, len(losses)))
            if self._budget_spent(start, device):
                break
            if checkpoint and time.perf_counter() - saved_at >= SAVE_EVERY_S:
                self._save_progress(checkpoint, state, optimizer, losses, time.perf_counter() - start)
                saved_at = time.perf_counter()
        bar.close()
        if checkpoint:
            self._save_progress(checkpoint, state, optimizer, losses, time.perf_counter() - start)
        self.loss_history_: list[float] = torch.stack(losses).cpu().tolist()
        self.iterations_done_ = len(losses)
        self.elapsed_s_ = time.perf_counter() - start
        self.distilled_ = self._current_set(data, normalizer, state, self.iterations_done_)
        return self

    def _current_set(self, data: TrainingData, normalizer: InputTransform, state: MatchingState,
                     iterations_done: int) -> DistilledSet:
        """The synthetic images learned so far as a distilled set (one-hot labels), in pixel units."""
        pixels = to_pixels(normalizer, state.images.detach())
        labels = F.one_hot(state.labels, data.num_classes).float()
        distilled = self._result(data, pixels.cpu(), labels.cpu(), self.random_state, formation=self.formation)
        distilled.config.update(self._resolved(), iterations_done=iterations_done)
        return distilled

    # ----------------------------------------------------------------------------- checkpoints
    def _checkpoint(self, data: TrainingData, state: MatchingState) -> tuple[Path, str] | None:
        """(file, key) of this run's progress checkpoint, or None without a checkpoint_dir.

        The key covers the data, the starting images and every setting except those that only decide
        when to stop (iterations, time_budget_s), so a finished run can be extended with more iterations.
        """
        if self.checkpoint_dir is None:
            return None
        params = self._key_settings(exclude={*self.runtime_params, "iterations", "time_budget_s"})
        if not data.flip:  # the augmentation drops flips (keys of data that may flip stay as they were)
            params["data_flip"] = False
        start = fingerprint(state.images.detach().cpu(), state.labels.cpu(), data.classes)
        key = content_hash({"method": self.name, "params": params, "start": start,
                            "data": fingerprint(data.images, data.labels, data.classes)})
        return checkpoint_file(self.checkpoint_dir, f"{self.name}-ipc{self.ipc}-{key}.progress.safetensors"), key

    def _resume(self, checkpoint: tuple[Path, str] | None, state: MatchingState, optimizer: torch.optim.Optimizer
                ) -> tuple[tuple[Path, str] | None, list[torch.Tensor], float]:
        """With ``resume``, restore a saved run into ``state`` and ``optimizer``: (checkpoint, losses so far,
        seconds spent so far).

        A saved run that went past ``iterations`` cannot be cut back: this run starts afresh and leaves that
        file alone (checkpoint None).
        """
        if not (self.resume and checkpoint):
            return checkpoint, [], 0.0
        path, key = checkpoint
        progress = load_progress(path, key, state.images.shape)
        if progress is None:
            return checkpoint, [], 0.0
        if progress.iterations_done > self.iterations:
            logger.warning("%s holds %d iterations, more than the %d asked for: starting afresh without "
                           "checkpoints (that file is kept)", path, progress.iterations_done, self.iterations)
            return None, [], 0.0
        with torch.no_grad():
            state.images.copy_(progress.images)
        if progress.momentum is not None:
            optimizer.state[state.images]["momentum_buffer"] = progress.momentum.to(state.device)
        state.generator.set_state(progress.generator_state)
        logger.info("%s: resumed after %d iterations from %s", self.name, progress.iterations_done, path)
        return checkpoint, [loss.to(state.device) for loss in progress.losses], progress.elapsed_s

    @staticmethod
    def _save_progress(checkpoint: tuple[Path, str], state: MatchingState, optimizer: torch.optim.Optimizer,
                       losses: list[torch.Tensor], elapsed_s: float) -> None:
        path, key = checkpoint
        momentum = optimizer.state[state.images].get("momentum_buffer")
        stacked = torch.stack(losses) if losses else torch.zeros(0)
        save_progress(path, key, MatchingProgress(state.images, momentum, state.generator.get_state(), stacked,
                                                  elapsed_s))

    def _initial_state(self, data: TrainingData, normalizer: InputTransform, device: torch.device) -> MatchingState:
        """Synthetic images initialised from distinct random real images of each class (init='real').

        With multi-formation, each stored image starts as ``formation**2`` real images at reduced size.
        """
        factor = check_factor(self.formation, tuple(data.images.shape[2:]), f"{self.name} formation")
        generator = make_generator(self.random_state)
        sampler = ClassSampler(data.images, data.labels, data.num_classes, generator, normalizer)
        tiles = [downsample(sampler.sample(cls, self.ipc * factor**2), factor) for cls in range(data.num_classes)]
        images = torch.cat([encode(class_tiles, factor) for class_tiles in tiles])
        labels = torch.arange(data.num_classes, device=device).repeat_interleave(self.ipc)
        return MatchingState(images.detach().clone().requires_grad_(True), labels, self.ipc, data.num_classes,
                             sampler, generator, device, data.flip)

    def _fresh_net(self, data: TrainingData, state: MatchingState, seed: int) -> nn.Module:
        """A randomly initialised ConvNet (instance norm, no dropout), reproducible from ``seed``."""
        net = build_model("convnet", in_channels=data.images.shape[1], num_classes=data.num_classes,
                          image_size=tuple(data.images.shape[2:]), width=self.width, depth=self.depth,
                          norm="instance", seed=seed)
        return net.to(state.device).train()

    def _augmentation_groups(self, state: MatchingState) -> tuple[str, ...]:
        """The DSA groups the matching draws from (``dsa``), less flips where the data must not be flipped."""
        return tuple(group for group in parse_strategy(self.dsa) if state.flip or group != "flip")

    def _budget_spent(self, start: float, device: torch.device) -> bool:
        return self.time_budget_s is not None and self._elapsed(start, device) >= self.time_budget_s

    @staticmethod
    def _elapsed(start: float, device: torch.device) -> float:
        if device.type == "cuda":  # queued kernels count: wait for them before reading the clock
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    def _iteration(self, state: MatchingState, net: nn.Module, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - interface
