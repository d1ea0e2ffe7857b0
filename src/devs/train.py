"""Training, feature extraction and accuracy for classifiers.

airbench's habits: the data set is one tensor on the device, normalized once, augmented per batch
with tensor ops; ``train_classifier`` returns the trained net. A data set larger than memory comes as
an ArrayStore and is read a batch at a time instead; the rest of the loop is the same.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .augment import cutmix, mixup, random_flip, random_shift
from .distributed import Group
from .dsa import parse_strategy, sample_composed, sample_per_image
from .errors import InvalidParameterError, check_choice
from .models import set_row_shard
from .runtime import has_fast_bf16, isolated_rng, make_generator
from .store import ArrayStore

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
PRECISION_CHOICES = (*PRECISIONS, "auto")  # auto: bf16 where the device has bf16 units (resolve_precision)
DSA_MODES = ("single", "composed")
GPU_CHUNK_VALUES = 2**24  # input values per mean_features call off the CPU: 5,461 32x32x3 images, 341 at 128 px


@dataclass(frozen=True)
class TrainRecipe:
    """How to train one network. Defaults are DC's evaluation protocol without augmentation."""

    epochs: int = 300
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_drops: tuple[float, ...] = (0.5,)  # multiply the learning rate by lr_gamma after these fractions of the epochs
    lr_gamma: float = 0.1  # (DC: x0.1 at half; IDC: x0.2 at 2/3 and 5/6)
    max_shift: int = 0  # random shift in pixels, 0 = off
    flip: bool = False  # random horizontal flip
    mixup_alpha: float = 0.0  # 0 = no mixup
    dsa: str | None = None  # DSA strategy such as "color_crop_cutout_flip_scale_rotate", drawn per image; None = off
    dsa_mode: str = "single"  # "single": one group per batch (DSA, DM, MTT); "composed": IDC's flip, color, one, cutout
    cutmix_prob: float = 0.0  # CutMix on this share of the batches (IDC: 0.5); 0 = off
    cutmix_beta: float = 1.0  # CutMix's Beta(beta, beta) mixing weight
    precision: str = "fp32"  # "bf16" runs forward/backward under bfloat16 autocast
    # torch.compile the net: on a 2-core CPU about 1.5x the images/s after 20-50 s of compiling (once per
    # process and architecture), so it pays on long runs only. Results match eager up to float rounding.
    compile: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InvalidParameterError(f"The 'epochs' parameter must be an int in the range [1, inf). Got {self.epochs} instead.")
        if self.batch_size < 1:
            raise InvalidParameterError(f"The 'batch_size' parameter must be an int in the range [1, inf). Got {self.batch_size} instead.")
        if self.lr <= 0:
            raise InvalidParameterError(f"The 'lr' parameter must be > 0. Got {self.lr} instead.")
        check_choice("precision", self.precision, PRECISIONS)
        parse_strategy(self.dsa)
        check_choice("dsa_mode", self.dsa_mode, DSA_MODES)
        if not 0 <= self.cutmix_prob <= 1 or self.cutmix_beta <= 0:
            raise InvalidParameterError(f"cutmix_prob must be in [0, 1] and cutmix_beta > 0; got {self.cutmix_prob} "
                                        f"and {self.cutmix_beta}.")
        if any(not 0 < drop < 1 for drop in self.lr_drops) or not 0 < self.lr_gamma <= 1:
            raise InvalidParameterError(f"lr_drops must be fractions in (0, 1) and lr_gamma in (0, 1]; got "
                                        f"{self.lr_drops} and {self.lr_gamma}.")

    def replace(self, **changes) -> "TrainRecipe":
        return dataclasses.replace(self, **changes)


