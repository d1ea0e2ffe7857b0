"""Several nets of one architecture trained at once: one vectorized forward and backward per batch.

A distilled set is small (10 to 500 images), so one evaluation net leaves a GPU mostly idle, launching
small kernels one after another. ``train_together`` stacks the nets' parameters and runs them as one
``torch.func.vmap``-ed call per batch, each net on its own batch: every net keeps the data order and
augmentation draws that ``train_classifier`` gives it for its seed (devs.train.BatchAugmenter), and SGD with
momentum and weight decay acts element by element, so each step is the one-by-one step up to float
rounding. (The vectorized convolutions round differently, and over a long run on a tiny set such differences
grow as a 1e-7 change of the initial weights does: the nets are then other samples of the same training,
as with ``compile``.)

The vectorized convolutions are grouped convolutions; on a 2-core CPU, whose cores one net already keeps
busy, judging a 10-image CIFAR-10 set with 2 nets took 37.3 s together against 35.8 s one by one
(BENCHMARKS "Evaluating a 10-image set"), so this is for GPUs. Not for nets with batch norm (its running
statistics are updated in place) or dropout (its masks would come from another stream): ``why_not_together``
says so, and the evaluation then trains the nets one by one. The training sets must have the same number of rows, so that the nets' batches line up.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .errors import InvalidParameterError
from .train import BatchAugmenter, Normalizer, TrainRecipe, precision_autocast, sgd_schedule


def why_not_together(net: nn.Module) -> str | None:
    """Why nets like ``net`` cannot train together (None: they can)."""
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return "batch norm updates running statistics in place"
        if isinstance(module, nn.Dropout) and module.p > 0:
            return "dropout masks would differ from those of the one-by-one training"
    return None


def train_together(
    nets: Sequence[nn.Module],
    training_sets: Sequence[tuple[torch.Tensor, torch.Tensor]],
    recipe: TrainRecipe,
    normalizer: Normalizer,
    seeds: Sequence[int],
    device: torch.device,
) -> list[nn.Module]:
    """Train ``nets[k]`` on ``training_sets[k]`` = (images in pixel units, target probability rows) with the
    draws of ``seeds[k]``, all at once; returns the nets, trained, in eval mode."""
    if not nets or not len(nets) == len(training_sets) == len(seeds):
        raise InvalidParameterError(f"train_together needs as many training sets and seeds as nets; got "
                                    f"{len(nets)} nets, {len(training_sets)} sets, {len(seeds)} seeds.")
    reason = why_not_together(nets[0])
    if reason:
        raise InvalidParameterError(f"These nets cannot train together ({reason}); train them one by one.")
    sizes = {len(images) for images, _ in training_sets}
    if len(sizes) != 1:
        raise InvalidParameterError(f"Nets train together on sets of one size; got sizes {sorted(sizes)}.")
    shapes = [[p.shape for p in net.parameters()] for net in nets]
    if any(shape != shapes[0] for shape in shapes):
        raise InvalidParameterError("Nets train together only when they share one architecture.")

    nets = [net.to(device).train() for net in nets]
    template = nets[0]
    names = [name for name, _ in template.named_parameters()]
    stacked = {name: torch.stack([dict(net.named_parameters())[name].detach() for net in nets]).requires_grad_()
               for name in names}
    buffers = {name: torch.stack([dict(net.named_buffers())[name] for net in nets])
               for name, _ in template.named_buffers()}

    def forward(params, buffers_, x):
        return functional_call(template, (params, buffers_), (x,))

    batched = vmap(forward)
    data = [normalizer(images.to(device)) for images, _ in training_sets]
    targets = [rows.to(device, torch.float32) for _, rows in training_sets]
    augmenters = [BatchAugmenter(recipe, seed, device) for seed in seeds]
    optimizer, scheduler = sgd_schedule(list(stacked.values()), recipe)
    n = sizes.pop()
    for _ in range(recipe.epochs):
        epochs = [augment.epoch(n, device) for augment in augmenters]
        for step in range(len(epochs[0])):
            pairs = [augment(data[k][epochs[k][step]], targets[k][epochs[k][step]])
                     for k, augment in enumerate(augmenters)]
            inputs = torch.stack([x for x, _ in pairs])
            rows = torch.stack([y for _, y in pairs])
            with precision_autocast(recipe.precision, device):
                logits = batched(stacked, buffers, inputs)
            # The sum over nets of each net's mean loss: each net's parameters get exactly its own gradient.
            loss = F.cross_entropy(logits.float().flatten(0, 1), rows.flatten(0, 1), reduction="sum") / rows.shape[1]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    with torch.no_grad():
        for k, net in enumerate(nets):
            for name, parameter in net.named_parameters():
                parameter.copy_(stacked[name][k])
    return [net.eval() for net in nets]
