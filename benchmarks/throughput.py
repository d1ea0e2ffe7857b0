"""Training throughput of the devs loop against a plain fp32 PyTorch loop, same network, same process.

The network is ConvNet-3 with instance norm on 32x32x3 inputs (CIFAR-10's shape, random pixels), batch
256, the DEvS extractor recipe (SGD momentum 0.9, wd 5e-4; shift, flip, mixup for the devs loop). Each
loop first runs --warmup steps (torch.compile compiles then), then --steps timed steps. Prints a table,
appends one JSON line to --results, and ends with ``speedup X.XX`` (fastest devs variant / plain loop).
A last row times the net's convolutions alone: the ceiling of any fp32 loop of this net on the machine.

    python benchmarks/throughput.py --results benchmarks/results/throughput.jsonl
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from devs.models import build_model
from devs.runtime import cpu_description, resolve_device
from devs.train import Normalizer, TrainRecipe, train_classifier
from devs_table import record


def plain_loop(images: torch.Tensor, targets: torch.Tensor, steps: int, batch: int, device: torch.device) -> float:
    """The baseline: the textbook fp32 loop, no augmentation. Returns seconds for ``steps`` steps."""
    net = build_model("convnet", in_channels=3, num_classes=10, image_size=(32, 32), seed=0).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images, targets = images.to(device), targets.to(device)
    start = time.perf_counter()
    for step in range(steps):
        index = torch.randint(0, len(images), (batch,), device=device)
        loss = F.cross_entropy(net(images[index]), targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def devs_loop(images: torch.Tensor, targets: torch.Tensor, steps: int, batch: int, device: torch.device,
              compile: bool, warmup: int, precision: str = "fp32") -> float:
    """devs's train_classifier with the DEvS recipe; ``warmup`` untimed steps first (compilation happens there)."""
    recipe = TrainRecipe(batch_size=batch, max_shift=5, flip=True, mixup_alpha=0.4, compile=compile,
                         precision=precision)
    normalizer = Normalizer([0.5] * 3, [0.25] * 3, device)
    net = build_model("convnet", in_channels=3, num_classes=10, image_size=(32, 32), seed=0, dropout=0.2)
    # One epoch of exactly `steps` batches: the set is cut to steps * batch images.
    if warmup:
        train_classifier(net, images[: warmup * batch], targets[: warmup * batch], recipe.replace(epochs=1),
                         normalizer, 0, device)
    start = time.perf_counter()
    train_classifier(net, images[: steps * batch], targets[: steps * batch], recipe.replace(epochs=1), normalizer, 1, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def convolutions_alone(steps: int, batch: int, device: torch.device) -> float:
    """Seconds for ``steps`` forward + backward passes of ConvNet-3's three convolutions alone (the same
    shapes as a training step, weight and input gradients as training needs them), in the faster of the
    two memory layouts: a bound on the images/s of any fp32 loop of this net that runs these kernels."""
    generator = torch.Generator().manual_seed(0)
    best = float("inf")
    for layout in (torch.contiguous_format, torch.channels_last):
        shapes = [(3, 32), (128, 16), (128, 8)]
        inputs = [torch.rand(batch, c, s, s, generator=generator).to(device, memory_format=layout).requires_grad_(c > 3)
                  for c, s in shapes]
        weights = [torch.rand(128, c, 3, 3, generator=generator).to(device, memory_format=layout).requires_grad_()
                   for c, _ in shapes]
        grads = [torch.rand(batch, 128, s, s, generator=generator).to(device, memory_format=layout) for _, s in shapes]

        def one_step() -> None:
            for x, w, g in zip(inputs, weights, grads):
                F.conv2d(x, w, padding=1).backward(g)

        one_step()
        start = time.perf_counter()
        for _ in range(steps):
            one_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per loop")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", help="append the result as one JSON line here")
    parser.add_argument("--bf16", action="store_true",
                        help="also time the devs loop under bfloat16 autocast (eager and compiled)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    generator = torch.Generator().manual_seed(0)
    count = max(args.steps, args.warmup) * args.batch
    images = torch.rand(count, 3, 32, 32, generator=generator)
    targets = torch.eye(10)[torch.randint(0, 10, (count,), generator=generator)]

    plain_loop(images, targets, args.warmup, args.batch, device)  # warm the allocator and kernels
    rates = {"plain fp32 loop": args.steps * args.batch / plain_loop(images, targets, args.steps, args.batch, device)}
    variants = [("devs loop", False, "fp32"), ("devs loop, compile", True, "fp32")]
    if args.bf16:
        variants += [("devs loop, bf16 autocast", False, "bf16"), ("devs loop, bf16 autocast, compile", True, "bf16")]
    for name, compile, precision in variants:
        seconds = devs_loop(images, targets, args.steps, args.batch, device, compile, args.warmup, precision)
        rates[name] = args.steps * args.batch / seconds
    rates["convolutions alone (a bound, not a loop)"] = (
        args.steps * args.batch / convolutions_alone(args.steps, args.batch, device))
    print("| loop | images/s | vs plain |")
    print("|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} | {rate / rates['plain fp32 loop']:.2f}x |")
    speedup = max(rate for name, rate in rates.items() if name.startswith("devs")) / rates["plain fp32 loop"]
    record(args.results, {"rates": rates, "speedup": speedup, "steps": args.steps, "batch": args.batch,
                          "device": str(device), "cpu": cpu_description()})
    print(f"speedup {speedup:.2f}")


if __name__ == "__main__":
    main()
