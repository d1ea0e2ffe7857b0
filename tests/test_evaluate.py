import importlib

import pytest
import torch

from devs import DistilledSet, RandomSubset, evaluate, evaluate_random_baseline, list_protocols
from devs.errors import DevsError, UnknownNameError
from devs.evaluate import PROTOCOLS


def test_protocols_are_registered_with_the_documented_recipes():
    assert set(list_protocols()) >= {"dc", "devs", "dsa"}
    dc, paper, dsa = PROTOCOLS.get("dc"), PROTOCOLS.get("devs"), PROTOCOLS.get("dsa")
    assert (dc.recipe.epochs, dc.recipe.lr, dc.recipe.momentum, dc.recipe.weight_decay, dc.recipe.batch_size) == (
        300, 0.01, 0.9, 5e-4, 256)
    assert dc.recipe.max_shift == 0 and not dc.recipe.flip and dc.recipe.mixup_alpha == 0 and dc.dropout == 0
    assert paper.recipe.max_shift == 5 and paper.recipe.flip and paper.recipe.mixup_alpha == 0.4 and paper.dropout == 0.2
    assert dsa.recipe == dc.recipe.replace(epochs=1000, dsa="color_crop_cutout_flip_scale_rotate")


def test_evaluate_trains_fresh_nets_and_learns(digits):
    subset = RandomSubset(ipc=5, random_state=0).fit(digits).distilled_
    result = evaluate(subset, digits, protocol="dc", runs=2, epochs=30, progress=False)
    assert len(result.accuracies) == 2 and result.seeds == [0, 1]
    assert all(40 < acc <= 100 for acc in result.accuracies)  # far above the 10% of chance
    again = evaluate(subset, digits, protocol="dc", runs=2, epochs=30, progress=False)
    assert again.accuracies == result.accuracies  # seeded


def test_random_baseline_trains_on_real_balanced_subsets(digits, monkeypatch):
    module = importlib.import_module("devs.evaluate")
    real, seen = module._Judge.train_and_test, []

    def spy(judge, images, targets, *rest):  # the real training, with a look at what it was given
        seen.append((images, targets))
        return real(judge, images, targets, *rest)

    monkeypatch.setattr(module._Judge, "train_and_test", spy)
    result = evaluate_random_baseline(digits, 20, protocol="dc", runs=2, epochs=60, progress=False)
    assert result.size == 20 and result.label == "random" and len(result.accuracies) == 2
    train = digits.train.images.flatten(1)
    subsets = []
    for images, targets in seen:
        assert images.shape == (20, 1, 8, 8) and torch.bincount(targets.argmax(1), minlength=10).tolist() == [2] * 10
        # every image is a training image, with its own one-hot label
        rows = [int(torch.nonzero((train == image.flatten()).all(1))[0]) for image in images]
        assert torch.equal(targets, torch.eye(10)[digits.train.labels[rows]])
        subsets.append(set(rows))
    assert subsets[0] != subsets[1]  # a new subset per net
    assert result.mean > 30  # 20 real digits for 60 epochs: far above chance (10 %)


def test_mismatched_dataset_is_refused(digits):
    wrong = DistilledSet(images=torch.rand(4, 1, 8, 8), labels=torch.eye(4), classes=list("abcd"), mean=[0.3], std=[0.3])
    with pytest.raises(DevsError, match="4 classes but dataset 'digits' has 10"):
        evaluate(wrong, digits, runs=1, epochs=1, progress=False)
    wrong_shape = DistilledSet(images=torch.rand(10, 3, 8, 8), labels=torch.eye(10), classes=digits.classes,
                               mean=[0.3] * 3, std=[0.3] * 3)
    with pytest.raises(DevsError, match="images"):
        evaluate(wrong_shape, digits, runs=1, epochs=1, progress=False)
    with pytest.raises(UnknownNameError, match="Valid: dc, devs"):
        evaluate(wrong, digits, protocol="dcc")


def test_holdout_split_is_stratified_and_disjoint(digits):
    from devs.data import holdout_split
    from devs.errors import DatasetError

    split = holdout_split(digits, 100, seed=0)
    assert len(split.test) == 100 and len(split.train) == len(digits.train) - 100
    assert torch.bincount(split.test.labels, minlength=10).min() >= 9  # stratified: ~10 per class
    train_rows = {tuple(row.flatten().tolist()) for row in split.train.images}
    duplicates_in_train = len(digits.train) - len({tuple(r.flatten().tolist()) for r in digits.train.images})
    overlap = sum(tuple(row.flatten().tolist()) in train_rows for row in split.test.images)
    assert overlap <= duplicates_in_train
    assert split.name == "digits-holdout100"
    with pytest.raises(DatasetError, match="holdout"):
        holdout_split(digits, 5)