class Normalizer:
    """Per-channel (x - mean) / std with the statistics of the source training set."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=device)[None, :, None, None]
        self.std = torch.tensor(list(std), dtype=torch.float32, device=device)[None, :, None, None]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(self.mean.device, torch.float32) - self.mean) / self.std


def resolve_precision(precision: str, device: torch.device, pays_on_cpu: bool = True) -> str:
    """``precision`` itself, or for "auto" "bf16" where ``device`` computes bfloat16 in hardware, else "fp32".
    ``pays_on_cpu=False``: a workload that bf16 slows down even on such a CPU stays fp32 there under "auto"."""
    check_choice("precision", precision, PRECISION_CHOICES)
    if precision == "auto":
        fast = has_fast_bf16(device) and (pays_on_cpu or device.type != "cpu")
        return "bf16" if fast else "fp32"
    return precision


def precision_autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_classifier(
    net: nn.Module,
    images: torch.Tensor | ArrayStore,
    targets: torch.Tensor,
    recipe: TrainRecipe,
    normalizer: Normalizer,
    seed: int,
    device: torch.device,
    progress: str | None = None,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    group: Group | None = None,
) -> nn.Module:
    """Train ``net`` on ``images`` (pixel units) and ``targets`` (probability rows) with ``recipe``.

    ``images`` is a tensor (normalized once, kept on the device) or an ArrayStore (read a batch at a
    time, the next batch read in a background thread). Soft targets use cross-entropy against
    probabilities. ``on_batch(index, logits)``, if given, sees the row indices of every training batch
    and the net's (detached) logits on it, as trained (augmented). With an active ``group`` (torchrun),
    every rank builds the same global batch and computes its own rows under DistributedDataParallel;
    the result equals a single process's up to float rounding. Returns the net in eval mode.
    """
    if len(images) != len(targets):
        raise InvalidParameterError(f"{len(images)} images but {len(targets)} label rows.")
    group = group or Group()
    if group.active and on_batch is not None:
        raise InvalidParameterError("on_batch hooks see whole batches; they are not available in distributed training.")
    net = net.to(device)
    rows = _TrainingRows(images, normalizer, device)
    targets = targets.to(device, torch.float32)
    optimizer, scheduler = sgd_schedule(net.parameters(), recipe)
    net.train()
    if group.active:
        if recipe.compile:
            warnings.warn("compile is not applied to distributed (torchrun) training: the net trains eagerly under "
                          "DistributedDataParallel; feature extraction and evaluation still compile.", stacklevel=2)
        ids = [torch.cuda.current_device()] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
    else:
        model = torch.compile(net) if recipe.compile else net  # shares net's parameters
    step = _Step(net, model, optimizer, recipe, group, on_batch)
    with isolated_rng(seed, device):  # dropout masks come from the global RNG
        _run_epochs(step, rows, targets, recipe, scheduler, BatchAugmenter(recipe, seed, device), progress)
    set_row_shard(net, None)
    net.eval()
    return net


class _TrainingRows:
    """The training images as the loop reads them: normalized, on the device, a batch of rows at a time."""

    def __init__(self, images: torch.Tensor | ArrayStore, normalizer: Normalizer, device: torch.device) -> None:
        self.store = images if isinstance(images, ArrayStore) else None
        self.data = None if self.store is not None else normalizer(images.to(device))
        self.normalizer, self.device = normalizer, device

    def __len__(self) -> int:
        return len(self.store if self.store is not None else self.data)

    def batches(self, indices: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        if self.store is None:
            yield from (self.data[index] for index in indices)
            return
        with ThreadPoolExecutor(max_workers=1) as pool:  # read batch i + 1 while batch i trains
            pending = [pool.submit(self.store.__getitem__, index.cpu()) for index in indices[:1]]
            for i in range(len(indices)):
                pixels = pending.pop().result()
                if i + 1 < len(indices):
                    pending.append(pool.submit(self.store.__getitem__, indices[i + 1].cpu()))
                yield self.normalizer(pixels.to(self.device, non_blocking=True))


class _Step:
    """One optimizer step on a global batch: all of it in one process, or this rank's rows under DDP."""

    def __init__(self, net, model, optimizer, recipe, group: Group, on_batch) -> None:
        self.net, self.model, self.optimizer, self.recipe = net, model, optimizer, recipe
        self.group, self.on_batch = group, on_batch

    def __call__(self, index: torch.Tensor, batch: torch.Tensor, batch_targets: torch.Tensor) -> torch.Tensor:
        if self.group.active:
            mine = self.group.rows(len(batch))
            # A rank without rows in a short last batch still joins DDP's gradient exchange, with weight 0.
            weight = 1.0 if mine.stop > mine.start else 0.0
            mine = mine if weight else slice(0, 1)
            set_row_shard(self.net, (len(batch), mine))
            with precision_autocast(self.recipe.precision, batch.device):
                logits = self.model(batch[mine])
            # DDP averages gradients over ranks: scale so the average is the mean over the global batch.
            scale = weight * self.group.world_size / len(batch)
            loss = F.cross_entropy(logits.float(), batch_targets[mine], reduction="sum") * scale
        else:
            with precision_autocast(self.recipe.precision, batch.device):
                logits = self.model(batch)
            if self.on_batch is not None:
                self.on_batch(index, logits.detach())
            loss = F.cross_entropy(logits.float(), batch_targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def sgd_schedule(parameters, recipe: TrainRecipe):
    """The recipe's optimizer (SGD with momentum and weight decay) and its step schedule (per epoch)."""
    optimizer = torch.optim.SGD(parameters, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    milestones = [int(recipe.epochs * drop) for drop in recipe.lr_drops]
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=recipe.lr_gamma)


class BatchAugmenter:
    """One net's data order and augmentation draws under ``recipe``, all from streams seeded by ``seed``: the
    same seed gives the same epochs of batches, whichever loop trains the net (train_classifier, devs.together)."""

    def __init__(self, recipe: TrainRecipe, seed: int, device: torch.device) -> None:
        self.recipe = recipe
        self.generator = make_generator(seed, device if device.type == "cuda" else "cpu")
        self.beta_rng = np.random.default_rng(seed)
        self.dsa_rng = torch.Generator().manual_seed(seed)  # DSA draws on the CPU: no device sync per batch
        self.dsa_groups = parse_strategy(recipe.dsa)
        self.sample = sample_composed if recipe.dsa_mode == "composed" else sample_per_image

    def epoch(self, n: int, device: torch.device) -> list[torch.Tensor]:
        """The row indices of one epoch's batches (a fresh shuffle)."""
        order = torch.randperm(n, generator=self.generator, device=self.generator.device).to(device)
        return list(order.split(min(self.recipe.batch_size, n)))

    def __call__(self, batch: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch (normalized) and its target rows, augmented as the recipe says."""
        recipe = self.recipe
        batch = random_shift(batch, recipe.max_shift, self.generator)
        if recipe.flip:
            batch = random_flip(batch, self.generator)
        if self.dsa_groups:
            batch = self.sample(self.dsa_groups, self.dsa_rng, tuple(batch.shape[-2:]), len(batch))(batch)
        batch, targets = mixup(batch, targets, recipe.mixup_alpha, self.generator, self.beta_rng)
        return cutmix(batch, targets, recipe.cutmix_prob, recipe.cutmix_beta, self.generator, self.beta_rng)


def _run_epochs(step: _Step, rows: _TrainingRows, targets, recipe, scheduler, augment: BatchAugmenter,
                progress) -> None:
    n = len(rows)
    device = targets.device
    bar = tqdm(range(recipe.epochs), desc=progress, disable=None if progress else True, leave=False, unit="epoch")
    for _ in bar:
        indices = augment.epoch(n, device)
        epoch_loss = torch.zeros((), device=device)
        for index, batch in zip(indices, rows.batches(indices)):
            batch, batch_targets = augment(batch, targets[index])
            epoch_loss += step(index, batch, batch_targets) * len(index)  # no host sync per batch
        scheduler.step()
        if not bar.disable:
            bar.set_postfix(loss=f"{float(epoch_loss) / n:.3f}")


def inference_batch_size(images: torch.Tensor | ArrayStore) -> int:
    """Images per inference batch: about half a million pixels (1,024 at 32 px, 32 at 128 px), which
    bounds the activations' memory whatever the image size."""
    return max(1, min(1024, 2**19 // (images.shape[-1] * images.shape[-2])))


def _inference_layout(device: torch.device) -> torch.memory_format:
    """The memory layout of inference batches: channels-last on the CPU (see _inference_runner), else the default."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def _inference_runner(net: nn.Module, device: torch.device, compile: bool, output: str = "forward"):
    """The function that runs inference: ``net``'s method ``output`` (``forward``, ``features``, ...) itself,
    or on the CPU the same of a channels-last copy of ``net``.

    oneDNN's CPU convolutions run about 1.2x faster on channels-last (NHWC) tensors, and with
    torch.compile (which also fuses the norm, ReLU and pooling that are slow in that layout in eager
    mode) about 2x; a copy, so that the trained net keeps its layout for saving and further training.
    """
    model = copy.deepcopy(net).to(memory_format=_inference_layout(device)) if device.type == "cpu" else net
    run = model if output == "forward" else getattr(model, output)
    return torch.compile(run) if compile else run


@torch.no_grad()
def features_without_grad(net: nn.Module, batch: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """The trunk features of every row of ``batch`` (already normalized), without gradients; on the CPU on a
    channels-last copy of ``net``, ``chunk`` rows at a time, as mean_features."""
    if batch.device.type != "cpu":
        rows = max(1, GPU_CHUNK_VALUES // batch[0].numel())
        return torch.cat([net.features(part) for part in batch.split(rows)])
    run = _inference_runner(net, batch.device, compile=False, output="features")
    layout = _inference_layout(batch.device)
    return torch.cat([run(rows.contiguous(memory_format=layout)) for rows in batch.split(chunk)])


@torch.no_grad()
def mean_features(net: nn.Module, batch: torch.Tensor, chunk: int = 32, sizes: list[int] | None = None) -> torch.Tensor:
    """The mean trunk feature of ``batch`` (already normalized), without gradients; with ``sizes``, one mean
    per run of that many consecutive rows ([len(sizes), D]). On the CPU it runs on a channels-last copy of
    ``net``, ``chunk`` rows at a time: 1.3-1.6x faster there for DM's 256 real images per class (smaller
    activations are not re-allocated from the system on every call). Elsewhere the whole batch goes in one
    call, up to ``GPU_CHUNK_VALUES`` input values at a time."""
    groups = batch.split(sizes) if sizes is not None else (batch,)
    if batch.device.type != "cpu":
        features = features_without_grad(net, batch)
        means = torch.stack([part.mean(0) for part in features.split([len(group) for group in groups])])
    else:
        run = _inference_runner(net, batch.device, compile=False, output="features")
        layout = _inference_layout(batch.device)
        means = torch.stack([sum(run(rows.contiguous(memory_format=layout)).sum(0) for rows in group.split(chunk))
                             / len(group) for group in groups])
    return means if sizes is not None else means[0]


@torch.no_grad()
def _batched(
    run, images: torch.Tensor, normalizer: Normalizer, device: torch.device, batch_size: int, precision: str,
    progress: str | None = None, pad: bool = False,
) -> torch.Tensor:
    """``run(batch)`` over ``images`` in batches, float32 on the CPU; with ``pad``, a short last batch is
    zero-padded to ``batch_size`` rows (rows are independent) so that a compiled ``run`` sees one shape."""
    layout = _inference_layout(device)
    outputs = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=progress, disable=None if progress else True, leave=False, unit="batch"):
        batch = normalizer(images[start : start + batch_size].to(device))
        rows = len(batch)
        if pad and rows < batch_size:
            batch = torch.cat([batch, batch.new_zeros(batch_size - rows, *batch.shape[1:])])
        with precision_autocast(precision, device):
            outputs.append(run(batch.contiguous(memory_format=layout))[:rows].float().cpu())
    return torch.cat(outputs)


def extract_features(
    net: nn.Module,
    images: torch.Tensor | ArrayStore,
    normalizer: Normalizer,
    device: torch.device,
    batch_size: int | None = None,
    precision: str = "fp32",
    progress: str | None = None,
    group: Group | None = None,
    compile: bool = False,
    layer: str = "trunk",
) -> torch.Tensor | None:
    """Flattened trunk features of ``images`` (``layer="bottleneck"``: the bottleneck layer's), float32 on the CPU.

    ``batch_size`` defaults to as many images as make about half a million pixels (1,024 at 32 px,
    32 at 128 px), which bounds the activations' memory. With an active ``group`` each rank computes its
    share of every chunk and the main rank gets all features in order (the other ranks get None).
    ``compile`` runs the trunk under torch.compile (pays from some ten thousand images on).
    """
    net.eval()
    batch_size = batch_size or inference_batch_size(images)
    group = group or Group()
    run = _inference_runner(net, device, compile, output="bottleneck_features" if layer == "bottleneck" else "features")
    if not group.active:
        return _batched(run, images, normalizer, device, batch_size, precision, progress, pad=compile)
    chunk = batch_size * group.world_size
    pieces = []
    for start in tqdm(range(0, len(images), chunk), desc=progress, disable=None if progress and group.is_main else True,
                      leave=False, unit="chunk"):
        total = min(chunk, len(images) - start)
        mine = group.rows(total)
        empty = mine.stop == mine.start  # a short last chunk: compute one row to learn the shape, send none
        rows = slice(start, start + 1) if empty else slice(start + mine.start, start + mine.stop)
        local = _batched(run, images[rows], normalizer, device, batch_size, precision, pad=compile)
        pieces.append(group.gather_rows(local[:0] if empty else local, total))
    return torch.cat(pieces) if group.is_main else None


def predict_logits(
    net: nn.Module,
    images: torch.Tensor,
    normalizer: Normalizer,
    device: torch.device,
    batch_size: int | None = None,
    precision: str = "fp32",
    compile: bool = False,
) -> torch.Tensor:
    net.eval()
    run = _inference_runner(net, device, compile)
    return _batched(run, images, normalizer, device, batch_size or inference_batch_size(images), precision, pad=compile)


def accuracy(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalizer: Normalizer,
    device: torch.device,
    precision: str = "fp32",
    compile: bool = False,
) -> float:
    """Top-1 accuracy in [0, 1]."""
    logits = predict_logits(net, images, normalizer, device, precision=precision, compile=compile)
    return float((logits.argmax(1) == labels.cpu()).float().mean())
