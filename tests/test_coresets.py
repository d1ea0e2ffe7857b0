import pytest
import torch

import devs.methods.extractor as extractor_module
from devs import DEvS, evaluate_whole_set, get_method
from devs.cli import main
from devs.errors import InvalidParameterError
from devs.io import load_distilled
from devs.methods.coresets import ForgettingCounter, herding_order, kcenter_order

FAST = dict(epochs=1, progress=False)


@pytest.mark.parametrize("name", ["herding", "kcenter", "forgetting"])
def test_coresets_are_balanced_real_training_images(digits, name):
    method = get_method(name, ipc=3, **FAST).fit(digits)
    result = method.distilled_
    assert len(result) == 30 and result.class_counts() == [3] * 10
    assert torch.equal(result.labels, torch.eye(10)[result.hard_labels])  # one-hot rows
    assert len(set(method.indices_.tolist())) == 30  # distinct images
    assert torch.equal(result.images, digits.train.images[method.indices_])  # real, untouched
    assert torch.equal(digits.train.labels[method.indices_], result.hard_labels)


def test_herding_tracks_the_mean_better_than_a_random_pick():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(500, 8, generator=generator) * torch.linspace(0.1, 3, 8)
    chosen = herding_order(features, 10)
    assert len(set(chosen.tolist())) == 10
    assert int(chosen[0]) == int(torch.argmin((features - features.mean(0)).pow(2).sum(1)))
    gap = (features[chosen].mean(0) - features.mean(0)).norm()
    random_gaps = [(features[torch.randperm(500, generator=generator)[:10]].mean(0) - features.mean(0)).norm()
                   for _ in range(50)]
    assert gap < min(random_gaps)


def test_kcenter_picks_the_farthest_point_each_time():
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [0.0, 5.0], [0.2, 0.1]])
    chosen = kcenter_order(points, 3).tolist()
    assert chosen[0] == 4  # nearest to the mean (2.06, 1.02)
    assert chosen[1] == 2  # farthest from point 4
    assert chosen[2] == 3  # farthest from {4, 2}


def test_forgetting_counter_counts_correct_to_wrong_transitions():
    labels = torch.tensor([0, 1, 0])
    counter = ForgettingCounter(labels)
    right, wrong = torch.tensor([[5.0, 0.0]]), torch.tensor([[0.0, 5.0]])
    for logits in (right, wrong, right, wrong):  # example 0: learned, forgotten, learned, forgotten
        counter(torch.tensor([0]), logits)
    counter(torch.tensor([1, 2]), torch.cat([wrong, wrong]))  # example 1 correct, example 2 never learned
    scores = counter.scores()
    assert counter.forgotten.tolist() == [2, 0, 0]
    assert scores[0] == 2 and scores[1] == 0 and scores[2] == float("inf")


def test_forgetting_keeps_the_most_forgotten(digits):
    method = get_method("forgetting", ipc=2, **FAST).fit(digits)
    scores = method.forgetting_scores_
    for cls in range(10):
        members = torch.nonzero(digits.train.labels == cls).flatten()
        kept = method.indices_[digits.train.labels[method.indices_] == cls]
        rest = members[~torch.isin(members, kept)]
        assert scores[kept].min() >= scores[rest].max()


def test_feature_coresets_reuse_the_devs_extractor(digits, tmp_path, monkeypatch):
    DEvS(ipc=2, epochs=1, progress=False, checkpoint_dir=tmp_path, resume=True).fit(digits)
    monkeypatch.setattr(extractor_module, "train_classifier", lambda *a, **k: pytest.fail("extractor retrained"))
    for name in ("herding", "kcenter"):
        get_method(name, ipc=2, **FAST, checkpoint_dir=tmp_path, resume=True).fit(digits)


def test_forgetting_counts_are_cached_across_sizes(digits, tmp_path, monkeypatch):
    first = get_method("forgetting", ipc=1, **FAST, checkpoint_dir=tmp_path, resume=True).fit(digits)
    monkeypatch.setattr(extractor_module, "train_classifier", lambda *a, **k: pytest.fail("net retrained"))
    second = get_method("forgetting", ipc=3, **FAST, checkpoint_dir=tmp_path, resume=True).fit(digits)
    assert torch.equal(first.forgetting_counts_, second.forgetting_counts_)


def test_same_seed_same_coreset(digits):
    first = get_method("kcenter", ipc=2, **FAST).fit(digits).indices_
    assert torch.equal(first, get_method("kcenter", ipc=2, **FAST).fit(digits).indices_)


@pytest.mark.parametrize("params", [dict(ipc=0), dict(ipc=500), dict(ipc=2, epochs=0), dict(ipc=2, steps=-1),
                                    dict(ipc=2, resume=True)])
def test_bad_coreset_parameters_are_typed_errors(digits, params):
    with pytest.raises(InvalidParameterError):
        get_method("herding", **{"progress": False, **params}).fit(digits)


def test_cli_passes_method_parameters(tmp_path, capsys):
    out = tmp_path / "h.safetensors"
    code = main(["distill", "--method", "herding", "--ipc", "1", "--param", "epochs=1", "--out", str(out),
                 "--no-evaluate", "-q"])
    assert code == 0 and load_distilled(out).method == "herding"
    assert load_distilled(out).config["epochs"] == 1
    assert main(["distill", "--method", "herding", "--param", "nonsense=1", "--out", str(out), "-q"]) == 1
    assert "no parameter(s) nonsense" in capsys.readouterr().err


def test_whole_set_ceiling_trains_on_every_training_image(digits):
    result = evaluate_whole_set(digits, runs=1, epochs=10, progress=False)
    assert result.size == len(digits.train) and len(result.accuracies) == 1
    assert result.mean > 60  # all 1,347 digits for 10 epochs: far above chance (10 %) and above 20 per class
