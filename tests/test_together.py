"""devs.together: nets trained at once end as the same nets trained one by one."""

import pytest
import torch

from devs.errors import InvalidParameterError
from devs.models import build_model
from devs.together import train_together, why_not_together
from devs.train import Normalizer, TrainRecipe, train_classifier

CPU = torch.device("cpu")


def _net(seed, **options):
    return build_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), width=8, depth=2, seed=seed,
                       **options)


def _sets(digits, seeds, size=40):
    """A different subset (and soft-ish labels) per net, of one size."""
    sets = []
    for seed in seeds:
        index = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(100 + seed))[:size]
        rows = torch.eye(10)[digits.train.labels[index]] * 0.9 + 0.01
        sets.append((digits.train.images[index], rows))
    return sets


@pytest.mark.parametrize("recipe", [
    TrainRecipe(epochs=6, batch_size=16),  # dc: no augmentation; 3 batches per epoch, the last one short
    TrainRecipe(epochs=6, batch_size=16, dsa="color_crop_cutout_scale_rotate", cutmix_prob=0.5, max_shift=1,
                flip=True, lr_drops=(0.5,)),  # every kind of draw: each net must keep its own streams
], ids=["plain", "augmented"])
def test_together_equals_one_by_one(digits, recipe):
    seeds = [3, 4, 5]
    normalizer = Normalizer(*digits.channel_stats(), CPU)
    sets = _sets(digits, seeds)
    alone = [_net(seed) for seed in seeds]
    for net, (images, rows), seed in zip(alone, sets, seeds):
        train_classifier(net, images, rows, recipe, normalizer, seed, CPU)
    together = train_together([_net(seed) for seed in seeds], sets, recipe, normalizer, seeds, CPU)
    start = torch.nn.utils.parameters_to_vector(_net(seeds[0]).parameters())
    for one, other in zip(alone, together):
        a = torch.nn.utils.parameters_to_vector(one.parameters())
        b = torch.nn.utils.parameters_to_vector(other.parameters())
        assert not torch.equal(a, start)  # it trained
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), float((a - b).abs().max())
        assert not other.training


def test_swapped_seeds_give_swapped_nets(digits):
    """Each net follows its own seed's draws, not its position."""
    recipe = TrainRecipe(epochs=2, batch_size=16, dsa="crop")
    normalizer = Normalizer(*digits.channel_stats(), CPU)
    images, rows = _sets(digits, [0])[0]
    first = train_together([_net(0), _net(0)], [(images, rows)] * 2, recipe, normalizer, [7, 8], CPU)
    second = train_together([_net(0), _net(0)], [(images, rows)] * 2, recipe, normalizer, [8, 7], CPU)
    vector = torch.nn.utils.parameters_to_vector
    assert torch.allclose(vector(first[0].parameters()), vector(second[1].parameters()), atol=1e-6)
    assert not torch.allclose(vector(first[0].parameters()), vector(first[1].parameters()), atol=1e-3)


def test_refuses_what_it_cannot_train_alike(digits):
    normalizer = Normalizer(*digits.channel_stats(), CPU)
    recipe = TrainRecipe(epochs=1)
    sets = _sets(digits, [0, 1])
    assert why_not_together(_net(0)) is None
    assert "batch norm" in why_not_together(_net(0, norm="batch"))
    assert "dropout" in why_not_together(_net(0, dropout=0.2))
    with pytest.raises(InvalidParameterError, match="batch norm"):
        train_together([_net(0, norm="batch"), _net(1, norm="batch")], sets, recipe, normalizer, [0, 1], CPU)
    with pytest.raises(InvalidParameterError, match="one size"):
        train_together([_net(0), _net(1)], [sets[0], _sets(digits, [1], size=30)[0]], recipe, normalizer, [0, 1], CPU)
    with pytest.raises(InvalidParameterError, match="as many"):
        train_together([_net(0), _net(1)], sets, recipe, normalizer, [0], CPU)
    wide = build_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), width=16, depth=2, seed=1)
    with pytest.raises(InvalidParameterError, match="architecture"):
        train_together([_net(0), wide], sets, recipe, normalizer, [0, 1], CPU)


def test_evaluate_together_gives_the_nets_of_one_by_one(digits):
    from devs.evaluate import evaluate, evaluate_random_baseline
    from devs.methods.coresets import RandomSubset

    subset = RandomSubset(ipc=5, random_state=0).fit(digits).distilled_
    # Few steps: float rounding differences grow over a long run (as a 1e-7 change of the initial weights
    # does), so only a short one can show the same nets by their accuracies.
    options = dict(protocol="dsa", runs=3, epochs=10, progress=False)
    alone = evaluate(subset, digits, **options)
    together = evaluate(subset, digits, together=True, **options)
    assert (alone.together, together.together) == (False, True) and together.to_dict()["together"] is True
    assert together.seeds == alone.seeds == [0, 1, 2]
    assert together.accuracies == pytest.approx(alone.accuracies, abs=1e-6)
    assert len(set(alone.accuracies)) > 1  # the nets differ by seed, so a mix-up of seeds would show
    random = evaluate_random_baseline(digits, 50, together=True, **options)
    assert random.together and random.accuracies == pytest.approx(
        evaluate_random_baseline(digits, 50, **options).accuracies, abs=1e-6)
    # dropout (the devs protocol) keeps the nets one by one, and says so in the result
    assert not evaluate(subset, digits, protocol="devs", runs=2, epochs=2, progress=False, together=True).together
