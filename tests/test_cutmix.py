"""CutMix, IDC's composed augmentation, multi-step schedules and the dsa-cutmix protocol built from them."""

import numpy as np
import pytest
import torch

from devs import RandomSubset, evaluate
from devs.augment import cutmix, cutmix_box
from devs.dsa import parse_strategy, sample_composed
from devs.errors import InvalidParameterError
from devs.evaluate import PROTOCOLS, _resolve
from devs.train import TrainRecipe


def batch(n=16, side=12):
    images = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 3, side, side).clone()
    targets = torch.eye(n)  # image i is "class" i, so a target row says which images were mixed in
    return images, targets


def test_cutmix_box_has_the_area_of_the_weight_inside_the_image():
    rng = np.random.default_rng(0)
    for lam in (0.1, 0.5, 0.9):
        for _ in range(50):
            top, bottom, left, right = cutmix_box(32, 32, lam, rng)
            assert 0 <= top <= bottom <= 32 and 0 <= left <= right <= 32
            side = int(32 * np.sqrt(1 - lam))
            assert bottom - top <= side and right - left <= side  # clipping only shrinks it
    # never clipped when the centre is in the middle: the box's sides are the full int(side * sqrt(1 - lam))
    boxes = [cutmix_box(32, 32, 0.75, np.random.default_rng(seed)) for seed in range(200)]
    assert max((b - t) * (r - l) for t, b, l, r in boxes) == 16 * 16


def test_cutmix_pastes_one_box_from_a_shuffled_partner_and_mixes_targets_by_area():
    images, targets = batch()
    mixed, mixed_targets = cutmix(images, targets, prob=1.0, beta=1.0, generator=torch.Generator().manual_seed(0),
                                  rng=np.random.default_rng(1))
    changed = (mixed != images).any(1)  # [N, H, W]: which pixels came from a partner
    assert changed.any()
    box = changed.any(0)
    assert torch.equal(changed, box.expand_as(changed) & (images[:, 0] != mixed[:, 0]))  # one box for the batch
    area = float(box.float().mean())
    for i in range(len(images)):
        partner = int(mixed[i, 0][box][0])
        assert (mixed[i, :, box] == partner).all() and (mixed[i, :, ~box] == i).all()
        if partner != i:
            assert mixed_targets[i, i] == pytest.approx(1 - area) and mixed_targets[i, partner] == pytest.approx(area)
    assert torch.allclose(mixed_targets.sum(1), torch.ones(len(images)))


def test_cutmix_applies_to_the_share_of_batches_asked_for_and_is_seeded():
    images, targets = batch()
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    mixed = [not torch.equal(cutmix(images, targets, 0.5, 1.0, generator, rng)[0], images) for _ in range(400)]
    assert 0.4 < np.mean(mixed) < 0.6  # about half (a box can be empty now and then, which changes nothing)
    untouched = cutmix(images, targets, 0.0, 1.0, generator, rng)
    assert untouched[0] is images and untouched[1] is targets
    first = cutmix(images, targets, 1.0, 1.0, torch.Generator().manual_seed(3), np.random.default_rng(3))
    second = cutmix(images, targets, 1.0, 1.0, torch.Generator().manual_seed(3), np.random.default_rng(3))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_composed_augmentation_is_flip_color_one_more_then_cutout():
    generator = torch.Generator().manual_seed(0)
    kinds = [tuple(draw.kind for draw in sample_composed(parse_strategy("color_crop_cutout_flip_scale_rotate"),
                                                         generator, (16, 16), 4).draws) for _ in range(60)]
    assert {kind[:2] for kind in kinds} == {("flip", "color")} and {kind[3] for kind in kinds} == {"cutout"}
    assert {kind[2] for kind in kinds} == {"crop", "scale", "rotate"}  # the middle one varies
    without_flip = sample_composed(parse_strategy("color_crop_cutout_scale_rotate"), generator, (16, 16), 4)
    assert [draw.kind for draw in without_flip.draws][0] == "color" and len(without_flip.draws) == 3
    images = torch.rand(4, 3, 16, 16)
    draw = sample_composed(parse_strategy("color_cutout_flip"), generator, (16, 16), 4)
    expected = images
    for single in draw.draws:
        expected = single(expected)
    assert torch.equal(draw(images), expected)


def test_recipe_checks_the_new_settings():
    for bad in (dict(dsa_mode="twice"), dict(cutmix_prob=1.5), dict(cutmix_beta=0.0), dict(lr_drops=(1.2,)),
                dict(lr_gamma=0.0)):
        with pytest.raises(InvalidParameterError):
            TrainRecipe(**bad)


def test_dsa_cutmix_protocol_is_idcs_settings_and_drops_flip_for_digits():
    protocol = PROTOCOLS.get("dsa-cutmix")
    recipe = protocol.recipe
    assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.momentum, recipe.weight_decay) == (
        1000, 64, 0.01, 0.9, 5e-4)
    assert [int(1000 * drop) for drop in recipe.lr_drops] == [666, 833] and recipe.lr_gamma == 0.2
    assert (recipe.dsa_mode, recipe.cutmix_prob, recipe.cutmix_beta) == ("composed", 0.5, 1.0)
    _, no_flip, _ = _resolve("dsa-cutmix", 1, None, False, None, flip=False)
    assert "flip" not in parse_strategy(no_flip.dsa) and no_flip.cutmix_prob == 0.5


def test_the_learning_rate_steps_at_each_drop(digits, monkeypatch):
    seen = []
    real = torch.optim.lr_scheduler.MultiStepLR

    def spy(optimizer, milestones, gamma):
        seen.append((list(milestones), gamma))
        return real(optimizer, milestones=milestones, gamma=gamma)

    monkeypatch.setattr(torch.optim.lr_scheduler, "MultiStepLR", spy)
    subset = RandomSubset(ipc=2, random_state=0).fit(digits).distilled_
    evaluate(subset, digits, protocol="dsa-cutmix", runs=1, epochs=12, progress=False)
    assert seen == [([8, 10], 0.2)]


def test_dsa_cutmix_trains_nets_that_learn(digits):
    subset = RandomSubset(ipc=5, random_state=0).fit(digits).distilled_
    result = evaluate(subset, digits, protocol="dsa-cutmix", runs=1, epochs=40, progress=False)
    assert result.protocol == "dsa-cutmix" and 40 < result.mean <= 100  # far above the 10 % of chance
