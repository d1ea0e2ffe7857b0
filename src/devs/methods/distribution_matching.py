"""Distribution matching: DM, "Dataset Condensation with Distribution Matching" (Zhao & Bilen, WACV 2023).

Per class, match the mean trunk embedding of a real batch and of the synthetic images (squared Euclidean
distance), both augmented with the same differentiable Siamese augmentation (devs.dsa); or, with
``loss="mmd"``, every moment of the embeddings. The loop around the iterations is devs.methods.matching's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..dsa import DEFAULT_STRATEGY, augment_groups, parse_strategy, sample_siamese
from ..errors import check_choice
from ..formation import decode
from ..train import features_without_grad, mean_features, precision_autocast, resolve_precision
from .base import InputTransform, TrainingData, check_number, register_method
from .matching import MatchingState, _PixelMatching
from .representative import RepresentativeBatches, embed_training_set

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
