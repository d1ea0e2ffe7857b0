"""Augmentation that fits the data: no horizontal flips where a flip changes the class (digits)."""

import dataclasses
import importlib
import json

import numpy as np
import pytest

import devs
import devs.methods.extractor as extractor_module
import devs.methods.distribution_matching as matching_module
from devs.cli import main
from devs.data import holdout_split


@pytest.fixture
def recipes(monkeypatch):
    """The TrainRecipe of every extractor training from now on (the training itself still runs)."""
    seen = []
    original = extractor_module.train_classifier
    monkeypatch.setattr(extractor_module, "train_classifier",
                        lambda net, images, targets, recipe, *a, **k: seen.append(recipe) or original(
                            net, images, targets, recipe, *a, **k))
    return seen


def test_registered_and_path_datasets_say_whether_flips_keep_the_class(digits, tmp_path):
    assert digits.flip is False and holdout_split(digits, 100).flip is False
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 255, (20, 8, 8), dtype=np.uint8), "y_train": np.repeat(np.arange(2), 10),
              "x_test": rng.integers(0, 255, (4, 8, 8), dtype=np.uint8), "y_test": np.array([0, 1, 0, 1])}
    np.savez(tmp_path / "two.npz", **arrays)
    assert devs.load_dataset(str(tmp_path / "two.npz")).flip is True  # a path: flips unless told otherwise


@pytest.mark.parametrize("flip, expected", [(None, False), (True, True)])
def test_devs_extractor_flips_only_where_the_data_allows(digits, recipes, flip, expected):
    method = devs.DEvS(ipc=1, epochs=1, flip=flip, clustering="per-class").fit(digits)
    assert [recipe.flip for recipe in recipes] == [expected]
    assert method.distilled_.config["data_flip"] is False and method.distilled_.config["flip"] is flip


def test_coresets_follow_the_data(digits, recipes):
    devs.get_method("herding", ipc=1, epochs=1).fit(digits)
    devs.get_method("herding", ipc=1, epochs=1).fit(dataclasses.replace(digits, flip=True))
    assert [recipe.flip for recipe in recipes] == [False, True]


def test_dm_drops_flip_from_its_augmentation_on_digits(digits, monkeypatch):
    drawn = []
    original = matching_module.sample_siamese
    monkeypatch.setattr(matching_module, "sample_siamese",
                        lambda groups, *a, **k: drawn.append(groups) or original(groups, *a, **k))
    devs.get_method("dm", ipc=1, iterations=1).fit(digits)
    assert drawn and all("flip" not in groups and "crop" in groups for groups in drawn)
    drawn.clear()
    devs.get_method("dm", ipc=1, iterations=1).fit(dataclasses.replace(digits, flip=True))
    assert drawn and all("flip" in groups for groups in drawn)


def test_cli_flip_option_is_applied_and_recorded(tmp_path, capsys, recipes):
    out = tmp_path / "f.safetensors"
    code = main(["distill", "--ipc", "1", "--epochs", "1", "--flip", "--no-evaluate", "-q", "--json", "--out", str(out)])
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["flip"] is True and record["config"]["data_flip"] is True
    assert [recipe.flip for recipe in recipes] == [True]


@pytest.mark.parametrize("protocol", ["devs", "dsa"])
def test_protocols_do_not_flip_digits(digits, monkeypatch, protocol):
    evaluate_module = importlib.import_module("devs.evaluate")  # the package's `evaluate` attribute is the function
    seen = []
    original = evaluate_module.train_classifier
    monkeypatch.setattr(evaluate_module, "train_classifier",
                        lambda net, images, targets, recipe, *a, **k: seen.append(recipe) or original(
                            net, images, targets, recipe, *a, **k))
    small = dataclasses.replace(digits, test=dataclasses.replace(digits.test, images=digits.test.images[:20],
                                                                  labels=digits.test.labels[:20]))
    for data in (small, dataclasses.replace(small, flip=True)):
        devs.evaluate_random_baseline(data, 10, protocol=protocol, runs=1, epochs=1, progress=False)
    off, on = seen
    assert not off.flip and "flip" not in (off.dsa or "")
    assert (on.flip, "flip" in (on.dsa or "")) == ((True, False) if protocol == "devs" else (False, True))
    if protocol == "dsa":
        assert off.dsa == "color_crop_cutout_scale_rotate"


def test_a_saved_stage_or_dm_progress_is_not_reused_across_flip_settings(digits, tmp_path, caplog):
    caplog.set_level("INFO", logger="devs")
    flipped = dataclasses.replace(digits, flip=True)
    for method in ("devs", "dm"):
        params = dict(ipc=1, checkpoint_dir=tmp_path / method, resume=True, **(
            {"epochs": 1, "clustering": "per-class"} if method == "devs" else {"iterations": 1}))
        devs.get_method(method, **params).fit(flipped)
        caplog.clear()
        devs.get_method(method, **params).fit(digits)
        assert "resumed" not in caplog.text, method
