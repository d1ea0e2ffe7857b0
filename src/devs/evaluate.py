"""Evaluation protocols: train fresh networks on a distilled set, report test accuracy mean ± std.

Accuracy is always taken at the end of training (never the best epoch by test accuracy), and each
report carries a same-protocol random real subset of the same size beside it. Any registered model can
judge a set (``model=``; default the protocol's), with its soft labels or their argmax (``labels=``), and
``compute_scores()`` turns a set's result, its random subset's and an optional whole-set ceiling into the gain
over random and the fraction of the random-to-whole-set gap that the set closes.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .data import ImageDataset
from .distributed import current_group
from .dsa import DEFAULT_STRATEGY, parse_strategy
from .errors import DevsError, InvalidParameterError, check_choice
from .io import DistilledSet
from .ledger import NetLedger, evaluation_key
from .methods.base import Whitening, check_number
from .methods.coresets import balanced_counts, random_subset_indices
from .methods.extractor import fingerprint
from .models import MODELS, build_model
from .registry import Registry
from .runtime import resolve_device
from .together import train_together, why_not_together
from .train import Normalizer, TrainRecipe, accuracy, resolve_precision, train_classifier
from .zca import ZCA, check_matches

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    """How the networks that judge a distilled set are trained."""

    name: str
    description: str
    recipe: TrainRecipe
    dropout: float = 0.0
    model: str = "convnet"
    zca: float | None = None  # train on ZCA-whitened images (this regularization, fitted on the train split)


PROTOCOLS: Registry[Protocol] = Registry("protocol")
LABEL_MODES = ("soft", "hard")


def register_protocol(protocol: Protocol) -> Protocol:
    return PROTOCOLS.register(protocol.name)(protocol)


register_protocol(Protocol(
    name="dc",
    description="DC (Zhao et al. 2021): SGD lr 0.01, momentum 0.9, wd 5e-4, batch 256, 300 epochs, "
    "lr x0.1 at epoch 150, no augmentation",
    recipe=TrainRecipe(epochs=300),
))
register_protocol(Protocol(
    name="devs",
    description="DEvS paper recipe: the DC optimizer and schedule (300 epochs) plus shift 5 px, "
    "horizontal flip, mixup alpha 0.4 and dropout 0.2 before the classifier",
    recipe=TrainRecipe(epochs=300, max_shift=5, flip=True, mixup_alpha=0.4),
    dropout=0.2,
))
register_protocol(Protocol(
    name="dsa",
    description="DSA/DM/MTT papers (Zhao & Bilen 2021, 2023): the DC optimizer, 1000 epochs, lr x0.1 at epoch "
    "500, DSA augmentation (one of color, crop, cutout, flip, scale, rotate per batch, drawn per image)",
    recipe=TrainRecipe(epochs=1000, dsa=DEFAULT_STRATEGY),
))


register_protocol(Protocol(
    name="dsa-cutmix",
    description="IDC and DREAM (Kim et al. 2022, Liu et al. 2023), IDC's CIFAR evaluation settings: SGD lr 0.01, "
    "momentum 0.9, wd 5e-4, batch 64, 1000 epochs, lr x0.2 at 2/3 and 5/6 of them, IDC's DSA per image (flip, "
    "color, one of crop/scale/rotate, cutout) and CutMix (Beta(1, 1)) on half the batches",
    recipe=TrainRecipe(epochs=1000, batch_size=64, lr_drops=(2 / 3, 5 / 6), lr_gamma=0.2, dsa=DEFAULT_STRATEGY,
                       dsa_mode="composed", cutmix_prob=0.5, cutmix_beta=1.0),
))
register_protocol(Protocol(
    name="zca-dsa",
    description="MTT and DATM (Cazenavette et al. 2022, Guo et al. 2024): the dsa recipe on ZCA-whitened images "
    "(regularization 0.1, fitted on the training split); only for sets distilled with --zca 0.1",
    recipe=TrainRecipe(epochs=1000, dsa=DEFAULT_STRATEGY),
    zca=0.1,
))


def list_protocols(pattern: str = "*") -> list[str]:
    return PROTOCOLS.names(pattern)


@dataclass
class EvaluationResult:
    """Test accuracies (in %) of ``runs`` fresh networks of ``model`` trained on one set under one protocol.

    ``labels`` is "soft" (the set's label rows as stored) or "hard" (one-hot rows; random subsets and the
    whole set are always "hard"). ``scores``, when set, holds ``compute_scores()`` against the random subset.
    """

    label: str
    protocol: str
    size: int
    accuracies: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    model: str = "convnet"
    labels: str = "soft"
    scores: dict[str, Any] | None = None
    precision: str = "fp32"  # the nets trained and tested under bf16 autocast ("bf16") or not
    together: bool = False  # the nets trained at once (devs.together); each net's seconds are then the share

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        # Population std (numpy's default), as DC's tables report it.
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def summary(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f} % ({len(self.accuracies)} nets)"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: dict[str, Any], **changes: Any) -> "EvaluationResult":
        """The result ``to_dict`` wrote (its derived mean and std recomputed), with ``changes`` applied."""
        return cls(**{**{k: v for k, v in data.items() if k not in ("mean", "std")}, **changes})


def compute_scores(
    result: EvaluationResult | float,
    random: EvaluationResult | float,
    ceiling: EvaluationResult | float | None = None,
) -> dict[str, Any]:
    """What a set adds over a same-size random real subset: accuracy points, and the share of the gap to a ceiling.

    ``result``, ``random`` and ``ceiling`` are EvaluationResults (their means are used; results must share
    protocol and model) or mean accuracies in %. Returns ``gain`` = mean - random (points) and
    ``gap_closed`` = (mean - random) / (ceiling - random): 0 at the random subset, 1 at the whole-set
    ceiling (None without a ceiling, or when the ceiling is not above the random subset).
    """
    given = [r for r in (result, random, ceiling) if isinstance(r, EvaluationResult)]
    for other in given[1:]:
        if (other.protocol, other.model) != (given[0].protocol, given[0].model):
            raise InvalidParameterError(
                f"Scores compare results of one protocol and model; got {given[0].protocol}/{given[0].model} "
                f"and {other.protocol}/{other.model}.")
    mean, base = (r.mean if isinstance(r, EvaluationResult) else float(r) for r in (result, random))
    top = ceiling.mean if isinstance(ceiling, EvaluationResult) else None if ceiling is None else float(ceiling)
    gap_closed = None
    if top is not None:
        if top > base:
            gap_closed = (mean - base) / (top - base)
        else:
            logger.warning("The ceiling (%.2f %%) is not above the random subset (%.2f %%); gap_closed is undefined.",
                           top, base)
    return {"gain": mean - base, "gap_closed": gap_closed, "random": base, "ceiling": top}


def check_compatible(distilled: DistilledSet, dataset: ImageDataset) -> None:
    """The distilled set must describe the same classes and image shape as the evaluation dataset."""
    if distilled.num_classes != dataset.num_classes:
        raise DevsError(
            f"The distilled set has {distilled.num_classes} classes but dataset {dataset.name!r} has "
            f"{dataset.num_classes}; evaluate it on the dataset it was distilled from."
        )
    if tuple(distilled.image_shape) != tuple(dataset.image_shape):
        raise DevsError(
            f"The distilled images are {tuple(distilled.image_shape)} but dataset {dataset.name!r} has "
            f"{tuple(dataset.image_shape)} images; evaluate it on the dataset it was distilled from."
        )
    if list(distilled.classes) != list(dataset.classes):
        logger.warning("Class names differ (%s vs %s); evaluating by class index.", distilled.classes, dataset.classes)


@dataclass
class _Judge:
    """The nets that judge under one protocol: how to build, train (one by one or together) and test them."""

    dataset: ImageDataset
    protocol: Protocol
    recipe: TrainRecipe
    normalizer: Normalizer | Whitening
    device: torch.device
    model: str

    def net(self, seed: int) -> torch.nn.Module:
        return build_model(self.model, in_channels=self.dataset.image_shape[0], num_classes=self.dataset.num_classes,
                           image_size=tuple(self.dataset.image_shape[1:]), seed=seed, dropout=self.protocol.dropout)

    def test(self, net: torch.nn.Module) -> float:
        return 100.0 * accuracy(net, self.dataset.test.images, self.dataset.test.labels, self.normalizer, self.device,
                                compile=self.recipe.compile, precision=self.recipe.precision)

    def train_and_test(self, images: torch.Tensor, targets: torch.Tensor, seed: int) -> float:
        net = self.net(seed)
        train_classifier(net, images, targets, self.recipe, self.normalizer, seed, self.device)
        return self.test(net)

    def why_not_together(self) -> str | None:
        """Why these nets must train one by one (None: they can train together)."""
        if current_group().active:
            return "under torchrun the ranks share the nets out instead"
        if self.recipe.compile:
            return "compiled training runs one net at a time"
        with torch.device("meta"):
            return why_not_together(self.net(0))

    def together(self, training_sets: list[tuple[torch.Tensor, torch.Tensor]], seeds: list[int]) -> list[float]:
        nets = train_together([self.net(seed) for seed in seeds], training_sets, self.recipe, self.normalizer, seeds,
                              self.device)
        return [self.test(net) for net in nets]

    def ledger(self, progress_file: str | Path | None, **what: Any) -> NetLedger | None:
        """Where the finished nets of judging ``what`` are kept (None: nowhere, without ``progress_file``)."""
        if progress_file is None:
            return None
        return NetLedger(progress_file, evaluation_key(what, self.dataset, self.recipe, self.protocol.name,
                                                       self.model, self.protocol.dropout))


def _resolve(protocol: str, runs: int, epochs: int | None, compile: bool = False,
             model: str | None = None, flip: bool = True, precision: str = "fp32",
             device: torch.device | None = None) -> tuple[Protocol, TrainRecipe, str]:
    """The protocol, its recipe (with ``epochs``, ``compile`` and ``precision`` (resolved for ``device``)
    applied, and without horizontal flips where ``flip`` is false: data whose class a flip changes,
    ImageDataset.flip) and the model name to train."""
    spec = PROTOCOLS.get(protocol)
    model = model or spec.model
    MODELS.get(model)  # an unknown name fails before any training, listing the valid ones
    check_number("evaluate", "runs", runs, integer=True, low=1)
    recipe = spec.recipe.replace(compile=compile, precision=resolve_precision(precision, device or torch.device("cpu")))
    if epochs is not None:
        check_number("evaluate", "epochs", epochs, integer=True, low=1)
        recipe = recipe.replace(epochs=epochs)
    if not flip:
        kept = [group for group in parse_strategy(recipe.dsa) if group != "flip"]
        recipe = recipe.replace(flip=False, dsa="_".join(kept) or None)
    return spec, recipe, model


def hard_labels(labels: torch.Tensor) -> torch.Tensor:
    """One-hot rows of each row's most likely class (the first on a tie, as argmax)."""
    return torch.nn.functional.one_hot(labels.argmax(1), labels.shape[1]).to(labels.dtype)


