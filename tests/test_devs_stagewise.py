"""Step-wise DEvS: derived schedules, soft labels carried across stages, warm starts, resume mid-run."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import devs.methods.extractor as extractor_module
from devs import DEvS
from devs.cluster import kmeans_assign
from devs.errors import InvalidParameterError
from devs.methods.devs import geometric_schedule
from devs.models import build_model

FAST = dict(epochs=1, width=16, progress=False)


def test_geometric_schedule_matches_the_issue_example():
    assert geometric_schedule(5000, 10, shrink=4) == [1250, 312, 78, 20, 10]
    assert geometric_schedule(4500, 10, shrink=10) == [450, 45, 10]
    assert geometric_schedule(4500, 50, stages=2) == [474, 50]


@settings(max_examples=200, deadline=None)
@given(start=st.integers(1, 20000), ipc=st.integers(1, 500), shrink=st.floats(1.05, 50), stages=st.integers(1, 12))
def test_geometric_schedules_decrease_to_ipc(start, ipc, shrink, stages):
    ipc = min(ipc, start)
    for schedule in (geometric_schedule(start, ipc, shrink=shrink), geometric_schedule(start, ipc, stages=stages)):
        assert schedule[-1] == ipc
        assert all(later < earlier for earlier, later in zip(schedule, schedule[1:]))
        assert schedule[0] <= start
    derived = geometric_schedule(start, ipc, stages=stages)
    assert len(derived) <= stages  # rounding can merge sizes, never add stages
    if start >= ipc * 2**stages:  # room for every stage: exactly that many
        assert len(derived) == stages


@pytest.mark.parametrize("params, message", [
    ({"shrink": 4, "stages": 3}, "exactly one"),
    ({}, "exactly one"),
    ({"shrink": 1.0}, "'shrink' parameter"),
    ({"stages": 0}, "'stages' parameter"),
])
def test_geometric_schedule_rejects_bad_settings(params, message):
    with pytest.raises(InvalidParameterError, match=message):
        geometric_schedule(100, 2, **params)


def test_derived_schedule_gives_exact_per_class_counts_at_every_stage(digits):
    method = DEvS(ipc=2, shrink=4, clustering="per-class", **FAST).fit(digits)
    smallest = int(torch.bincount(digits.train.labels).min())
    schedule = geometric_schedule(smallest, 2, shrink=4)
    assert method.distilled_.config["resolved_schedule"] == schedule and len(schedule) >= 3
    assert [stage["output_size"] for stage in method.stages_] == [10 * ipc for ipc in schedule]
    assert method.distilled_.class_counts() == [2] * 10
    for stage, assignments in enumerate(method.assignments_):  # every output image of a stage has members
        assert sorted(set(assignments.tolist())) == list(range(10 * schedule[stage]))


def test_schedule_and_derivation_are_exclusive(digits):
    with pytest.raises(InvalidParameterError, match="not both"):
        DEvS(ipc=2, schedule=[20, 2], stages=2, **FAST).fit(digits)


def test_global_stages_carry_soft_labels(digits):
    method = DEvS(ipc=2, schedule=[30, 6, 2], clustering="global", **FAST).fit(digits)
    labels = torch.eye(10)[digits.train.labels]
    for assignments in method.assignments_:  # each stage's label rows: the plain mean of its inputs' rows
        k = int(assignments.max()) + 1
        labels = torch.stack([labels[assignments == j].mean(0) for j in range(k)])
    result = method.distilled_.labels
    assert torch.allclose(result.sum(1), torch.ones(len(result)), atol=1e-6)
    assert torch.allclose(result, labels, atol=1e-5)
    assert (result.max(1).values < 1).any()  # soft, not re-hardened between stages


def test_warm_start_begins_each_stage_from_the_previous_weights(digits, monkeypatch):
    starts = []
    original = extractor_module.train_classifier

    def spy(net, *args, **kwargs):
        starts.append({name: value.detach().clone() for name, value in net.state_dict().items()})
        return original(net, *args, **kwargs)

    monkeypatch.setattr(extractor_module, "train_classifier", spy)
    method = DEvS(ipc=2, schedule=[20, 2], warm_start=True, **FAST).fit(digits)
    trained_first = method.extractors_[0].state_dict()
    assert all(torch.equal(starts[1][name], trained_first[name].cpu()) for name in trained_first)
    starts.clear()
    cold = DEvS(ipc=2, schedule=[20, 2], **FAST).fit(digits)
    assert not all(torch.equal(starts[1][name], cold.extractors_[0].state_dict()[name]) for name in trained_first)


def test_resume_in_the_middle_of_a_multi_stage_run(digits, tmp_path, training_calls):
    params = dict(ipc=1, schedule=[40, 10, 3, 1], checkpoint_dir=tmp_path, random_state=7, **FAST)
    full = DEvS(**params).fit(digits).distilled_
    for path in [*tmp_path.glob("stage3-*"), *tmp_path.glob("stage4-*")]:
        path.unlink()  # as if the run had died during stage 3
    training_calls.clear()
    resumed = DEvS(resume=True, **params).fit(digits)
    assert [stage.get("resumed", False) for stage in resumed.stages_] == [True, True, False, False]
    # stages 3 and 4 reuse their saved extractors (same input, same seed): nothing trains again
    assert training_calls == []
    assert torch.equal(resumed.distilled_.images, full.images) and torch.equal(resumed.distilled_.labels, full.labels)


def test_warm_start_resume_redoes_a_stage_whose_extractor_is_gone(digits, tmp_path, training_calls):
    params = dict(ipc=2, schedule=[30, 8, 2], warm_start=True, checkpoint_dir=tmp_path, random_state=8, **FAST)
    full = DEvS(**params).fit(digits).distilled_
    for path in [*tmp_path.glob("stage3-*"), *tmp_path.glob("extractor2-*")]:
        path.unlink()
    training_calls.clear()
    resumed = DEvS(resume=True, **params).fit(digits)
    assert training_calls == [300]  # stage 2 retrained on stage 1's 300 images; stage 3's extractor file is reused
    assert [stage.get("resumed", False) for stage in resumed.stages_] == [True, False, False]
    assert torch.equal(resumed.distilled_.images, full.images)


def test_features_at_the_bottleneck(digits):
    net = build_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), width=8, bottleneck=5, seed=0)
    assert net.bottleneck_features(digits.train.images[:4]).shape == (4, 5)
    method = DEvS(ipc=1, bottleneck=6, feature_layer="bottleneck", **FAST).fit(digits)
    assert len(method.distilled_) == 10
    with pytest.raises(InvalidParameterError, match="needs a bottleneck"):
        DEvS(ipc=1, feature_layer="bottleneck", **FAST).fit(digits)
    with pytest.raises(InvalidParameterError, match="feature_layer"):
        DEvS(ipc=1, feature_layer="logits", **FAST).fit(digits)


def test_stage_records_carry_time_and_memory_but_the_file_does_not(digits):
    method = DEvS(ipc=2, schedule=[20, 2], **FAST).fit(digits)
    for record in method.stages_:
        assert record["train_s"] >= 0 and record["peak_memory_mib"] > 0
    assert all(not key.endswith(("_s", "_mib")) for stage in method.distilled_.config["stages"] for key in stage)


def test_torch_kmeans_finds_separated_blobs_and_exactly_k_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16)) * 20
    truth = rng.integers(0, 6, 600)
    points = (centres[truth] + rng.normal(size=(600, 16))).astype(np.float32)
    found = kmeans_assign(points, 6, seed=0, backend="torch")
    pairs = {(t, f) for t, f in zip(truth.tolist(), found.tolist())}
    assert len(pairs) == 6  # one cluster per blob, no blob split
    assert np.array_equal(found, kmeans_assign(points, 6, seed=0, backend="torch"))
    duplicates = np.repeat(points[:3], 10, axis=0)  # 3 distinct points, 5 clusters asked: none left empty
    assert sorted(set(kmeans_assign(duplicates, 5, seed=1, backend="torch").tolist())) == list(range(5))
