"""Gradient matching: DC, "Dataset Condensation with Gradient Matching" (Zhao, Mopuri & Bilen, ICLR 2021).

Per class, match the gradient of the classification loss w.r.t. the network weights on a real batch and on
the synthetic images (a layer-wise sum of 1 - cosine similarity per output unit); between matchings, train
the network for ``inner_loop`` epochs on the synthetic set. With ``net_data="real"``, ``distance="l1"``,
``dsa`` and ``formation`` it becomes IDC's variant (Kim et al., ICML 2022): the network trains on real
images between matchings, and the distance is the L1 norm of the difference. The loop around the
iterations is devs.methods.matching's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..dsa import parse_strategy, sample_siamese
from ..errors import check_choice
from ..formation import decode
from ..train import BatchAugmenter, TrainRecipe
from .base import check_number, register_method
from .matching import MatchingState, _PixelMatching, check_positive

# DC's (outer_loop, inner_loop) per ipc: the official code's get_loops table (the paper reports 1, 10, 50).
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
NET_DSA = "color_crop"  # IDC's augmentation of the real images its networks train on (its default less cutout; no flip)
NET_MOMENTUM = 0.5  # SGD momentum of DC's inner-loop network training, official main.py


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
        check_positive("GradientMatching", "lr_net", self.lr_net)
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