def _run_nets(label: str, protocol: str, size: int, runs: int, seed: int, progress: bool, judge: _Judge,
              training_set, labels: str = "hard", together: bool = False,
              ledger: NetLedger | None = None) -> EvaluationResult:
    """Train and test nets with seeds ``seed .. seed + runs - 1``, each on ``training_set(its seed)`` = (images,
    target rows), and collect the accuracies. Nets ``ledger`` holds are taken from it, and each net trained
    here is added to it (devs.ledger: an interrupted evaluation resumes).

    With ``together`` the nets train at once (devs.together) where they can; otherwise (or if they cannot:
    batch norm, dropout, compile, torchrun; logged) one by one. Under torchrun the nets are independent, so
    rank r trains nets r, r + world, ...; every rank gets all results back, in seed order.
    """
    result = EvaluationResult(label=label, protocol=protocol, size=size, model=judge.model, labels=labels,
                              precision=judge.recipe.precision)
    finished = ledger.finished() if ledger else {}
    if finished:
        logger.info("evaluate %s: %d of %d nets taken from %s", label,
                    sum(seed + run in finished for run in range(runs)), runs, ledger.path)
    reason = judge.why_not_together() if together and runs > 1 else None
    if together and runs > 1 and reason is None:
        seeds = [seed + run for run in range(runs)]
        if all(net_seed in finished for net_seed in seeds):
            result.accuracies, result.seconds = (list(column) for column in zip(*(finished[s] for s in seeds)))
        else:  # the nets train as one, so all of them again
            start = time.perf_counter()
            result.accuracies = judge.together([training_set(net_seed) for net_seed in seeds], seeds)
            result.seconds = [(time.perf_counter() - start) / runs] * runs
            if ledger:
                for net_seed, acc in zip(seeds, result.accuracies):
                    ledger.record(net_seed, acc, result.seconds[0])
        result.seeds, result.together = seeds, True
        return result
    if reason:
        logger.info("evaluate %s: training the nets one by one: %s", label, reason)
    group = current_group()
    mine = range(group.rank, runs, group.world_size)
    done = []
    shown = progress and group.is_main
    bar = tqdm(mine, desc=f"evaluate {label} ({protocol}, {judge.model})", disable=None if shown else True,
               leave=False)
    for run in bar:
        if seed + run in finished:
            done.append((run, *finished[seed + run]))
            continue
        start = time.perf_counter()
        acc = judge.train_and_test(*training_set(seed + run), seed + run)
        done.append((run, acc, time.perf_counter() - start))
        if ledger:
            ledger.record(seed + run, acc, done[-1][2])
        logger.info("%s net %d/%d: %.2f%%", label, run + 1, runs, acc)
    for run, acc, seconds in sorted(item for part in group.all_gather_object(done) for item in part):
        result.accuracies.append(acc)
        result.seeds.append(seed + run)
        result.seconds.append(seconds)
    return result


