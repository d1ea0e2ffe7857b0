"""Gradient matching (DC) and distribution matching (DM): the classic learned-pixel baselines.

Both learn ``ipc`` synthetic images per class by gradient descent on the pixels, starting from random
real images of that class, against a freshly initialised ConvNet-3 (instance norm) every iteration:

- DC, "Dataset Condensation with Gradient Matching" (Zhao, Mopuri & Bilen, ICLR 2021): per class,
  match the gradient of the classification loss w.r.t. the network weights on a real batch and on the
  synthetic images (a layer-wise sum of 1 - cosine similarity per output unit); between matchings,
  train the network for ``inner_loop`` epochs on the synthetic set. With ``net_data="real"``,
  ``distance="l1"``, ``dsa`` and ``formation`` it becomes IDC's variant (Kim et al., ICML 2022): the
  network trains on real images between matchings, and the distance is the L1 norm of the difference.
- DM, "Dataset Condensation with Distribution Matching" (Zhao & Bilen, WACV 2023): per class, match
  the mean trunk embedding of a real batch and of the synthetic images (squared Euclidean distance),
  both augmented with the same differentiable Siamese augmentation (devs.dsa).

As in the official code, the images are optimised in normalised units (the source set's mean/std), or
with ``zca`` in ZCA-whitened units (devs.zca; MTT's ``--zca`` preprocessing, real batches whitened alike);
the result holds them converted back to pixel units, unclipped (they may leave [0, 1], which the
devs.distilled.v1 format allows). Labels are one-hot rows, ``ipc`` images per class, class-major.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..dsa import DEFAULT_STRATEGY, augment_groups, parse_strategy, sample_siamese
from ..errors import InvalidParameterError, check_choice
from ..formation import check_factor, decode, downsample, encode
from ..io import DistilledSet
from ..models import build_model
from ..runtime import make_generator, resolve_device
from ..store import ArrayStore
from ..train import (
    BatchAugmenter,
    TrainRecipe,
    features_without_grad,
    mean_features,
    precision_autocast,
    resolve_precision,
)
from .base import (
    DistillationMethod,
    InputTransform,
    TrainingData,
    as_training_data,
    check_ipc,
    check_number,
    check_zca,
    register_method,
    to_pixels,
)
from .extractor import checkpoint_file, content_hash, fingerprint
from .progress import MatchingProgress, load_progress, save_progress
from .representative import RepresentativeBatches, embed_training_set

logger = logging.getLogger(__name__)

# DC's (outer_loop, inner_loop) per ipc: the official code's get_loops table (the paper reports 1, 10, 50).
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
IMAGE_MOMENTUM = 0.5  # SGD momentum on the images, both papers' code
NET_DSA = "color_crop"  # IDC's augmentation of the real images its networks train on (its default less cutout; no flip)
NET_MOMENTUM = 0.5  # SGD momentum of DC's inner-loop network training, official main.py
SAVE_EVERY_S = 60.0  # seconds between two progress checkpoints (a save takes milliseconds)
ZCA_FORMATION = ("{owner} cannot combine zca with formation > 1: ZCA whitening mixes every pixel with every other, "
                 "so it does not commute with the downsampling that packs the tiles; use zca or formation, not both.")


def dc_loops(ipc: int) -> tuple[int, int]:
    """DC's (outer_loop, inner_loop) for ``ipc``: the official table's entry nearest to ``ipc``.

    Values between entries take the nearer one, ties the smaller ipc's (e.g. 5 -> ipc 1's 1/1,
    15 -> ipc 10's 10/50, 100 -> ipc 50's 50/10).
    """
    nearest = min(DC_LOOPS, key=lambda entry: (abs(entry - ipc), entry))
    return DC_LOOPS[nearest]


def layer_distance(real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
    """DC's distance between two gradients of one parameter tensor (the official ``distance_wb``).

    Rows are output units (conv filters, linear outputs): sum over rows of 1 - cosine similarity.
    1-D tensors (biases, norm scales) contribute 0, as in the official code.
    """
    if real.dim() <= 1:
        return real.new_zeros(())
    real, syn = real.flatten(1), syn.flatten(1)
    cosine = (real * syn).sum(-1) / (real.norm(dim=-1) * syn.norm(dim=-1) + 1e-6)
    return (1 - cosine).sum()


GRADIENT_DISTANCES = ("cosine", "l1", "mse")
NET_DATA = ("synthetic", "real")


def gradient_distance(real: Sequence[torch.Tensor], syn: Sequence[torch.Tensor], distance: str = "cosine"
                      ) -> torch.Tensor:
    """The matching loss between two lists of parameter gradients.

    ``"cosine"``: DC's, ``layer_distance`` summed over all parameter tensors. ``"l1"`` / ``"mse"``: IDC's, the
    summed absolute / squared difference over the convolution kernels only (IDC's defaults leave biases,
    norm scales and the linear classifier out: ``--bias False --fc False``).
    """
    if distance == "cosine":
        return torch.stack([layer_distance(r, s) for r, s in zip(real, syn)]).sum()
    power = 1 if distance == "l1" else 2
    return torch.stack([(r - s).abs().pow(power).sum() for r, s in zip(real, syn) if r.dim() == 4]).sum()


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


DM_LOSSES = ("mean", "mmd")
REAL_BATCHES = ("random", "representative")
MMD_BANDWIDTHS = (0.5, 1.0, 2.0)  # Gaussian kernels at these multiples of the median squared real-real distance


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances, differentiable at 0 (unlike torch.cdist's square root)."""
    return ((a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * a @ b.T).clamp_min(0)


def mmd_loss(real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
    """Squared MMD between the rows of ``real`` [n, D] (fixed) and ``syn`` [m, D] under a sum of Gaussian
    kernels exp(-d / (s h)) for s in MMD_BANDWIDTHS, h the median squared real-real distance (detached).

    Scaled by h / (2 sum(1/s)): as h grows each kernel tends to 1 - d / (s h), and the biased squared MMD with
    squared-distance d to 2 sum(1/s) / h x ||mean(real) - mean(syn)||^2, so the scaled loss tends to DM's own
    ("mean"), with gradients of the same size, and adds the higher moments at finite bandwidth.
    """
    real_real = _squared_distances(real, real)
    h = real_real.detach().median().clamp_min(1e-12)

    def kernel(d: torch.Tensor) -> torch.Tensor:
        return sum(torch.exp(-d / (scale * h)) for scale in MMD_BANDWIDTHS)

    mmd = (kernel(real_real).mean() + kernel(_squared_distances(syn, syn)).mean()
           - 2 * kernel(_squared_distances(real, syn)).mean())
    return mmd * h / (2 * sum(1 / scale for scale in MMD_BANDWIDTHS))


def _check_positive(owner: str, name: str, value: Any) -> None:
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
        _check_positive(owner, "lr_img", self.lr_img)
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


@register_method("dc")
class GradientMatching(_PixelMatching):
    """Dataset Condensation with gradient matching (Zhao, Mopuri & Bilen, ICLR 2021).

    Parameters
    ----------
    ipc: synthetic images per class (``ipc * num_classes`` in all), initialised from real images.
    iterations: outer iterations, each with a fresh random ConvNet (paper: 1000).
    outer_loop, inner_loop: matchings per iteration, and epochs of network training on the synthetic
        set between two matchings. ``None``: the official table (ipc 1: 1/1, 10: 10/50, 20: 20/25, ...,
        50: 50/10), other ipc values taking the nearest entry (see ``dc_loops``).
    lr_img: SGD learning rate on the (normalised) images, momentum 0.5 (paper: 0.1).
    lr_net: SGD learning rate of the inner-loop network training, momentum 0.5 (paper: 0.01).
    batch_real: real images per class per matching (paper: 256); batch_train: inner-loop batch (256).
    formation: multi-formation factor (devs.formation): each stored image holds ``formation**2`` training
        images, matched decoded; 1 (the paper): off.
    dsa: a DSA strategy (devs.dsa) drawn once per class and matching and applied to its real and synthetic
        images alike (the DSA paper; IDC: ``"color_crop_cutout"``); ``None`` (the paper): no augmentation.
    distance: ``"cosine"`` (the paper: 1 - cosine per output unit, every weight tensor) or IDC's ``"l1"`` /
        ``"mse"`` (summed absolute / squared difference of the convolution kernels' gradients).
    net_data: what the network trains on between matchings: ``"synthetic"`` (the paper: ``inner_loop``
        epochs on the synthetic set, momentum 0.5) or ``"real"`` (IDC: ``inner_loop`` passes over
        ``real_per_update`` random real images in batches of ``batch_train``, momentum 0.9, weight decay
        5e-4, each image augmented by ``NET_DSA`` and half the batches by CutMix).
    real_per_update: real images per network update with ``net_data="real"`` (IDC: 500).
    width, depth: the ConvNet (ConvNet-3, 128 filters, as in the paper).
    time_budget_s: stop after the iteration in which this many seconds (since ``fit`` began) are spent.
    zca: ``None`` (the default: per-channel normalization, as the paper) or the regularization of a ZCA
        whitening (devs.zca, MTT's 0.1) fitted on the training images: the pixels are learned in whitened
        units instead, and stored unwhitened (pixel units); the file records the transform to evaluate with.
    device: ``"auto"``, ``"cpu"``, ``"cuda"``; random_state: the seed of every random draw.
    progress: show a progress bar over iterations.
    checkpoint_dir: where the run's progress is saved (every minute and at the end); with ``resume=True``
        a saved run with the same data, start and settings continues from where it stopped (also to
        extend a finished run with more ``iterations``).

    After ``fit``: ``distilled_``, ``loss_history_`` (mean matching loss per class and matching, one
    value per iteration), ``iterations_done_``, ``elapsed_s_``.
    """

    name = "dc"
    # IDC's options came after DC's files and checkpoints; at these values they stay out of their keys.
    added_later = {"formation": 1, "dsa": None, "distance": "cosine", "net_data": "synthetic", "real_per_update": 500}

    def __init__(
        self,
        ipc: int = 10,
        *,
        iterations: int = 1000,
        outer_loop: int | None = None,
        inner_loop: int | None = None,
        lr_img: float = 0.1,
        lr_net: float = 0.01,
        batch_real: int = 256,
        batch_train: int = 256,
        formation: int = 1,
        dsa: str | None = None,
        distance: str = "cosine",
        net_data: str = "synthetic",
        real_per_update: int = 500,
        width: int = 128,
        depth: int = 3,
        time_budget_s: float | None = None,
        zca: float | None = None,
        device: str = "auto",
        random_state: int = 0,
        progress: bool = True,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ) -> None:
        self.ipc = ipc
        self.iterations = iterations
        self.outer_loop = outer_loop
        self.inner_loop = inner_loop
        self.lr_img = lr_img
        self.lr_net = lr_net
        self.batch_real = batch_real
        self.batch_train = batch_train
        self.formation = formation
        self.dsa = dsa
        self.distance = distance
        self.net_data = net_data
        self.real_per_update = real_per_update
        self.width = width
        self.depth = depth
        self.time_budget_s = time_budget_s
        self.zca = zca
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume

    def _validate(self) -> None:
        super()._validate()
        _check_positive("GradientMatching", "lr_net", self.lr_net)
        check_number("GradientMatching", "batch_train", self.batch_train, integer=True, low=1)
        if self.outer_loop is not None:
            check_number("GradientMatching", "outer_loop", self.outer_loop, integer=True, low=1)
        if self.inner_loop is not None:
            check_number("GradientMatching", "inner_loop", self.inner_loop, integer=True, low=0)
        parse_strategy(self.dsa)
        check_choice("distance", self.distance, GRADIENT_DISTANCES, "cosine: DC's; l1, mse: IDC's")
        check_choice("net_data", self.net_data, NET_DATA, "synthetic: DC's; real: IDC's")
        check_number("GradientMatching", "real_per_update", self.real_per_update, integer=True, low=1)

    def _loops(self) -> tuple[int, int]:
        outer, inner = dc_loops(self.ipc)
        return (outer if self.outer_loop is None else self.outer_loop,
                inner if self.inner_loop is None else self.inner_loop)

    def _resolved(self) -> dict[str, Any]:
        outer, inner = self._loops()
        return {"resolved_outer_loop": outer, "resolved_inner_loop": inner}

    def _iteration(self, state: MatchingState, net: nn.Module, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """``outer_loop`` matchings on one fresh net, training it (on the synthetic set, or real images) in between."""
        outer, inner = self._loops()
        params = list(net.parameters())
        train_net = self._net_trainer(state, net)
        groups = self._augmentation_groups(state)
        total = torch.zeros((), device=state.device)
        for step in range(outer):
            loss = torch.stack([self._class_loss(state, net, params, cls, groups)
                                for cls in range(state.num_classes)]).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=[state.images])  # only the pixels need a gradient here
            optimizer.step()
            total += loss.detach()
            if step < outer - 1:  # the official loop does not train the net after its last matching
                train_net(inner)
        return total / (state.num_classes * outer)

    def _class_loss(self, state: MatchingState, net: nn.Module, params: list[nn.Parameter], cls: int,
                    groups: tuple[str, ...]) -> torch.Tensor:
        """Distance between the weight gradients of one class's real batch and its synthetic images, both
        augmented by one draw from ``groups`` (none: no augmentation)."""
        real = state.sampler.sample(cls, self.batch_real)
        syn = decode(state.class_images(cls), self.formation)
        if groups:  # one draw for the class's real and synthetic images (drawn only with dsa: DC's path unchanged)
            draw = sample_siamese(groups, state.generator, tuple(syn.shape[2:]))
            real, syn = draw(real), draw(syn)
        real_target = torch.full((len(real),), cls, device=state.device)
        real_grads = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), real_target), params)]
        syn_target = torch.full((len(syn),), cls, device=state.device)
        # create_graph: the distance must be differentiable w.r.t. the synthetic pixels.
        syn_grads = torch.autograd.grad(F.cross_entropy(net(syn), syn_target), params, create_graph=True)
        return gradient_distance(real_grads, syn_grads, self.distance)

    def _net_trainer(self, state: MatchingState, net: nn.Module) -> Callable[[int], None]:
        """How this iteration trains its net between matchings: ``train(passes)``."""
        params = list(net.parameters())
        if self.net_data == "synthetic":
            net_optimizer = torch.optim.SGD(params, lr=self.lr_net, momentum=NET_MOMENTUM)
            return lambda epochs: self._train_net(state, net, net_optimizer, epochs)
        net_optimizer = torch.optim.SGD(params, lr=self.lr_net, momentum=0.9, weight_decay=5e-4)  # IDC's train.py
        recipe = TrainRecipe(batch_size=self.batch_train, dsa=NET_DSA, dsa_mode="composed",
                             cutmix_prob=0.5)
        augment = BatchAugmenter(recipe, int(torch.randint(2**31 - 1, (1,), generator=state.generator)), state.device)
        return lambda passes: self._train_net_on_real(state, net, net_optimizer, augment, passes)

    def _train_net(self, state: MatchingState, net: nn.Module, net_optimizer: torch.optim.Optimizer,
                   epochs: int) -> None:
        """``epochs`` shuffled passes over the (frozen) synthetic set, decoded, with hard labels, no augmentation."""
        images = decode(state.images.detach(), self.formation)
        labels = state.labels.repeat_interleave(self.formation**2)  # decode's order: each image's tiles in turn
        size = len(images)
        batch = min(self.batch_train, size)
        for _ in range(epochs):
            order = torch.randperm(size, generator=state.generator).to(state.device)
            for begin in range(0, size, batch):
                index = order[begin : begin + batch]
                loss = F.cross_entropy(net(images[index]), labels[index])
                net_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                net_optimizer.step()

    def _train_net_on_real(self, state: MatchingState, net: nn.Module, net_optimizer: torch.optim.Optimizer,
                           augment: BatchAugmenter, passes: int) -> None:
        """IDC's network update: per pass, ``real_per_update`` random real images in batches of ``batch_train``,
        augmented by ``augment`` (per-image DSA, CutMix on half the batches)."""
        for _ in range(passes):
            images, labels = state.sampler.sample_any(self.real_per_update)
            targets = F.one_hot(labels.to(state.device), state.num_classes).float()
            for rows in torch.arange(len(images), device=state.device).split(self.batch_train):
                batch, batch_targets = augment(images[rows], targets[rows])
                loss = F.cross_entropy(net(batch), batch_targets)  # probability targets (CutMix mixes them)
                net_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                net_optimizer.step()


