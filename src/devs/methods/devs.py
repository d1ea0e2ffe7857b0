"""DEvS (Shvai et al., GECCO 2022 Companion): distillation by repeated clustering and averaging.

Each stage trains a ConvNet on the current set with shift/flip ("mutation"), mixup ("crossover") and
dropout, extracts trunk features, clusters them with mini-batch k-means, and replaces each cluster by
the mean of its images and of its label rows. No gradient ever flows into the images.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file

from ..cluster import KMEANS_BACKENDS, cluster_means, kmeans_assign
from ..errors import DistilledFileError, InvalidParameterError
from ..io import DistilledSet, load_distilled
from ..distributed import Group, current_group
from ..runtime import peak_memory_mib, resolve_device
from ..store import ArrayStore
from ..train import extract_features, resolve_precision
from .base import (
    DistillationMethod,
    InputTransform,
    TrainingData,
    as_training_data,
    check_ipc,
    check_number,
    check_zca,
    register_method,
)
from .extractor import (
    ExtractorSpec,
    checkpoint_file,
    content_hash,
    epochs_for_steps,
    fingerprint,
    trained_extractor,
)

logger = logging.getLogger(__name__)

CLUSTERINGS = ("per-class", "global")
FEATURE_LAYERS = ("trunk", "bottleneck")
# Parameters that do not change the result, so they stay out of the stage checkpoint key.
# ipc, schedule and epochs enter a stage's key as that stage's own size and epochs instead.
_NOT_IN_KEY = {"device", "checkpoint_dir", "resume", "progress", "compile", "ipc", "schedule", "stages", "shrink",
               "epochs", "steps_per_stage"}


def geometric_schedule(start: int, ipc: int, *, shrink: float | None = None, stages: int | None = None) -> list[int]:
    """Images per class after each stage, shrinking ``start`` geometrically down to ``ipc``.

    With ``shrink`` (> 1) every stage divides the size by about that factor (start / shrink**i, rounded)
    until the next size would not be above ``ipc``, which is the last stage; with ``stages`` the factor is
    the one that takes exactly that many stages, (start / ipc) ** (1 / stages). Sizes strictly decrease.
    """
    if (shrink is None) == (stages is None):
        raise InvalidParameterError("Give exactly one of 'shrink' and 'stages' to derive a DEvS schedule.")
    if stages is not None:
        check_number("DEvS", "stages", stages, integer=True, low=1)
        shrink = (start / ipc) ** (1 / stages) if start > ipc else 2.0
    check_number("DEvS", "shrink", shrink, integer=False, low=1.0 + 1e-9)
    sizes: list[int] = []
    for power in range(1, 10_000):
        size = round(start / shrink**power)
        if size <= ipc:
            break
        if not sizes or size < sizes[-1]:
            sizes.append(size)
    return sizes + [ipc]


@dataclass(frozen=True)
class StageContext:
    """What a stage has at hand when it builds its representatives (features exist on the main rank only)."""

    net: torch.nn.Module
    features: torch.Tensor | None
    device: torch.device


@register_method("devs")
class DEvS(DistillationMethod):
    """Distill a labelled image set to ``ipc`` images per class with soft labels.

    Parameters
    ----------
    ipc: images per class in the result (``ipc * num_classes`` images in all).
    schedule: images per class after each stage, decreasing and ending at ``ipc``
        (``ipc`` is appended if missing). ``None``: one stage straight to ``ipc``, unless ``stages`` or
        ``shrink`` derive a geometric schedule from the data (see ``geometric_schedule``): ``stages``
        clustering steps, or a size divided by about ``shrink`` per stage, from all images per class.
    clustering: ``"global"`` (the default) clusters all images together, as in the paper (soft labels,
        class counts only approximately ``ipc``); ``"per-class"`` clusters each class separately
        (exactly ``ipc`` per class, labels stay one-hot).
    epochs: epochs of extractor training per stage (an int, or one per stage). ``None`` derives
        them from ``steps_per_stage`` optimizer steps, at least 2 epochs and at most 300.
    warm_start: each stage's extractor starts from the previous stage's trained weights (default: from
        a fresh initialisation, the same seed rule as one stage).
    model, width, depth, norm, dropout, bottleneck: the feature extractor (ConvNet-3 by default,
        dropout 0.2 before the classifier as in the paper, optional bottleneck dense layer).
    feature_layer: where features are taken: ``"trunk"`` (the flattened convolutional output, as the
        paper's "truncated" net) or ``"bottleneck"`` (the bottleneck layer's ReLU output; needs ``bottleneck``).
    max_shift, flip, mixup_alpha, lr, batch_size: the training recipe (paper: 5 px, flip, 0.4); ``flip=None``
        (the default) flips where the data allows it (not digits: ``ImageDataset.flip``).
    zca: ``None`` (the default: per-channel normalization) or the regularization of a ZCA whitening
        (devs.zca, MTT's 0.1) fitted once on the training images: the extractors train and embed on
        whitened images. The images are still averaged (and stored) in pixel units, which commutes with
        the whitening; the file records the transform (``DistilledSet.zca``) to evaluate with.
    precision: ``"fp32"`` (the default), ``"bf16"`` (extractor training and feature extraction under
        bfloat16 autocast) or ``"auto"`` (bf16 where the device has bf16 units: devs.train.resolve_precision).
    restore_contrast: rescale each cluster's mean image to the average contrast (per-channel pixel standard
        deviation) of its members, keeping its brightness. The paper keeps the plain mean (the default); a mean
        of many images is flatter than its members, which hurts networks with batch norm trained on the set
        (BENCHMARKS.md, "Across architectures").
    kmeans, kmeans_batch_size, kmeans_max_iter, kmeans_tol: k-means; ``"torch"`` (the default) runs
        k-means++ and full-batch Lloyd iterations on ``device``; ``"sklearn"`` is the paper's mini-batch
        k-means (batch 1028, at most 200 iterations, tolerance 1e-4); ``"faiss"`` needs faiss installed.
    The defaults (one stage, global clustering, torch k-means, 400 optimizer steps) are the best of the
    settings searched on a validation split (BENCHMARKS.md, "Reproducing the paper").
    device: ``"auto"``, ``"cpu"``, ``"cuda"``; random_state: the seed (stage i uses seed + i).
    checkpoint_dir: where each finished stage is saved; with ``resume=True`` a stage whose file
        matches this configuration is loaded instead of recomputed.
    compile: train the extractors with torch.compile (faster long runs; see TrainRecipe.compile).
    """

    name = "devs"
    runtime_params = ("checkpoint_dir", "resume", "progress", "compile")
    after_stages_params: tuple[str, ...] = ()  # a subclass's settings of work after the last stage (not in stage keys)

    def __init__(
        self,
        ipc: int = 10,
        *,
        schedule: Sequence[int] | None = None,
        stages: int | None = None,
        shrink: float | None = None,
        clustering: str = "global",
        epochs: int | Sequence[int] | None = None,
        steps_per_stage: int = 400,
        warm_start: bool = False,
        model: str = "convnet",
        width: int = 128,
        depth: int = 3,
        norm: str = "instance",
        dropout: float = 0.2,
        bottleneck: int | None = None,
        feature_layer: str = "trunk",
        max_shift: int = 5,
        flip: bool | None = None,
        mixup_alpha: float = 0.4,
        lr: float = 0.01,
        batch_size: int = 256,
        zca: float | None = None,
        precision: str = "fp32",
        restore_contrast: bool = False,
        kmeans: str = "torch",
        kmeans_batch_size: int = 1028,
        kmeans_max_iter: int = 200,
        kmeans_tol: float = 1e-4,
        device: str = "auto",
        random_state: int = 0,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        compile: bool = False,
    ) -> None:
        self.ipc = ipc
        self.schedule = schedule
        self.stages = stages
        self.shrink = shrink
        self.clustering = clustering
        self.epochs = epochs
        self.steps_per_stage = steps_per_stage
        self.warm_start = warm_start
        self.model = model
        self.width = width
        self.depth = depth
        self.norm = norm
        self.dropout = dropout
        self.bottleneck = bottleneck
        self.feature_layer = feature_layer
        self.max_shift = max_shift
        self.flip = flip
        self.mixup_alpha = mixup_alpha
        self.lr = lr
        self.batch_size = batch_size
        self.zca = zca
        self.precision = precision
        self.restore_contrast = restore_contrast
        self.kmeans = kmeans
        self.kmeans_batch_size = kmeans_batch_size
        self.kmeans_max_iter = kmeans_max_iter
        self.kmeans_tol = kmeans_tol
        self.device = device
        self.random_state = random_state
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.progress = progress
        self.compile = compile

    # ----------------------------------------------------------------------------- validation
    def _final_stage_ipc(self) -> int:
        """How many images per class the last stage clusters into (devs+ with multi-formation: more)."""
        return self.ipc

    def _resolve_schedule(self, data: TrainingData) -> list[int]:
        check_ipc("DEvS", self.ipc, data)
        final = self._final_stage_ipc()
        available = int(torch.bincount(data.labels, minlength=data.num_classes).min())
        if self.clustering == "global":
            available = len(data.labels) // data.num_classes
        derived = self.stages is not None or self.shrink is not None
        if derived and self.schedule is not None:
            raise InvalidParameterError("Give DEvS either a 'schedule' or 'stages'/'shrink' to derive one, not both.")
        if derived:
            return geometric_schedule(available, final, shrink=self.shrink, stages=self.stages)
        schedule = list(self.schedule) if self.schedule is not None else []
        for value in schedule:
            check_number("DEvS", "schedule", value, integer=True, low=1)
        if not schedule or schedule[-1] != final:
            schedule.append(final)
        decreasing = all(later < earlier for earlier, later in zip(schedule, schedule[1:]))
        if not decreasing or schedule[0] > available:
            raise InvalidParameterError(
                f"The 'schedule' of DEvS must strictly decrease, start at most at {available} images per class "
                f"and end at {final} (ipc={self.ipc}). Got {schedule} instead."
            )
        return schedule

    def _resolve_epochs(self, data: TrainingData, schedule: list[int]) -> list[int]:
        if self.epochs is None:
            check_number("DEvS", "steps_per_stage", self.steps_per_stage, integer=True, low=1)
            sizes = [len(data.labels)] + [ipc * data.num_classes for ipc in schedule[:-1]]
            return [epochs_for_steps(size, self.steps_per_stage, self.batch_size) for size in sizes]
        epochs = [self.epochs] * len(schedule) if isinstance(self.epochs, int) else list(self.epochs)
        if len(epochs) != len(schedule):
            raise InvalidParameterError(
                f"The 'epochs' parameter of DEvS needs one value per stage ({len(schedule)}); got {len(epochs)}."
            )
        for value in epochs:
            check_number("DEvS", "epochs", value, integer=True, low=1)
        return epochs

    def _validate(self) -> None:
        if self.clustering not in CLUSTERINGS:
            raise InvalidParameterError(
                f"The 'clustering' parameter of DEvS must be one of {', '.join(CLUSTERINGS)}. Got {self.clustering!r} instead."
            )
        if self.feature_layer not in FEATURE_LAYERS:
            raise InvalidParameterError(
                f"The 'feature_layer' parameter of DEvS must be one of {', '.join(FEATURE_LAYERS)}. "
                f"Got {self.feature_layer!r} instead."
            )
        if self.feature_layer == "bottleneck" and not self.bottleneck:
            raise InvalidParameterError("feature_layer='bottleneck' needs a bottleneck layer: set bottleneck=128 (or another width).")
        KMEANS_BACKENDS.get(self.kmeans)
        check_number("DEvS", "random_state", self.random_state, integer=True, low=0)
        check_number("DEvS", "dropout", self.dropout, integer=False, low=0.0, high=0.99)
        check_number("DEvS", "mixup_alpha", self.mixup_alpha, integer=False, low=0.0)
        check_number("DEvS", "max_shift", self.max_shift, integer=True, low=0)
        check_number("DEvS", "batch_size", self.batch_size, integer=True, low=1)
        check_zca(type(self).__name__, self.zca)
        resolve_precision(self.precision, torch.device("cpu"))  # an unknown name fails here
        if self.resume and self.checkpoint_dir is None:
            raise InvalidParameterError("resume=True needs a checkpoint_dir to resume from.")

    # ----------------------------------------------------------------------------- the algorithm
    def fit(self, data: Any) -> "DEvS":
        """Run every stage of the schedule on ``data`` and leave the result in ``distilled_``."""
        self._validate()
        data = as_training_data(data)
        self.flip_ = data.flip if self.flip is None else bool(self.flip)
        schedule = self._resolve_schedule(data)
        epochs = self._resolve_epochs(data, schedule)
        device = resolve_device(self.device)
        self.precision_ = resolve_precision(self.precision, device)
        group = current_group()  # several processes under torchrun; one otherwise
        normalizer = self._input_transform(data, device)  # per-channel units, or ZCA-whitened (zca)
        input_key = fingerprint(data.images, data.labels, data.classes)  # identifies the current stage's input
        images, targets = data.images, data.one_hot()
        self.stages_: list[dict[str, Any]] = []
        # assignments_[i][j]: the output index of stage i's input j (None for a resumed stage).
        self.assignments_: list[torch.Tensor | None] = []
        # extractors_[i]: stage i's trained extractor (None for a resumed stage; see first_extractor).
        self.extractors_: list[torch.nn.Module | None] = []
        init_state = None  # with warm_start: the previous stage's trained weights
        for stage, (stage_ipc, stage_epochs) in enumerate(zip(schedule, epochs)):
            seed = self.random_state + stage
            key = self._stage_key(input_key, stage_ipc, stage_epochs, seed)
            path = self._checkpoint_path(f"stage{stage + 1}-ipc{stage_ipc}-{key}.safetensors")
            extractor_path = self._extractor_path(input_key, stage, stage_epochs, seed)
            input_key = key
            # The main rank decides what is resumed, so all ranks take the same path.
            finished = group.broadcast_object(self._load_finished_stage(path, key) if self.resume and group.is_main else None)
            if finished is not None and self.warm_start and not extractor_path.exists():
                finished = None  # the next stage starts from this stage's extractor, which is gone: redo it
            if finished is not None:
                if self.warm_start:
                    init_state = load_file(str(extractor_path))
                images, targets = finished.images, finished.labels
                self.stages_.append({**finished.config["stage"], "resumed": True})
                self.assignments_.append(None)
                self.extractors_.append(None)
                logger.info("Stage %d: resumed from %s", stage + 1, path)
                continue
            images, targets, assignments, record, net = self._run_stage(
                data, images, targets, stage, stage_ipc, stage_epochs, seed, normalizer, device, extractor_path, group,
                init_state,
            )
            if self.warm_start:
                init_state = net.state_dict()  # the next stage's fresh net copies these values on loading
            self.stages_.append(record)
            self.assignments_.append(assignments)
            self.extractors_.append(net)
            if path is not None and group.is_main:
                stage_set = self._result(data, images, targets, seed)
                stage_set.config.update({"stage_key": key, "stage": record})
                stage_set.save(path)
        # Per-class clustering already gives class-major output (ipc rows per class, in class order), even
        # where a soft label's largest entry is another class; global clustering is sorted by that entry.
        order = torch.arange(len(targets)) if self.clustering == "per-class" else torch.argsort(targets.argmax(1), stable=True)
        if self.assignments_[-1] is not None:  # follow the final reordering by class
            self.assignments_[-1] = torch.argsort(order)[self.assignments_[-1]]
        self.distilled_ = self._result(data, images[order], targets[order], self.random_state)
        # Sizes and epochs only: timings and memory live in stages_ (and the CLI's run record), so that the same
        # seed gives a bit-identical file.
        self.distilled_.config["stages"] = [
            {k: v for k, v in record.items() if not k.endswith(("_s", "_mib")) and k != "resumed"} for record in self.stages_
        ]
        self.distilled_.config["resolved_schedule"] = schedule
        self.distilled_.config["resolved_epochs"] = epochs
        return self

    @staticmethod
    def _load_finished_stage(path: Path | None, key: str) -> DistilledSet | None:
        """The checkpoint of a finished stage with this exact key, or None (a bad file is recomputed)."""
        if path is None or not path.exists():
            return None
        try:
            finished = load_distilled(path)
        except DistilledFileError as error:
            logger.warning("Ignoring unreadable checkpoint %s (%s); recomputing that stage", path, error)
            return None
        return finished if finished.config.get("stage_key") == key else None

    def _run_stage(
        self,
        data: TrainingData,
        images: torch.Tensor | ArrayStore,
        targets: torch.Tensor,
        stage: int,
        stage_ipc: int,
        epochs: int,
        seed: int,
        normalizer: InputTransform,
        device: torch.device,
        extractor_path: Path | None,
        group: Group,
        init_state: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any], torch.nn.Module]:
        timings: dict[str, float] = {}
        show = self.progress and group.is_main
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        net = trained_extractor(self._spec(), images, targets, epochs, seed, normalizer, device,
                                path=extractor_path, reuse=self.resume, compile=self.compile, group=group,
                                progress=f"stage {stage + 1}: train on {len(images)}" if show else None,
                                init_state=init_state)
        timings["train_s"] = time.perf_counter() - start

        start = time.perf_counter()
        features = extract_features(net, images, normalizer, device, group=group, compile=self.compile,
                                    progress=f"stage {stage + 1}: features" if show else None,
                                    layer=self.feature_layer, precision=self.precision_)
        timings["features_s"] = time.perf_counter() - start

        # Clustering runs once, on the main rank; its assignments go to every rank.
        start = time.perf_counter()
        k_total = stage_ipc * data.num_classes
        output_index = torch.empty(len(images), dtype=torch.long)
        if group.is_main:
            offset = 0
            for members, assignments, k in self._cluster(features.numpy(), targets, stage_ipc, data.num_classes, seed, device):
                output_index[members] = torch.as_tensor(assignments, dtype=torch.long) + offset
                offset += k
        output_index = group.broadcast(output_index)
        timings["cluster_s"] = time.perf_counter() - start

        start = time.perf_counter()
        images, targets = self._representatives(images, targets, output_index, k_total, group,
                                                StageContext(net, features, device))
        targets = targets / targets.sum(1, keepdim=True)  # guard against rounding drift
        timings["average_s"] = time.perf_counter() - start

        record = {"stage": stage + 1, "input_size": len(output_index), "output_size": len(images), "epochs": epochs,
                  **{name: round(value, 3) for name, value in timings.items()},
                  "peak_memory_mib": round(peak_memory_mib(), 1)}  # the process's peak so far
        if device.type == "cuda":
            record["cuda_peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)  # this stage's
        logger.info("Stage %d: %d -> %d images (%s)", stage + 1, len(output_index), len(images),
                    ", ".join(f"{name} {value:.1f}s" for name, value in timings.items()))
        return images, targets, output_index, record, net

    def _representatives(self, images, targets, output_index: torch.Tensor, k: int, group: Group,
                         context: "StageContext") -> tuple[torch.Tensor, torch.Tensor]:
        """The images and label rows that replace each cluster: the paper's plain means."""
        return cluster_means(images, targets, output_index, k, group=group, restore_contrast=self.restore_contrast)

    def _cluster(self, features: np.ndarray, targets: torch.Tensor, ipc: int, num_classes: int, seed: int,
                 device: torch.device):
        """Yield (member indices, cluster assignments, k) for each group that is clustered on its own."""
        kmeans = dict(backend=self.kmeans, batch_size=self.kmeans_batch_size, max_iter=self.kmeans_max_iter, tol=self.kmeans_tol,
                      device=device)
        if self.clustering == "global":
            everyone = torch.arange(len(features))
            k = ipc * num_classes
            return [(everyone, kmeans_assign(features, k, seed, **kmeans), k)]
        groups = []
        hard = targets.argmax(1)
        for cls in range(num_classes):
            members = torch.nonzero(hard == cls).flatten()
            if len(members) < ipc:
                raise InvalidParameterError(
                    f"Class {cls} has {len(members)} images at this stage, fewer than the {ipc} asked for; "
                    "use a gentler schedule or clustering='per-class' from the start."
                )
            groups.append((members, kmeans_assign(features[members.numpy()], ipc, seed + 1000 * cls, **kmeans), ipc))
        return groups

    # ----------------------------------------------------------------------------- checkpoints
    def _stage_key(self, input_key: str, ipc: int, epochs: int, seed: int) -> str:
        """Everything that determines a stage's output: its input set, the settings, its size and seed."""
        params = self._key_settings(exclude=_NOT_IN_KEY | set(self.after_stages_params))
        params.update(flip=self.flip_, stage_epochs=epochs, stage_ipc=ipc, stage_seed=seed)  # flip as resolved
        return content_hash({"input": input_key, "params": params})

    def _checkpoint_path(self, name: str) -> Path | None:
        return checkpoint_file(self.checkpoint_dir, name)

    def _spec(self) -> ExtractorSpec:
        """The extractor's network and recipe, with flip and precision resolved for the data and device of the
        fit (``flip_``, ``precision_``)."""
        return dataclasses.replace(ExtractorSpec.of(self), flip=self.flip_, precision=self.precision_)

    def _extractor_path(self, input_key: str, stage: int, epochs: int, seed: int) -> Path | None:
        # The extractor's key leaves out the target sizes, so runs at several ipc values sharing one
        # checkpoint_dir (with resume) train the first-stage extractor once. A warm-started later stage's
        # input key already differs (warm_start is in the stage keys), which keeps the two apart.
        key = self._spec().key(input_key, epochs, seed, zca=self.zca)
        return self._checkpoint_path(f"extractor{stage + 1}-{key}.safetensors")

    def first_extractor(self, data: Any) -> torch.nn.Module:
        """The first stage's extractor (the one trained on all of ``data``), in eval mode, after ``fit``.

        The net ``fit`` trained, or for a resumed first stage the one saved beside it in ``checkpoint_dir``
        (trained again, with the same seed, if that file is gone).
        """
        if not getattr(self, "extractors_", None):
            raise InvalidParameterError("first_extractor() needs a fitted DEvS: call fit(data) first.")
        if self.extractors_[0] is not None:
            return self.extractors_[0].eval()
        data = as_training_data(data)
        self.flip_ = data.flip if self.flip is None else bool(self.flip)
        epochs = self.distilled_.config["resolved_epochs"][0]
        device = resolve_device(self.device)
        self.precision_ = resolve_precision(self.precision, device)
        path = self._extractor_path(fingerprint(data.images, data.labels, data.classes), 0, epochs, self.random_state)
        net = trained_extractor(self._spec(), data.images, data.one_hot(), epochs, self.random_state,
                                self._input_transform(data, device, fitted=getattr(self, "zca_", None)), device,
                                path=path, reuse=True, compile=self.compile)
        self.extractors_[0] = net
        return net.eval()