def evaluate(
    distilled: DistilledSet,
    dataset: ImageDataset,
    protocol: str = "dc",
    runs: int = 3,
    seed: int = 0,
    device: str = "auto",
    epochs: int | None = None,
    progress: bool = True,
    compile: bool = False,
    model: str | None = None,
    labels: str = "soft",
    precision: str = "fp32",
    together: bool = False,
    progress_file: str | Path | None = None,
) -> EvaluationResult:
    """Train ``runs`` fresh networks (seeds ``seed + i``) on ``distilled``; test on ``dataset.test``.

    ``model`` is any registered model (default: the protocol's, ConvNet-3). ``labels="hard"`` trains on
    the one-hot argmax of each label row instead of the stored (soft) rows: what the images alone carry.
    A multi-formation set (``distilled.formation`` > 1) trains on its decoded images; its size in the
    result is still the number of stored images, the budget it is compared under. ``precision`` "bf16"
    trains and tests the nets under bfloat16 autocast; "auto" does so where the device has bf16 units.
    ``together`` trains the nets at once where the model allows it (devs.together: faster on a GPU, each step
    the one-by-one step up to float rounding); ``result.together`` says whether they did. ``progress_file``
    keeps each finished net there and takes the nets it already holds for this set and settings (devs.ledger).
    """
    check_choice("labels", labels, LABEL_MODES)
    torch_device = resolve_device(device)
    spec, recipe, model = _resolve(protocol, runs, epochs, compile, model, dataset.flip, precision, torch_device)
    check_compatible(distilled, dataset)
    if spec.zca is not None and distilled.zca is None:
        raise InvalidParameterError(
            f"Protocol {protocol!r} trains on ZCA-whitened images, but this set was distilled without ZCA; "
            "evaluate it under a protocol without ZCA (e.g. dsa), or distill it again with --zca.")
    normalizer = net_inputs(dataset, torch_device, distilled.mean, distilled.std, distilled.zca, spec.zca)

    images, targets = distilled.training_set()  # decoded when the set uses multi-formation
    if labels == "hard":
        targets = hard_labels(targets)

    judge = _Judge(dataset, spec, recipe, normalizer, torch_device, model)
    ledger = judge.ledger(progress_file, set=fingerprint(images, targets, distilled.classes), mean=distilled.mean,
                          std=distilled.std, zca=distilled.zca)
    return _run_nets(distilled.method or "distilled", protocol, len(distilled), runs, seed, progress, judge,
                     lambda net_seed: (images, targets), labels, together, ledger)


