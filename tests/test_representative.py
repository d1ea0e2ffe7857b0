"""DREAM's representative real batches in DM and devs+'s DM step (devs.methods.representative)."""

import importlib

import pytest
import torch

from devs import DEvSPlus, get_method
from devs.errors import InvalidParameterError
from devs.methods.representative import POOL_FACTOR, RepresentativeBatches

DM_FAST = dict(ipc=1, width=16, batch_real=32, device="cpu", progress=False)


def clumps(count: int, per_clump: int) -> torch.Tensor:
    """``count`` tight, far-apart clumps of ``per_clump`` points each in 8 dimensions, clump-major."""
    centres = torch.eye(8)[:count] * 100
    return (centres[:, None] + torch.randn(count, per_clump, 8, generator=torch.Generator().manual_seed(0)))\
        .reshape(-1, 8)


def test_a_batch_takes_one_image_from_each_part_of_its_class():
    features = clumps(4, 64)  # one class of four modes, 64 images each
    batches = RepresentativeBatches(features, [torch.arange(256)], batch=4, every=10, seed=0)
    rows = batches.rows(0, 0)
    assert sorted((rows // 64).tolist()) == [0, 1, 2, 3]  # every mode once (a random 4 misses one 90% of the time)


def test_batches_stay_for_a_block_of_iterations_then_change_and_repeat_after_a_resume():
    features = torch.randn(600, 8, generator=torch.Generator().manual_seed(1))
    members = [torch.arange(0, 300), torch.arange(300, 600)]
    batches = RepresentativeBatches(features, members, batch=16, every=10, seed=3)
    first = batches.rows(1, 0)
    assert len(first) == 16 == len(set(first.tolist())) and bool(((first >= 300) & (first < 600)).all())
    assert torch.equal(batches.rows(1, 9), first) and not torch.equal(batches.rows(1, 10), first)
    resumed = RepresentativeBatches(features, members, batch=16, every=10, seed=3)
    assert torch.equal(resumed.rows(1, 10), batches.rows(1, 10))  # drawn from (seed, class, block) alone
    small = RepresentativeBatches(features, [torch.arange(5)], batch=16, every=10, seed=3)
    assert sorted(small.rows(0, 0).tolist()) == list(range(5))  # a class smaller than the batch: all of it
    assert POOL_FACTOR * 16 < 300  # the pool is a part of the class, so the blocks differ


def test_dm_matches_representatives_and_resumes_exactly(digits, tmp_path, monkeypatch):
    module = importlib.import_module("devs.methods.representative")
    drawn = []
    real_rows = module.RepresentativeBatches.rows
    monkeypatch.setattr(module.RepresentativeBatches, "rows",
                        lambda self, cls, iteration: drawn.append((cls, iteration)) or real_rows(self, cls, iteration))
    params = dict(DM_FAST, real_batches="representative", representative_every=2)
    whole = get_method("dm", iterations=4, **params).fit(digits)
    assert [iteration for cls, iteration in drawn if cls == 0] == [0, 1, 2, 3]
    plain = get_method("dm", iterations=4, **DM_FAST).fit(digits)
    assert not torch.equal(whole.distilled_.images, plain.distilled_.images)
    assert whole.distilled_.config["real_batches"] == "representative"
    assert "real_batches" not in plain.distilled_.config  # files of the paper's DM stay as they were
    get_method("dm", iterations=3, checkpoint_dir=tmp_path, **params).fit(digits)  # "killed" mid-block
    resumed = get_method("dm", iterations=4, checkpoint_dir=tmp_path, resume=True, **params).fit(digits)
    assert torch.equal(resumed.distilled_.images, whole.distilled_.images)


def test_devs_plus_picks_representatives_with_its_first_extractor(digits, monkeypatch):
    module = importlib.import_module("devs.methods.distribution_matching")
    nets = []
    real_embed = module.embed_training_set
    monkeypatch.setattr(module, "embed_training_set", lambda net, *rest: nets.append(net) or real_embed(net, *rest))
    common = dict(ipc=2, epochs=2, width=16, progress=False, finetune_iterations=4)
    method = DEvSPlus(finetune_real_batches="representative", **common).fit(digits)
    (net,) = nets
    extractor = method.first_extractor(digits)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), extractor.state_dict().values()))
    plain = DEvSPlus(**common).fit(digits)
    assert not torch.equal(method.distilled_.images, plain.distilled_.images)
    assert torch.equal(method.distilled_.labels, plain.distilled_.labels)  # the DM step keeps DEvS's labels


def test_bad_settings_fail_clearly(digits):
    with pytest.raises(InvalidParameterError, match="real_batches"):
        get_method("dm", real_batches="nearest", iterations=1, **DM_FAST).fit(digits)
    with pytest.raises(InvalidParameterError, match="representative_every"):
        get_method("dm", real_batches="representative", representative_every=0, iterations=1, **DM_FAST).fit(digits)
    with pytest.raises(InvalidParameterError, match="finetune_real_batches"):  # before any stage is trained
        DEvSPlus(ipc=2, finetune_real_batches="nearest").fit(digits)
