"""Coreset baselines: real training images chosen per class, with one-hot labels.

random (class-balanced random subset), herding and k-center (greedy selections in the feature space of the
extractor DEvS trains), forgetting (the most often forgotten images while a net trains).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import InvalidParameterError
from ..runtime import atomic_path, make_generator, resolve_device
from ..train import extract_features
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
from .extractor import ExtractorSpec, checkpoint_file, epochs_for_steps, fingerprint, trained_extractor


def balanced_counts(total: int, num_classes: int) -> list[int]:
    """Split ``total`` images over the classes as evenly as possible (the first classes get the remainder)."""
    base, extra = divmod(total, num_classes)
    return [base + (1 if cls < extra else 0) for cls in range(num_classes)]


def random_subset_indices(labels: torch.Tensor, counts: list[int], seed: int) -> torch.Tensor:
    """Indices of ``counts[c]`` distinct random images of each class c, grouped by class."""
    generator = make_generator(seed)
    chosen = []
    for cls, count in enumerate(counts):
        members = torch.nonzero(labels == cls).flatten()
        if count > len(members):
            raise ValueError(f"class {cls} has {len(members)} images, fewer than {count}")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(chosen)


@register_method("random")
class RandomSubset(DistillationMethod):
    """A class-balanced random subset of the real training images: the baseline every table needs."""

    name = "random"

    def __init__(self, ipc: int = 10, *, random_state: int = 0) -> None:
        self.ipc = ipc
        self.random_state = random_state

    def fit(self, data: Any) -> "RandomSubset":
        data: TrainingData = as_training_data(data)
        check_ipc("RandomSubset", self.ipc, data)
        check_number("RandomSubset", "random_state", self.random_state, integer=True, low=0)
        index = random_subset_indices(data.labels, [self.ipc] * data.num_classes, self.random_state)
        self.indices_ = index
        self.distilled_ = self._result(data, data.images[index], data.one_hot()[index], self.random_state)
        return self


def herding_order(features: torch.Tensor, count: int) -> torch.Tensor:
    """Herding (Welling 2009; iCaRL's form): greedily add the sample that keeps the running mean of the
    chosen features closest to the mean of all features. Returns ``count`` distinct row indices."""
    target = features.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(target)
    available = torch.ones(len(features), dtype=torch.bool, device=features.device)
    for step in range(1, count + 1):
        # distance of the mean after adding each candidate to the target mean
        gaps = ((running + features) / step - target).pow(2).sum(1)
        gaps[~available] = float("inf")
        best = int(torch.argmin(gaps))
        chosen.append(best)
        available[best] = False
        running += features[best]
    return torch.tensor(chosen, dtype=torch.long)


def kcenter_order(features: torch.Tensor, count: int) -> torch.Tensor:
    """k-center greedy (Sener & Savarese 2018): start at the sample nearest the mean, then repeatedly add
    the sample farthest from everything chosen so far. Returns ``count`` distinct row indices."""
    first = int(torch.argmin((features - features.mean(0)).pow(2).sum(1)))
    chosen = [first]
    nearest = (features - features[first]).pow(2).sum(1)  # squared distance to the closest chosen sample
    for _ in range(count - 1):
        nearest[chosen] = -1.0  # never re-pick a chosen sample (ties among duplicates included)
        pick = int(torch.argmax(nearest))
        chosen.append(pick)
        nearest = torch.minimum(nearest, (features - features[pick]).pow(2).sum(1))
    return torch.tensor(chosen, dtype=torch.long)


class _TrainedNetCoreset(DistillationMethod):
    """Shared machinery of the coresets that need a trained ConvNet: validation, the net, selection per class.

    Subclasses give ``_scores_per_class`` (or ``_order``): which real images of one class to keep.
    ``zca``: None (per-channel normalization) or the regularization of a ZCA whitening (devs.zca) fitted on
    the training images, which the net then trains (and embeds) on; the chosen images stay real pixels, and
    the file records the transform to evaluate with.
    """

    runtime_params = ("device", "checkpoint_dir", "resume", "progress", "compile")
    default_steps = 400

    def __init__(
        self,
        ipc: int = 10,
        *,
        epochs: int | None = None,
        steps: int | None = None,
        zca: float | None = None,
        device: str = "auto",
        random_state: int = 0,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        compile: bool = False,
    ) -> None:
        self.ipc = ipc
        self.epochs = epochs
        self.steps = steps
        self.zca = zca
        self.device = device
        self.random_state = random_state
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.progress = progress
        self.compile = compile

    def _prepare(self, data: Any) -> tuple[TrainingData, int, torch.device, InputTransform]:
        owner = type(self).__name__
        data = as_training_data(data)
        check_ipc(owner, self.ipc, data)
        check_number(owner, "random_state", self.random_state, integer=True, low=0)
        if self.steps is not None:
            check_number(owner, "steps", self.steps, integer=True, low=1)
        if self.epochs is not None:
            check_number(owner, "epochs", self.epochs, integer=True, low=1)
        if self.resume and self.checkpoint_dir is None:
            raise InvalidParameterError("resume=True needs a checkpoint_dir to resume from.")
        check_zca(owner, self.zca)
        epochs = self.epochs or epochs_for_steps(len(data.labels), self.steps or self.default_steps, ExtractorSpec.batch_size)
        device = resolve_device(self.device)
        return data, epochs, device, self._input_transform(data, device)

    def _extractor_path(self, data: TrainingData, spec: ExtractorSpec, epochs: int, prefix: str) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        key = spec.key(fingerprint(data.images, data.labels, data.classes), epochs, self.random_state, zca=self.zca)
        return checkpoint_file(self.checkpoint_dir, f"{prefix}-{key}.safetensors")

    def _select(self, data: TrainingData, order_of_class) -> None:
        """Keep, for each class c, the rows ``order_of_class(c, members)`` of its members."""
        chosen = []
        for cls in range(data.num_classes):
            members = torch.nonzero(data.labels == cls).flatten()
            chosen.append(members[order_of_class(cls, members)[: self.ipc].cpu()])
        self.indices_ = torch.cat(chosen)
        self.distilled_ = self._result(data, data.images[self.indices_], data.one_hot()[self.indices_], self.random_state)


class _FeatureCoreset(_TrainedNetCoreset):
    """Coresets chosen in the feature space of the DEvS extractor (the same trained net DEvS's first stage
    uses: with the same checkpoint_dir and resume=True it is trained once for all of them)."""

    @staticmethod
    def _order(features: torch.Tensor, count: int) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def fit(self, data: Any) -> "_FeatureCoreset":
        data, epochs, device, normalizer = self._prepare(data)
        spec = ExtractorSpec(flip=data.flip)
        # "extractor1" is DEvS's first stage (seed random_state + 0): the same file is shared.
        path = self._extractor_path(data, spec, epochs, "extractor1")
        label = f"{self.name}: train extractor" if self.progress else None
        net = trained_extractor(spec, data.images, data.one_hot(), epochs, self.random_state, normalizer, device,
                                path=path, reuse=self.resume, progress=label, compile=self.compile)
        features = extract_features(net, data.images, normalizer, device, compile=self.compile).to(device)
        self._select(data, lambda cls, members: self._order(features[members.to(device)], self.ipc))
        return self


@register_method("herding")
class Herding(_FeatureCoreset):
    """Per class, the real images chosen by herding in the DEvS extractor's feature space."""

    name = "herding"
    _order = staticmethod(herding_order)


@register_method("kcenter")
class KCenter(_FeatureCoreset):
    """Per class, the real images chosen by k-center greedy in the DEvS extractor's feature space."""

    name = "kcenter"
    _order = staticmethod(kcenter_order)


class ForgettingCounter:
    """Counts forgetting events (Toneva et al. 2019): a training example that the net classified correctly
    the last time it was in a batch and now gets wrong. Examples never classified correctly are
    "unforgettable in reverse": they count as forgotten infinitely often."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels
        self.forgotten = torch.zeros(len(labels), dtype=torch.long, device=labels.device)
        self.last_correct = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        self.ever_correct = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)

    def __call__(self, index: torch.Tensor, logits: torch.Tensor) -> None:
        index = index.to(self.labels.device)
        correct = logits.argmax(1).to(self.labels.device) == self.labels[index]
        self.forgotten[index] += (self.last_correct[index] & ~correct).long()
        self.last_correct[index] = correct
        self.ever_correct[index] |= correct

    def scores(self) -> torch.Tensor:
        scores = self.forgotten.double()
        scores[~self.ever_correct] = float("inf")
        return scores


@register_method("forgetting")
class Forgetting(_TrainedNetCoreset):
    """Per class, the real images forgotten most often while a ConvNet trains on the whole set (Toneva et
    al. 2019). The net trains with shift and flip but without mixup, so that "correct" is well defined;
    ties are broken at random (seeded)."""

    name = "forgetting"
    default_steps = 2000  # forgetting events need each image seen several times (10 epochs of CIFAR-10)

    def fit(self, data: Any) -> "Forgetting":
        data, epochs, device, normalizer = self._prepare(data)
        spec = ExtractorSpec(mixup_alpha=0.0, flip=data.flip)
        path = self._extractor_path(data, spec, epochs, "forgetting")
        if self.resume and path is not None and path.exists():  # the counts do not depend on ipc
            saved = load_file(str(path))
            scores, self.forgetting_counts_ = saved["scores"], saved["counts"]
        else:
            counter = ForgettingCounter(data.labels.to(device))
            label = "forgetting: train" if self.progress else None
            trained_extractor(spec, data.images, data.one_hot(), epochs, self.random_state, normalizer, device,
                              progress=label, on_batch=counter, compile=self.compile)
            scores, self.forgetting_counts_ = counter.scores().cpu(), counter.forgotten.cpu()
            if path is not None:
                with atomic_path(path) as temp_path:
                    save_file({"scores": scores, "counts": self.forgetting_counts_}, str(temp_path))
        self.forgetting_scores_ = scores
        generator = make_generator(self.random_state)

        def most_forgotten(cls: int, members: torch.Tensor) -> torch.Tensor:
            shuffled = torch.randperm(len(members), generator=generator)
            ranked = torch.argsort(scores[members][shuffled], descending=True, stable=True)
            return shuffled[ranked]

        self._select(data, most_forgotten)
        return self
