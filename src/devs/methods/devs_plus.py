"""devs+: DEvS with three additions the paper's authors point to, each switchable and measured.

1. Teacher soft labels (``label_mix``, ``temperature``): each cluster's label row mixes the average of its
   members' one-hot rows (the paper) with the average of the stage extractor's predictions on those
   members, softmax(logits / temperature). The labels stay one row per image; no teacher is needed when
   the distilled set is used.
2. Anchored representatives (``anchor``): each image is (1 - anchor) x the cluster mean + anchor x the
   cluster's medoid (the member nearest the cluster's centroid in feature space): sharper than a mean of
   hundreds of images, still a summary of the cluster.
3. Distribution-matching fine-tuning (``finetune_iterations``): DM (Zhao & Bilen) started from the DEvS
   images instead of random real ones, for a few iterations; labels are kept. Its progress is saved in
   ``checkpoint_dir`` beside the DEvS stages, so ``resume`` continues it (or extends it to more iterations).
4. Multi-formation (``formation``, IDC's parameterization): with factor f the last stage clusters each
   class into ``ipc * f**2`` groups, whose representatives are reduced to 1/f of the size and packed f x f
   into each stored image (label row: the mean of its tiles' rows); the file records f and training
   decodes it (devs.formation). Same pixels stored, f**2 times as many (smaller) training images.
5. Gradient matching instead (``finetune_match="gradient"``): the step runs IDC's gradient matching (Kim et
   al., ICML 2022: networks trained on real images between matchings, L1 distance, DSA, the same packing)
   from the DEvS images instead of DM.
6. Trained embeddings in the DM step (``trained_embedding``, ``trained_ce``; after IDM, Zhao et al. CVPR
   2023, whose DM samples semi-trained nets from a queue it keeps training): a share of the DM iterations
   embeds with DEvS's own first-stage extractor, already trained on all the data, instead of a fresh
   random ConvNet, at no extra training cost; on those iterations ``trained_ce`` adds that net's
   cross-entropy on the synthetic images (their class as the target).
With every addition off (``label_mix=0, anchor=0, finetune_iterations=0, formation=1``) devs+ is DEvS with
per-class clustering (devs+'s own default, which its DM step and multi-formation need). The defaults
(0.5, 0.5, 300) are the best setting measured on a validation split (BENCHMARKS.md, "devs+").
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..cluster import cluster_means, nearest_rows
from ..distributed import Group
from ..errors import InvalidParameterError, check_choice
from ..formation import check_factor, downsample, encode, pack_labels
from ..io import DistilledSet
from .base import as_training_data, check_number, register_method
from .devs import DEvS, StageContext
from .distribution_matching import DM_LOSSES, REAL_BATCHES, DistributionMatching
from .gradient_matching import GradientMatching
from .matching import ZCA_FORMATION

PLUS_PARAMS = ("label_mix", "temperature", "anchor", "finetune_iterations", "finetune_lr", "finetune_loss",
               "finetune_real_batches", "finetune_match", "formation", "trained_embedding", "trained_ce",
               "time_budget_s")
FINETUNE_MATCHES = ("distribution", "gradient")
# IDC's settings for its gradient matching (its argument.py defaults for CIFAR-10 and ConvNet-3): matchings per
# fresh net, DSA strategy of the matching, real images per class per matching, network updates' batch and size.
IDC_STEP = dict(outer_loop=100, inner_loop=1, dsa="color_crop_cutout", distance="l1", net_data="real",
                batch_real=64, batch_train=64, real_per_update=500, lr_net=0.01)


@register_method("devs+")
class DEvSPlus(DEvS):
    """DEvS plus teacher soft labels, anchored representatives and DM fine-tuning (see the module doc).

    Parameters (besides every DEvS parameter)
    ----------
    label_mix: weight in [0, 1] of the extractor's averaged predictions in each label row.
    temperature: softmax temperature (> 0) of those predictions.
    anchor: weight in [0, 1] of the cluster medoid in each image.
    finetune_iterations: DM iterations started from the DEvS images (0: none; needs per-class clustering).
    finetune_lr: DM's learning rate on the pixels.
    finetune_loss: DM's loss, "mean" (the paper's) or "mmd" (every moment; DistributionMatching's ``loss``).
    finetune_real_batches: DM's real batches, "random" (the paper's) or "representative" (after DREAM:
        DistributionMatching's ``real_batches``), clustered in the features of DEvS's first extractor.
    finetune_match: the step's matching, "distribution" (DM) or "gradient" (IDC's gradient matching: dc with
        ``IDC_STEP``); with "gradient", ``finetune_iterations`` counts fresh networks of 100 matchings each,
        and ``finetune_lr`` is its rate on the normalised pixels (IDC's 5e-3 x ipc / 10 on [0, 1] pixels is
        about 0.08 x ipc / 10 there for CIFAR-10's spread), not DM's 1.0.
    formation: multi-formation factor f (1: off): each stored image holds f x f images at 1/f of the size.
        The last stage (and a given ``schedule``) counts those smaller images: ``ipc * f**2`` per class.
    trained_embedding: probability in [0, 1] that a DM iteration embeds with the first-stage extractor
        instead of a fresh random ConvNet (0: DM as published).
    trained_ce: weight (>= 0) of that extractor's cross-entropy on the synthetic images on those iterations.
    time_budget_s: stop the DM step after the iteration in which ``fit`` as a whole has spent this many
        seconds (the DEvS stages before it cannot be cut short; it runs at least one DM iteration).
    zca (a DEvS parameter): the DM step matches in the same ZCA-whitened space, with DEvS's fitted transform
        (not combined with ``formation`` > 1 there: the whitening does not commute with the tiles' downsampling).

    After ``fit``, ``assignments_[-1]`` maps inputs to the last stage's images, which with formation f are
    the tiles: tile t lies in stored image t // f**2.
    """

    name = "devs+"
    supports_snapshots = True  # through its DM step (finetune_iterations > 0)
    # The DM step and the packing into stored images change no DEvS stage (a stage's size is in its key).
    after_stages_params = ("finetune_iterations", "finetune_lr", "finetune_loss", "finetune_real_batches",
                           "finetune_match", "formation", "trained_embedding", "trained_ce", "time_budget_s")

    def __init__(self, ipc: int = 10, *, label_mix: float = 0.5, temperature: float = 1.0, anchor: float = 0.5,
                 finetune_iterations: int = 300, finetune_lr: float = 1.0, finetune_loss: str = "mean",
                 finetune_real_batches: str = "random", finetune_match: str = "distribution", formation: int = 1,
                 trained_embedding: float = 0.0, trained_ce: float = 0.0, time_budget_s: float | None = None,
                 clustering: str = "per-class", **devs_params: Any) -> None:
        # Per-class clustering (its DM step and multi-formation need one class per image), whatever DEvS's
        # own default; torch k-means as DEvS's (validation split, 10 per class: 43.9 vs 43.0 with scikit-learn's).
        super().__init__(ipc, clustering=clustering, **devs_params)
        self.label_mix = label_mix
        self.temperature = temperature
        self.anchor = anchor
        self.finetune_iterations = finetune_iterations
        self.finetune_lr = finetune_lr
        self.finetune_loss = finetune_loss
        self.finetune_real_batches = finetune_real_batches
        self.finetune_match = finetune_match
        self.formation = formation
        self.trained_embedding = trained_embedding
        self.trained_ce = trained_ce
        self.time_budget_s = time_budget_s

    @classmethod
    def param_names(cls) -> list[str]:
        return DEvS.param_names() + list(PLUS_PARAMS)

    def _validate(self) -> None:
        super()._validate()
        check_number("devs+", "label_mix", self.label_mix, integer=False, low=0.0, high=1.0)
        check_number("devs+", "anchor", self.anchor, integer=False, low=0.0, high=1.0)
        check_number("devs+", "temperature", self.temperature, integer=False, low=1e-3)
        check_number("devs+", "finetune_iterations", self.finetune_iterations, integer=True, low=0)
        check_number("devs+", "finetune_lr", self.finetune_lr, integer=False, low=1e-9)
        check_choice("finetune_loss", self.finetune_loss, DM_LOSSES)
        check_choice("finetune_real_batches", self.finetune_real_batches, REAL_BATCHES)
        check_choice("finetune_match", self.finetune_match, FINETUNE_MATCHES, "distribution: DM; gradient: IDC's matching")
        dm_only = {"finetune_loss": "mean", "finetune_real_batches": "random", "trained_embedding": 0.0}
        changed = [name for name, default in dm_only.items() if getattr(self, name) != default]
        if self.finetune_match == "gradient" and changed:
            raise InvalidParameterError(f"{', '.join(changed)} set(s) DM's step; with finetune_match='gradient' "
                                        "leave them at their defaults, or use finetune_match='distribution'.")
        check_number("devs+", "trained_embedding", self.trained_embedding, integer=False, low=0.0, high=1.0)
        check_number("devs+", "trained_ce", self.trained_ce, integer=False, low=0.0)
        if self.time_budget_s is not None:
            check_number("devs+", "time_budget_s", self.time_budget_s, integer=False, low=0.0)
        if self.trained_ce and not self.trained_embedding:
            raise InvalidParameterError("trained_ce applies on the iterations that embed with the trained extractor: "
                                        "set trained_embedding > 0 as well, or trained_ce=0.")
        if self.finetune_iterations and self.clustering != "per-class":
            raise InvalidParameterError("finetune_iterations needs clustering='per-class' (DM keeps ipc images per class).")
        if self.formation != 1 and self.clustering != "per-class":
            raise InvalidParameterError("formation > 1 needs clustering='per-class' (one class per stored image).")
        if self.zca is not None and self.formation != 1 and self.finetune_iterations:
            raise InvalidParameterError(ZCA_FORMATION.format(owner="devs+ (its DM step, finetune_iterations > 0)"))

    def _final_stage_ipc(self) -> int:
        return self.ipc * self.formation**2

    # ----------------------------------------------------------------------------- representatives
    def _representatives(self, images, targets, output_index: torch.Tensor, k: int, group: Group,
                         context: StageContext) -> tuple[torch.Tensor, torch.Tensor]:
        means, labels = cluster_means(images, targets, output_index, k, group=group,
                                      restore_contrast=self.restore_contrast)
        if not (self.label_mix or self.anchor):
            return means, labels
        if group.is_main:  # features live on the main rank; the result goes to every rank
            features = context.features
            if self.label_mix:
                teacher = self._teacher_probabilities(features, context)
                _, teacher_labels = cluster_means(teacher[:, :1], teacher, output_index, k)
                labels = (1.0 - self.label_mix) * labels + self.label_mix * teacher_labels
            if self.anchor:
                medoids = images[nearest_rows(features, output_index, k)]
                means = (1.0 - self.anchor) * means + self.anchor * medoids.float()
        return group.broadcast_object((means, labels))

    def _teacher_probabilities(self, features: torch.Tensor, context: StageContext) -> torch.Tensor:
        """softmax(head(features) / temperature) of the stage's trained extractor, on the CPU."""
        head = context.net.head.eval()
        with torch.no_grad():
            logits = torch.cat([head(chunk.to(context.device)).float().cpu() for chunk in features.split(4096)])
        return torch.softmax(logits / self.temperature, dim=1)

    # ----------------------------------------------------------------------------- fine-tuning
    def fit(self, data: Any) -> "DEvSPlus":
        data = as_training_data(data)
        check_factor(self.formation, tuple(data.images.shape[2:]), "devs+ formation")
        start = time.perf_counter()
        super().fit(data)
        if self.formation > 1:
            self._pack()
        if self.finetune_iterations:
            spent = time.perf_counter() - start
            left = None if self.time_budget_s is None else max(0.0, self.time_budget_s - spent)
            self._finetune(data, left, spent)
        return self

    def _pack(self) -> None:
        """Reduce the last stage's images and pack them f x f, class by class, into stored images."""
        tiles = self.distilled_
        images = encode(downsample(tiles.images, self.formation), self.formation)
        self.distilled_ = _with(tiles, images=images, labels=pack_labels(tiles.labels, self.formation),
                                formation=self.formation)

    def _finetune(self, data, time_budget_s: float | None, spent_s: float) -> None:
        start = self.distilled_
        step = self._gradient_step(start) if self.finetune_match == "gradient" else self._distribution_step(data, start)
        step.time_budget_s = time_budget_s
        if self.snapshots is not None:  # the step's clock starts spent_s into devs+'s; its sets get DEvS's labels
            step.snapshots = self.snapshots.shifted(spent_s, lambda images: self._finetuned(start, images))
        step.fit(data)
        self.distilled_ = self._finetuned(start, step.distilled_)

    def _common_step_params(self) -> dict[str, Any]:
        return dict(ipc=self.ipc, iterations=self.finetune_iterations, lr_img=self.finetune_lr, width=self.width,
                    depth=self.depth, device=self.device, random_state=self.random_state, progress=self.progress,
                    checkpoint_dir=self.checkpoint_dir, resume=self.resume, formation=self.formation, zca=self.zca)

    def _gradient_step(self, start: DistilledSet) -> "_GradientMatchingFrom":
        return _GradientMatchingFrom(start.images, fitted_zca=self.zca_, **IDC_STEP, **self._common_step_params())

    def _distribution_step(self, data, start: DistilledSet) -> "_DistributionMatchingFrom":
        representative = self.finetune_real_batches == "representative"
        trained = self.first_extractor(data) if self.trained_embedding or representative else None
        return _DistributionMatchingFrom(
            start.images, trained_net=trained if self.trained_embedding else None,
            selection_net=trained if representative else None, trained_embedding=self.trained_embedding,
            trained_ce=self.trained_ce, loss=self.finetune_loss, real_batches=self.finetune_real_batches,
            fitted_zca=self.zca_, precision=self.precision, **self._common_step_params())

    @staticmethod
    def _finetuned(start: DistilledSet, step: DistilledSet) -> DistilledSet:
        """DEvS's set (labels, config) with the DM step's images."""
        finetuned = _with(start, images=step.images)
        finetuned.config["finetune_iterations_done"] = step.config["iterations_done"]
        return finetuned


def _with(distilled: DistilledSet, **changes: Any) -> DistilledSet:
    """A copy of ``distilled`` (config included, as its own dict) with ``changes``, validated again."""
    return dataclasses.replace(distilled, config=dict(distilled.config), **changes)


class _StartingFrom:
    """A pixel-matching method whose synthetic images start from given class-major images (pixel units) instead
    of random real ones; ``fitted_zca``: DEvS's fitted ZCA (with ``zca`` set), used as it is."""

    def __init__(self, start_images: torch.Tensor, fitted_zca: Any = None, **params: Any) -> None:
        super().__init__(**params)  # type: ignore[call-arg]
        self.start_images = start_images
        self.fitted_zca = fitted_zca

    def _initial_state(self, data, normalizer, device):
        state = super()._initial_state(data, normalizer, device)  # type: ignore[misc]
        state.images = normalizer(self.start_images).detach().clone().requires_grad_(True)
        return state


class _GradientMatchingFrom(_StartingFrom, GradientMatching):
    """Gradient matching (with IDC's settings, IDC_STEP) from devs+'s images."""

    @classmethod
    def param_names(cls) -> list[str]:
        return GradientMatching.param_names()


class _DistributionMatchingFrom(_StartingFrom, DistributionMatching):
    """DM whose synthetic images start from given class-major images instead of random real ones, and
    which embeds with ``trained_net`` (its trunk) instead of a fresh random ConvNet on a random
    ``trained_embedding`` share of the iterations, adding ``trained_ce`` x its cross-entropy on them.

    The trained net is not in the progress checkpoint's key; the start images, which DEvS made with it, are.
    ``selection_net``: the net whose features pick representative real batches (``real_batches``), instead of
    DM's random one; like the trained net, it is not in the checkpoint's key.
    """

    def __init__(self, start_images: torch.Tensor, trained_net: nn.Module | None = None,
                 trained_embedding: float = 0.0, trained_ce: float = 0.0, fitted_zca: Any = None,
                 selection_net: nn.Module | None = None, **params: Any) -> None:
        super().__init__(start_images, fitted_zca=fitted_zca, **params)
        self.selection_net = selection_net
        self.trained_embedding = trained_embedding
        self.trained_ce = trained_ce
        self._trained = copy.deepcopy(trained_net).eval() if trained_net is not None else None

    @classmethod
    def param_names(cls) -> list[str]:
        return DistributionMatching.param_names() + ["trained_embedding", "trained_ce"]

    def _fresh_net(self, data, state, seed: int) -> nn.Module:
        # The draw comes from the run's generator only when the option is on: with it off, runs stay
        # bit-identical to DM's. Eval mode: no dropout in the trained net's head.
        if self._trained is not None and float(torch.rand((), generator=state.generator)) < self.trained_embedding:
            return self._trained.to(state.device)
        return super()._fresh_net(data, state, seed)

    def _selection_net(self, data, state) -> nn.Module:
        if self.selection_net is None:
            return super()._selection_net(data, state)
        return copy.deepcopy(self.selection_net).to(state.device)

    def _extra_loss(self, net: nn.Module, syn_features: torch.Tensor, cls: int) -> torch.Tensor | float:
        if net is not self._trained or not self.trained_ce:
            return 0.0
        target = torch.full((len(syn_features),), cls, device=syn_features.device)
        return self.trained_ce * F.cross_entropy(net.head(syn_features), target)

