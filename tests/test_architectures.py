"""The evaluation networks beside ConvNet-3, hard vs soft label evaluation, the scores, and cross-architecture runs."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from devs import RandomSubset
from devs.cli import main
from devs.errors import InvalidParameterError
from devs.io import load_distilled
from devs.evaluate import EvaluationResult, compute_scores, evaluate, hard_labels
from devs.models import ShardedDropout, build_model, count_parameters, list_models

ROOT = Path(__file__).resolve().parent.parent

# Small widths for the forward/backward checks (every model takes ``width``); parameter counts use the defaults.
SMALL = {"alexnet": 8, "alexnet-nonorm": 8, "vgg11": 4, "vgg11-in": 4, "resnet18": 4, "resnet18-in": 4, "mlp": 8}


@pytest.mark.parametrize("name", list_models())
def test_forward_and_backward_at_every_size_and_channel_count(name):
    for channels in (1, 3):
        for size in (28, 32, 64):
            net = build_model(name, in_channels=channels, num_classes=10, image_size=(size, size), seed=0,
                              width=SMALL.get(name, 8), dropout=0.2)
            net.train()
            out = net(torch.rand(2, channels, size, size))
            assert out.shape == (2, 10)
            out.square().mean().backward()
            grads = [p.grad for p in net.parameters()]
            assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads), (name, channels, size)
    # dropout sits right before the classifier
    head = [m for m in net.modules() if isinstance(m, (ShardedDropout, torch.nn.Linear))][-2:]
    assert isinstance(head[0], ShardedDropout) and head[0].p == 0.2 and head[1].out_features == 10
    with pytest.raises(InvalidParameterError, match="dropout"):
        build_model(name, in_channels=3, num_classes=10, image_size=(32, 32), dropout=1.0)


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def norm(c):  # batch norm and GroupNorm(c, c) both learn a scale and a shift per channel
    return 2 * c


def linear(n_in, n_out):
    return n_in * n_out + n_out


def convnet(c, width=128, depth=3, side=32, k=10):
    blocks = sum(conv(3, c if i == 0 else width, width) + norm(width) for i in range(depth))
    return blocks + linear(width * (side // 2**depth) ** 2, k)


def alexnet(c, normed=True, k=10):
    layers = [(5, c, 128), (5, 128, 192), (3, 192, 256), (3, 256, 192), (3, 192, 192)]
    return sum(conv(kk, cin, cout) + (norm(cout) if normed else 0) for kk, cin, cout in layers) + linear(192 * 4 * 4, k)


def vgg11(c, k=10):
    channels = [c, 64, 128, 256, 256, 512, 512, 512, 512]
    return sum(conv(3, cin, cout) + norm(cout) for cin, cout in zip(channels, channels[1:])) + linear(512, k)


def resnet18(c, k=10):
    def block(cin, cout):
        shortcut = conv(1, cin, cout, bias=False) + norm(cout) if cin != cout else 0
        return conv(3, cin, cout, bias=False) + norm(cout) + conv(3, cout, cout, bias=False) + norm(cout) + shortcut

    stages = sum(block(cin, cout) + block(cout, cout) for cin, cout in [(64, 64), (64, 128), (128, 256), (256, 512)])
    return conv(3, c, 64, bias=False) + norm(64) + stages + linear(512, k)


def mlp(c, side=32, k=10):
    return linear(c * side * side, 128) + linear(128, 128) + linear(128, k)


HAND_COUNTS = {  # 3x32x32 inputs, 10 classes
    "convnet": convnet(3), "convnet-bn": convnet(3),
    "convnet-d1": convnet(3, depth=1), "convnet-d2": convnet(3, depth=2), "convnet-d4": convnet(3, depth=4),
    "convnet-w32": convnet(3, width=32), "convnet-w64": convnet(3, width=64), "convnet-w256": convnet(3, width=256),
    "alexnet": alexnet(3), "alexnet-nonorm": alexnet(3, normed=False),
    "vgg11": vgg11(3), "vgg11-in": vgg11(3),
    "resnet18": resnet18(3), "resnet18-in": resnet18(3),
    "mlp": mlp(3),
}


def test_parameter_counts_match_the_architectures_by_hand():
    assert set(HAND_COUNTS) == set(list_models())  # a new model needs its count written here
    for name, expected in HAND_COUNTS.items():
        net = build_model(name, in_channels=3, num_classes=10, image_size=(32, 32))
        assert sum(p.numel() for p in net.parameters()) == expected, name
        assert count_parameters(name) == expected, name  # what `devs list` prints
    # the well-known CIFAR sizes, and the one-channel 28 px versions (DC's MNIST nets)
    assert (HAND_COUNTS["resnet18"], HAND_COUNTS["vgg11"], HAND_COUNTS["convnet"]) == (11_173_962, 9_231_114, 320_010)
    assert count_parameters("mlp", 1, 10, (28, 28)) == mlp(1, side=28) == 118_282
    assert count_parameters("alexnet", 1, 10, (28, 28)) == alexnet(1)
    assert count_parameters("convnet", 1, 10, (28, 28)) == convnet(1)  # 28 px is padded to 32
    assert count_parameters("resnet18-in", 1, 10, (64, 64)) == resnet18(1)  # global pooling: any size
    assert count_parameters("vgg11", 3, 10, (128, 128)) == vgg11(3)


def wrong_but_argmax_right(digits, ipc=5):
    """Real digits whose label rows put 0.45 on the true class and 0.40 on the next one (argmax still right)."""
    subset = RandomSubset(ipc=ipc, random_state=0).fit(digits).distilled_
    truth = subset.labels.argmax(1)
    labels = torch.full_like(subset.labels, 0.15 / 8)
    labels[torch.arange(len(truth)), truth] = 0.45
    labels[torch.arange(len(truth)), (truth + 1) % 10] = 0.40
    subset.labels = labels
    return subset, truth


def test_hard_labels_are_the_one_hot_argmax_and_change_the_result(digits, monkeypatch):
    subset, truth = wrong_but_argmax_right(digits)
    assert torch.equal(hard_labels(subset.labels), torch.eye(10)[truth])
    module = importlib.import_module("devs.evaluate")
    real, seen = module._Judge.train_and_test, []
    monkeypatch.setattr(module._Judge, "train_and_test",
                        lambda judge, images, targets, *rest: seen.append(targets) or real(judge, images, targets, *rest))
    options = dict(protocol="dc", runs=1, epochs=40, progress=False, model="mlp")
    soft = evaluate(subset, digits, labels="soft", **options)
    hard = evaluate(subset, digits, labels="hard", **options)
    assert torch.equal(seen[0], subset.labels) and torch.equal(seen[1], torch.eye(10)[truth])
    assert (soft.model, soft.labels, hard.labels) == ("mlp", "soft", "hard")
    assert hard.mean > soft.mean + 10  # same seed and images: only the labels differ, and the soft ones mislead
    assert hard.to_dict()["labels"] == "hard" and hard.to_dict()["model"] == "mlp"
    with pytest.raises(InvalidParameterError, match="labels"):
        evaluate(subset, digits, labels="argmax", **options)


def test_gap_closed_arithmetic():
    chosen = EvaluationResult("devs", "dc", 100, accuracies=[60.0, 62.0], model="resnet18")
    random = EvaluationResult("random", "dc", 100, accuracies=[50.0], model="resnet18", labels="hard")
    whole = EvaluationResult("whole set", "dc", 50000, accuracies=[72.0, 72.0], model="resnet18", labels="hard")
    scores = compute_scores(chosen, random, whole)
    assert scores["gain"] == pytest.approx(11.0) and scores["gap_closed"] == pytest.approx(11.0 / 22.0)
    assert compute_scores(chosen, random)["gap_closed"] is None
    assert compute_scores(61.0, 50.0, 94.0)["gap_closed"] == pytest.approx(0.25)
    assert compute_scores(40.0, 50.0, 90.0)["gap_closed"] == pytest.approx(-0.25)  # worse than random
    assert compute_scores(61.0, 50.0, 50.0)["gap_closed"] is None  # no gap to close
    with pytest.raises(InvalidParameterError, match="one protocol and model"):
        compute_scores(chosen, EvaluationResult("random", "dc", 100, accuracies=[50.0], model="convnet"))


def test_evaluate_command_prints_one_row_per_model(digits, tmp_path, capsys):
    path = tmp_path / "set.safetensors"
    subset, _ = wrong_but_argmax_right(digits, ipc=2)
    subset.save(path)
    argv = ["evaluate", str(path), "--dataset", "digits", "--model", "convnet,mlp", "--runs", "1", "--eval-epochs", "2",
            "--labels", "hard", "--ceiling", "95", "-q"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.startswith("  ") and not line.split()[0] == "model"]
    assert [row[0] for row in rows] == ["convnet", "mlp"] and all(row[1] == "hard" for row in rows)
    assert "ceiling 95.00 %" in lines[1] and "gap closed" in lines[2]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    results = report["results"]
    assert [(r["label"], r["model"]) for r in results] == [("random", "convnet"), ("random", "convnet"),
                                                           ("random", "mlp"), ("random", "mlp")]
    chosen, random = results[2], results[3]
    assert chosen["scores"]["gain"] == pytest.approx(chosen["mean"] - random["mean"])
    assert chosen["scores"]["gap_closed"] == pytest.approx((chosen["mean"] - random["mean"]) / (95 - random["mean"]))
    assert report["labels"] == "hard" and report["ceiling"] == 95


def test_list_shows_parameter_counts(capsys):
    assert main(["list", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert models["resnet18"]["parameters"] == 11_173_962 and "DC's ResNet18BN" in models["resnet18"]["description"]
    assert main(["list"]) == 0
    assert "11,173,962" in capsys.readouterr().out


def test_cross_arch_benchmark_records_and_resumes(digits, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    cross_arch = importlib.import_module("cross_arch")
    path, results = tmp_path / "set.safetensors", tmp_path / "cross.jsonl"
    RandomSubset(ipc=1, random_state=1).fit(digits).distilled_.save(path)
    argv = [str(path), "--dataset", "digits", "--models", "mlp", "--labels", "soft,hard", "--runs", "1",
            "--eval-epochs", "1", "-q", "--results", str(results)]
    baselines = []
    real = cross_arch.evaluate_random_baseline
    monkeypatch.setattr(cross_arch, "evaluate_random_baseline", lambda *a, **k: baselines.append(1) or real(*a, **k))
    assert cross_arch.main(argv) == 0
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["model"], r["labels"]) for r in rows] == [("mlp", "soft"), ("mlp", "hard")]
    assert len(baselines) == 1 and rows[0]["random"] == rows[1]["random"]  # one random subset serves both modes
    # A random subset's rows are one-hot: the hard cell copies the soft one instead of training the same nets.
    assert rows[1]["same_as"] == "soft" and rows[1]["set"]["accuracies"] == rows[0]["set"]["accuracies"]
    assert rows[1]["set"]["labels"] == "hard" and "same_as" not in rows[0]
    assert cross_arch.main(argv) == 0  # rerun: nothing new
    assert len(results.read_text().splitlines()) == 2 and len(baselines) == 1
    capsys.readouterr()
    assert cross_arch.main(["--results", str(results), "--markdown"]) == 0
    table = capsys.readouterr().out
    assert "| mlp |" in table and "random subset" in table and "dc, 1 epoch |" in table
    assert "hard (= soft, one-hot rows)" in table
    sys.modules.pop("cross_arch", None)


def test_cross_arch_trains_both_label_modes_of_a_soft_set(digits, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    cross_arch = importlib.import_module("cross_arch")
    path, results = tmp_path / "set.safetensors", tmp_path / "cross.jsonl"
    distilled = RandomSubset(ipc=1, random_state=1).fit(digits).distilled_
    distilled.labels = 0.8 * distilled.labels + 0.02  # soft rows: hard evaluation trains on other targets
    distilled.save(path)
    assert not cross_arch.labels_are_one_hot(load_distilled(path))
    trained = []
    real = cross_arch.evaluate
    monkeypatch.setattr(cross_arch, "evaluate", lambda *a, **k: trained.append(k["labels"]) or real(*a, **k))
    argv = [str(path), "--dataset", "digits", "--models", "mlp", "--runs", "1", "--eval-epochs", "1", "-q",
            "--results", str(results)]
    assert cross_arch.main(argv) == 0
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert trained == ["soft", "hard"] and not any("same_as" in row for row in rows)
    sys.modules.pop("cross_arch", None)
