"""Evaluation speed: a small set judged by several fresh nets (dc protocol), devs against plain runs.

The set is a class-balanced random real subset (--ipc images per class, seed 0) of --dataset. The
baseline is --nets sequential textbook fp32 runs of the dc protocol: ConvNet-3, SGD (lr 0.01, momentum
0.9, wd 5e-4), 300 epochs of full batches (the set is smaller than 256), lr x0.1 at epoch 150, then test
accuracy over the whole test split in batches of 256, NCHW, under torch.no_grad. Then ``devs.evaluate``
runs the same nets (same seeds) in the variants below, and a last row times the nets' convolutions
alone: the floor under any fp32 evaluation of these nets on the machine. Prints a table, appends one JSON line to
--results, and ends with ``speedup X.XX`` (fastest devs variant over the plain runs).

With ``--device cuda`` the plain runs and the floor (CPU measures) are left out and the variants are timed
against ``devs evaluate`` itself (one net after another): what compiling, training the nets together
(``together``, devs.together) and bf16 gain where one small net leaves the GPU idle.

    python benchmarks/evaluation.py --results benchmarks/results/evaluation.jsonl
    python benchmarks/evaluation.py --device cuda --ipc 10 --nets 10 --results benchmarks/results/evaluation-gpu.jsonl
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from devs.data import load_dataset
from devs.evaluate import evaluate
from devs.io import DistilledSet
from devs.methods.coresets import balanced_counts, random_subset_indices
from devs.models import build_model
from devs_table import machine, record

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: evaluate() keyword arguments
    "devs evaluate": {},
    "devs evaluate, compile": {"compile": True},
    "devs evaluate, together": {"together": True},
    "devs evaluate, together, bf16": {"together": True, "precision": "bf16"},
}


def plain_run(images, labels, test_images, test_labels, num_classes: int, seed: int) -> tuple[float, float, float]:
    """One textbook dc-protocol run: (accuracy %, training seconds, testing seconds)."""
    start = time.perf_counter()
    mean = images.mean((0, 2, 3), keepdim=True)
    std = images.std((0, 2, 3), keepdim=True)
    net = build_model("convnet", in_channels=images.shape[1], num_classes=num_classes,
                      image_size=tuple(images.shape[2:]), seed=seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[150], gamma=0.1)
    inputs = (images - mean) / std
    net.train()
    for _ in range(300):
        loss = F.cross_entropy(net(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    trained = time.perf_counter()
    net.eval()
    correct = 0
    with torch.no_grad():
        for begin in range(0, len(test_images), 256):
            logits = net((test_images[begin : begin + 256] - mean) / std)
            correct += int((logits.argmax(1) == test_labels[begin : begin + 256]).sum())
    return 100.0 * correct / len(test_images), trained - start, time.perf_counter() - trained


def convolutions_alone(set_size: int, test_size: int, image_shape, nets: int) -> float:
    """Seconds that the nets' convolutions alone take, run as fast as this machine runs them (channels-last,
    the faster layout here): 300 forward + backward passes over the set and one forward pass over the test
    split per net, with ConvNet-3's shapes. No evaluation of these nets can take less (in fp32)."""
    generator = torch.Generator().manual_seed(0)
    channels, side = image_shape[0], image_shape[1]
    shapes = [(channels, side), (128, side // 2), (128, side // 4)]
    weights = [torch.rand(128, c, 3, 3, generator=generator).contiguous(memory_format=torch.channels_last)
               for c, _ in shapes]

    def passes(batch: int, count: int, backward: bool) -> float:
        inputs = [torch.rand(batch, c, s, s, generator=generator).contiguous(memory_format=torch.channels_last)
                  .requires_grad_(backward and c != channels) for c, s in shapes]
        grads = [torch.rand(batch, 128, s, s, generator=generator).contiguous(memory_format=torch.channels_last)
                 for _, s in shapes]
        for weight in weights:
            weight.requires_grad_(backward)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            for _ in range(count):
                for x, w, g in zip(inputs, weights, grads):
                    out = F.conv2d(x, w, padding=1)
                    if backward:
                        out.backward(g)
        return time.perf_counter() - start

    train = passes(set_size, 300, backward=True)
    test = passes(256, -(-test_size // 256), backward=False)
    return nets * (train + test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
    parser.add_argument("--ipc", type=int, default=1, help="images per class of the judged set (default 1: 10 images)")
    parser.add_argument("--nets", type=int, default=5)
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS),
                        help="default: every fp32 variant on a CPU, every variant on a GPU")
    parser.add_argument("--device", default="cpu", help="cpu (default), or cuda: the variants alone")
    parser.add_argument("--results", help="append the result as one JSON line here")
    args = parser.parse_args()
    on_cpu = args.device == "cpu"
    if args.variants is None:
        args.variants = [name for name in VARIANTS if not (on_cpu and "bf16" in name)]
    if not on_cpu and "devs evaluate" not in args.variants:
        args.variants.insert(0, "devs evaluate")  # the baseline on a GPU
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    dataset = load_dataset(args.dataset)
    index = random_subset_indices(dataset.train.labels, balanced_counts(args.ipc * dataset.num_classes,
                                                                        dataset.num_classes), 0)
    images, labels = dataset.train.images[index], dataset.train.labels[index]
    one_hot = F.one_hot(labels, dataset.num_classes).float()
    mean, std = images.mean((0, 2, 3)).tolist(), images.std((0, 2, 3)).tolist()
    distilled = DistilledSet(images=images, labels=one_hot, classes=list(dataset.classes), mean=mean, std=std,
                             dataset=dataset.name, method="random")
    print(f"{len(images)} images, {args.nets} nets, dc protocol, {args.device}, {machine()}", flush=True)

    rows = {}
    if on_cpu:
        start = time.perf_counter()
        plain = [plain_run(images, labels, dataset.test.images, dataset.test.labels, dataset.num_classes, seed)
                 for seed in range(args.nets)]
        rows["plain runs, one after another"] = {
            "seconds": time.perf_counter() - start, "accuracies": [acc for acc, _, _ in plain],
            "train_s": statistics.fmean(t for _, t, _ in plain), "test_s": statistics.fmean(t for _, _, t in plain)}
        print(f"plain: {rows['plain runs, one after another']}", flush=True)
    for name in args.variants:
        options = VARIANTS[name]
        start = time.perf_counter()
        result = evaluate(distilled, dataset, protocol="dc", runs=args.nets, seed=0, device=args.device,
                          progress=False, **options)
        if args.device != "cpu":
            torch.cuda.synchronize()
        rows[name] = {"seconds": time.perf_counter() - start, "accuracies": result.accuracies, "options": options,
                      "together": result.together, "precision": result.precision}
        print(f"{name}: {rows[name]}", flush=True)

    if on_cpu:
        floor = convolutions_alone(len(images), len(dataset.test), dataset.image_shape, args.nets)
        rows["convolutions alone (a bound, not a run)"] = {"seconds": floor, "accuracies": []}
    base_row = "plain runs, one after another" if on_cpu else "devs evaluate"
    base = rows[base_row]["seconds"]
    print(f"| how | seconds | vs {'plain' if on_cpu else 'devs evaluate'} | accuracy (%) |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        accs = row["accuracies"]
        accuracy = f"{statistics.fmean(accs):.2f} ± {statistics.pstdev(accs):.2f}" if accs else ""
        print(f"| {name} | {row['seconds']:.1f} | {base / row['seconds']:.2f}x | {accuracy} |")
    speedup = max(base / row["seconds"] for name, row in rows.items() if name.startswith("devs") and name != base_row)
    record(args.results, {"rows": rows, "speedup": speedup, "baseline": base_row, "images": len(images),
                          "nets": args.nets, "device": args.device})
    print(f"speedup {speedup:.2f}")


if __name__ == "__main__":
    main()
