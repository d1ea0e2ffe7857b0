import pytest
import torch

import devs.methods.extractor as extractor_module
from devs import DEvS, RandomSubset, get_method
from devs.errors import InvalidParameterError, UnknownNameError

FAST = dict(epochs=1, width=16, progress=False)


def test_one_stage_invariants_per_class(digits):
    method = DEvS(ipc=3, clustering="per-class", **FAST).fit(digits)
    result = method.distilled_
    assert len(result) == 30 and result.class_counts() == [3] * 10
    assert torch.allclose(result.labels.sum(1), torch.ones(30))
    assert torch.equal(result.labels, torch.eye(10)[result.hard_labels])  # per-class clusters stay one class
    assignments = method.assignments_[0]
    assert assignments.shape == (len(digits.train),) and set(assignments.tolist()) == set(range(30))
    for index in range(30):
        members = assignments == index
        assert torch.allclose(result.images[index], digits.train.images[members].mean(0), atol=1e-6)
        assert (digits.train.labels[members] == result.hard_labels[index]).all()


def test_global_clustering_gives_soft_labels_and_exact_size(digits):
    method = DEvS(ipc=2, clustering="global", **FAST).fit(digits)
    result = method.distilled_
    assert len(result) == 20
    assert torch.allclose(result.labels.sum(1), torch.ones(20), atol=1e-6)
    one_hot = torch.eye(10)[digits.train.labels]
    for index in range(20):
        members = method.assignments_[0] == index
        assert torch.allclose(result.labels[index], one_hot[members].mean(0), atol=1e-6)


def test_two_stages_follow_the_schedule(digits):
    method = DEvS(ipc=2, schedule=[20, 2], **FAST).fit(digits)
    assert [s["output_size"] for s in method.stages_] == [200, 20]
    assert [s["input_size"] for s in method.stages_] == [len(digits.train), 200]
    assert method.distilled_.config["resolved_schedule"] == [20, 2]
    assert method.distilled_.method == "devs" and method.distilled_.source_train_size == len(digits.train)


def test_same_seed_same_result_other_seed_other_result(digits):
    a = DEvS(ipc=2, random_state=1, **FAST).fit(digits).distilled_
    b = DEvS(ipc=2, random_state=1, **FAST).fit(digits).distilled_
    c = DEvS(ipc=2, random_state=2, **FAST).fit(digits).distilled_
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_resume_skips_finished_stages(digits, tmp_path, monkeypatch):
    params = dict(ipc=2, schedule=[20, 2], checkpoint_dir=tmp_path, random_state=3, **FAST)
    first = DEvS(**params).fit(digits).distilled_
    assert len(list(tmp_path.glob("stage*.safetensors"))) == 2

    def no_training(*args, **kwargs):
        raise AssertionError("a finished stage was recomputed")

    monkeypatch.setattr(extractor_module, "train_classifier", no_training)
    resumed = DEvS(resume=True, **params).fit(digits)
    assert torch.equal(resumed.distilled_.images, first.images)
    assert all(stage["resumed"] for stage in resumed.stages_)
    # other settings must not pick up these checkpoints
    with pytest.raises(AssertionError, match="recomputed"):
        DEvS(resume=True, **{**params, "random_state": 4}).fit(digits)


def test_resume_after_first_stage_only(digits, tmp_path, training_calls):
    params = dict(ipc=2, schedule=[20, 2], checkpoint_dir=tmp_path, random_state=5, **FAST)
    full = DEvS(**params).fit(digits).distilled_
    for path in [*tmp_path.glob("stage2-*"), *tmp_path.glob("extractor2-*")]:
        path.unlink()
    training_calls.clear()
    resumed = DEvS(resume=True, **params).fit(digits).distilled_
    assert training_calls == [200]  # only stage 2 trained, on stage 1's 200 images
    assert torch.equal(resumed.images, full.images)


def test_extractor_is_shared_across_target_sizes(digits, tmp_path, monkeypatch):
    DEvS(ipc=2, checkpoint_dir=tmp_path, random_state=6, **FAST).fit(digits)
    fresh = DEvS(ipc=3, random_state=6, **FAST).fit(digits).distilled_
    monkeypatch.setattr(extractor_module, "train_classifier", lambda *a, **k: pytest.fail("extractor retrained"))
    reused = DEvS(ipc=3, checkpoint_dir=tmp_path, resume=True, random_state=6, **FAST).fit(digits).distilled_
    assert len(reused) == 30 and torch.equal(reused.images, fresh.images)


def test_restore_contrast_rescales_each_mean_to_its_members_and_keys_its_own_stage(digits, tmp_path):
    params = dict(ipc=2, clustering="per-class", checkpoint_dir=tmp_path, random_state=7, **FAST)
    plain = DEvS(**params).fit(digits)
    restored = DEvS(restore_contrast=True, resume=True, **params).fit(digits)  # must not reuse the plain stage
    assert not restored.stages_[0].get("resumed") and len(list(tmp_path.glob("stage*.safetensors"))) == 2
    assert torch.equal(restored.assignments_[0], plain.assignments_[0])  # same extractor, same clusters
    spread = lambda x: x.flatten(2).std(2)  # noqa: E731
    for index in range(20):
        members = digits.train.images[plain.assignments_[0] == index]
        assert torch.allclose(spread(restored.distilled_.images[index:index + 1]), spread(members).mean(0), atol=1e-4)
    assert restored.distilled_.config["restore_contrast"] is True


@pytest.mark.parametrize(
    "params, message",
    [
        ({"ipc": 0}, "'ipc' parameter of DEvS must be an int in the range \\[1, inf\\). Got 0"),
        ({"ipc": 1000}, "more than the smallest class holds"),
        ({"ipc": "ten"}, "must be an int"),
        ({"ipc": 2, "schedule": [1, 5]}, "strictly decrease"),
        ({"ipc": 2, "clustering": "spectral"}, "clustering"),
        ({"ipc": 2, "epochs": [1, 2]}, "one value per stage"),
        ({"ipc": 2, "resume": True}, "checkpoint_dir"),
    ],
)
def test_bad_parameters(digits, params, message):
    with pytest.raises(InvalidParameterError, match=message):
        DEvS(progress=False, **params).fit(digits)


def test_unknown_backend_and_method_names():
    with pytest.raises(UnknownNameError, match="did you mean 'devs'"):
        get_method("devz")
    with pytest.raises(InvalidParameterError, match="no parameter"):
        get_method("random", schedule=[3])


def test_estimator_contract():
    method = DEvS(ipc=4, schedule=[10, 4])
    assert method.get_params()["ipc"] == 4 and method.get_params()["schedule"] == [10, 4]
    assert not hasattr(method, "distilled_")
    assert "DEvS(ipc=4" in repr(method)


def test_fit_accepts_arrays_and_torch_datasets(digits):
    images = (digits.train.images[:, 0] * 255).to(torch.uint8).numpy()  # [N, H, W] uint8
    labels = digits.train.labels.numpy()
    from_arrays = RandomSubset(ipc=2).fit((images, labels)).distilled_
    assert from_arrays.image_shape == (1, 8, 8) and len(from_arrays) == 20
    dataset = torch.utils.data.TensorDataset(digits.train.images[:200], digits.train.labels[:200])
    from_dataset = RandomSubset(ipc=1).fit(dataset).distilled_
    assert len(from_dataset) == 10


def test_random_subset_is_real_and_balanced(digits):
    result = RandomSubset(ipc=3, random_state=0).fit(digits)
    assert result.distilled_.class_counts() == [3] * 10
    assert torch.equal(result.distilled_.images, digits.train.images[result.indices_])