@register_method("dm")
class DistributionMatching(_PixelMatching):
    """Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

    Parameters
    ----------
    ipc: synthetic images per class (``ipc * num_classes`` in all), initialised from real images.
    iterations: iterations, each with a fresh random ConvNet (paper: 20000).
    lr_img: SGD learning rate on the (normalised) images, momentum 0.5 (paper: 1.0).
    batch_real: real images per class per iteration (paper: 256).
    dsa: the differentiable Siamese augmentation strategy (paper:
        ``"color_crop_cutout_flip_scale_rotate"``); ``None`` or ``"none"`` switches it off.
    formation: multi-formation factor (devs.formation; IDC): each stored image holds ``formation**2``
        training images at 1/``formation`` of the size, matched decoded; 1 (the paper): off.
    width, depth: the ConvNet whose trunk (``net.features``) embeds the images (ConvNet-3, 128 filters).
    time_budget_s: stop after the iteration in which this many seconds (since ``fit`` began) are spent.
    zca: ``None`` (the default: per-channel normalization, as the paper) or the regularization of a ZCA
        whitening (devs.zca, MTT's 0.1) fitted on the training images: the pixels are learned in whitened
        units instead, and stored unwhitened (pixel units); the file records the transform to evaluate with.
    precision: ``"fp32"`` (the default), ``"bf16"`` (the embeddings under bfloat16 autocast; the loss and the
        pixels stay fp32) or ``"auto"`` (bf16 on a GPU that supports it; fp32 on CPUs, where it was slower).
    loss: ``"mean"`` (the paper: squared distance between the classes' mean embeddings) or ``"mmd"``: the
        squared maximum mean discrepancy under a sum of Gaussian kernels (bandwidths 0.5, 1 and 2 x the median
        squared distance between the class's real embeddings), which matches every moment of the embeddings,
        not only the mean (after M3D, Zhang et al. AAAI 2024); scaled so that it equals ``"mean"`` in the
        limit of wide kernels, so the same ``lr_img`` applies (see ``mmd_loss``).
    real_batches: ``"random"`` (the paper: a new random batch of each class every iteration) or
        ``"representative"`` (after DREAM, Liu et al. ICCV 2023): the images nearest the centres of a k-means
        clustering of the class into ``batch_real`` clusters, redrawn every ``representative_every``
        iterations (devs.methods.representative, which says where it departs from DREAM).
    representative_every: iterations between two clusterings with ``real_batches="representative"``.
    device: ``"auto"``, ``"cpu"``, ``"cuda"``; random_state: the seed of every random draw.
    progress: show a progress bar over iterations.
    checkpoint_dir: where the run's progress is saved (every minute and at the end); with ``resume=True``
        a saved run with the same data, start and settings continues from where it stopped (also to
        extend a finished run with more ``iterations``).

    After ``fit``: ``distilled_``, ``loss_history_`` (the iteration's loss divided by the number of
    classes, as the official code logs it), ``iterations_done_``, ``elapsed_s_``.
    """

    name = "dm"

    def __init__(
        self,
        ipc: int = 10,
        *,
        iterations: int = 20000,
        lr_img: float = 1.0,
        batch_real: int = 256,
        dsa: str | None = DEFAULT_STRATEGY,
        formation: int = 1,
        width: int = 128,
        depth: int = 3,
        time_budget_s: float | None = None,
        zca: float | None = None,
        precision: str = "fp32",
        loss: str = "mean",
        real_batches: str = "random",
        representative_every: int = 10,
        device: str = "auto",
        random_state: int = 0,
        progress: bool = True,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ) -> None:
        self.ipc = ipc
        self.iterations = iterations
        self.lr_img = lr_img
        self.batch_real = batch_real
        self.dsa = dsa
        self.precision = precision
        self.loss = loss
        self.real_batches = real_batches
        self.representative_every = representative_every
        self.formation = formation
        self.width = width
        self.depth = depth
        self.time_budget_s = time_budget_s
        self.zca = zca
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume

    def _validate(self) -> None:
        super()._validate()
        parse_strategy(self.dsa)
        resolve_precision(self.precision, torch.device("cpu"))  # an unknown name fails here
        check_choice("DM loss", self.loss, DM_LOSSES, "mean: the paper's; mmd: every moment, after M3D")
        check_choice("real_batches", self.real_batches, REAL_BATCHES,
                     "random: the paper's; representative: k-means representatives, after DREAM")
        check_number("dm", "representative_every", self.representative_every, integer=True, low=1)

    def _initial_state(self, data: TrainingData, normalizer: InputTransform, device: torch.device) -> MatchingState:
        state = super()._initial_state(data, normalizer, device)
        if self.real_batches == "representative":
            features = embed_training_set(self._selection_net(data, state), state.sampler.take, len(data.labels))
            state.representatives = RepresentativeBatches(features, state.sampler.members, self.batch_real,
                                                          self.representative_every, self.random_state)
        return state

    def _selection_net(self, data: TrainingData, state: MatchingState) -> nn.Module:
        """The net whose features pick representative real batches: a random ConvNet from the run's seed."""
        return _PixelMatching._fresh_net(self, data, state, seed=self.random_state)

    def _real_images(self, state: MatchingState, cls: int) -> torch.Tensor:
        """Class ``cls``'s real batch at this iteration: random (the paper), or its representatives."""
        if state.representatives is None:
            return state.sampler.sample(cls, self.batch_real)
        return state.sampler.take(state.representatives.rows(cls, state.iteration))

    def _iteration(self, state: MatchingState, net: nn.Module, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """One step on the images: per class, squared distance between mean real and synthetic embeddings.

        Each class has its own augmentation draw, the same for its real and synthetic images; the classes
        are then augmented and embedded together (augment_groups), which gives what a loop over classes
        gives, with fewer and larger kernel launches.
        """
        net.requires_grad_(False)  # the net is a fixed random embedding; only the pixels learn
        groups = self._augmentation_groups(state)
        image_size = tuple(state.images.shape[2:])
        reals, draws = [], []
        for cls in range(state.num_classes):  # the official loop's order of draws: real batch, then augmentation
            reals.append(self._real_images(state, cls))
            draws.append(sample_siamese(groups, state.generator, image_size))
        real_sizes = [len(real) for real in reals]
        real_batch = augment_groups(torch.cat(reals), real_sizes, draws)
        with precision_autocast(self.precision_, state.device):
            if self.loss == "mmd":  # every real embedding, not only their means
                real_features = features_without_grad(net, real_batch).float().split(real_sizes)
            else:
                real_means = mean_features(net, real_batch, sizes=real_sizes)
        syn = decode(state.images, self.formation)  # class-major, as the stored images
        syn_sizes = [len(syn) // state.num_classes] * state.num_classes
        syn = augment_groups(syn, syn_sizes, draws)
        # One call on a GPU; class by class on the CPU, where one large batch runs slower (its activations are
        # re-allocated from the system every iteration: 1.3x at 10 per class with formation 2).
        parts = syn.split(syn_sizes) if syn.device.type == "cpu" else (syn,)
        with precision_autocast(self.precision_, state.device):
            syn_features = torch.cat([net.features(part) for part in parts]).float().split(syn_sizes)
        if self.loss == "mmd":
            distances = [mmd_loss(real_features[cls], features) for cls, features in enumerate(syn_features)]
        else:
            real_means = real_means.float()
            distances = [((real_means[cls] - features.mean(0)) ** 2).sum() for cls, features in enumerate(syn_features)]
        loss = torch.stack([distance + self._extra_loss(net, syn_features[cls], cls)
                            for cls, distance in enumerate(distances)]).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach() / state.num_classes

    def _extra_loss(self, net: nn.Module, syn_features: torch.Tensor, cls: int) -> torch.Tensor | float:
        """A term added to each class's matching loss (none in DM; devs+ adds one for trained nets)."""
        return 0.0