def net_inputs(dataset: ImageDataset, device: torch.device, mean: list[float], std: list[float],
               zca_description: dict[str, Any] | None = None, zca: float | None = None) -> Normalizer | Whitening:
    """How images become net inputs: a set's own ZCA (refitted on ``dataset`` and checked against the file's
    description; a ``zca`` regularization that differs is refused), else a ZCA of ``zca`` fitted on
    ``dataset``'s train split, else per-channel normalization with ``mean`` / ``std``."""
    if zca_description is not None:
        return Whitening(check_matches(zca_description, dataset, regularization=zca), device)
    if zca is not None:
        return Whitening(ZCA.from_dataset(dataset, regularization=zca), device)
    return Normalizer(mean, std, device)


def _real_training_set(dataset: ImageDataset, device: str, zca: float | None = None):
    """Device, the training set's net-input transform (ZCA with ``zca``), and its one-hot label rows."""
    torch_device = resolve_device(device)
    normalizer = net_inputs(dataset, torch_device, *dataset.channel_stats(), zca=zca)
    return torch_device, normalizer, torch.nn.functional.one_hot(dataset.train.labels, dataset.num_classes).float()


def evaluate_random_baseline(
    dataset: ImageDataset,
    size: int,
    protocol: str = "dc",
    runs: int = 3,
    seed: int = 0,
    device: str = "auto",
    epochs: int | None = None,
    progress: bool = True,
    compile: bool = False,
    model: str | None = None,
    zca: float | None = None,
    precision: str = "fp32",
    together: bool = False,
    progress_file: str | Path | None = None,
) -> EvaluationResult:
    """The same protocol on class-balanced random real subsets of ``size`` images (a new subset per net).

    ``model``, ``together`` and ``progress_file`` as in ``evaluate``; the subsets' labels are their one-hot classes (``labels``
    "hard"). ``zca`` (default: the protocol's) trains on ZCA-whitened images, as a set distilled with that ZCA
    is judged.
    """
    spec, recipe, model = _resolve(protocol, runs, epochs, compile, model, dataset.flip, precision, resolve_device(device))
    counts = balanced_counts(size, dataset.num_classes)
    available = torch.bincount(dataset.train.labels, minlength=dataset.num_classes).tolist()
    if any(count > have for count, have in zip(counts, available)):
        raise InvalidParameterError(f"A random subset of {size} images needs more images per class than {dataset.name!r} has.")
    torch_device, normalizer, one_hot = _real_training_set(dataset, device, spec.zca if zca is None else zca)

    def subset(net_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = random_subset_indices(dataset.train.labels, counts, net_seed)
        return dataset.train.images[index], one_hot[index]

    judge = _Judge(dataset, spec, recipe, normalizer, torch_device, model)
    ledger = judge.ledger(progress_file, random=size, zca=spec.zca if zca is None else zca)
    return _run_nets("random", protocol, size, runs, seed, progress, judge, subset, together=together, ledger=ledger)


def evaluate_whole_set(
    dataset: ImageDataset,
    protocol: str = "dc",
    runs: int = 3,
    seed: int = 0,
    device: str = "auto",
    epochs: int | None = None,
    progress: bool = True,
    compile: bool = False,
    model: str | None = None,
    zca: float | None = None,
    precision: str = "fp32",
) -> EvaluationResult:
    """The same protocol on the whole training set: the ceiling every table shows beside the methods.

    ``model`` as in ``evaluate``; the labels are one-hot (``labels`` "hard").
    """
    spec, recipe, model = _resolve(protocol, runs, epochs, compile, model, dataset.flip, precision, resolve_device(device))
    torch_device, normalizer, one_hot = _real_training_set(dataset, device, spec.zca if zca is None else zca)

    judge = _Judge(dataset, spec, recipe, normalizer, torch_device, model)
    return _run_nets("whole set", protocol, len(dataset.train), runs, seed, progress, judge,
                     lambda net_seed: (dataset.train.images, one_hot))
