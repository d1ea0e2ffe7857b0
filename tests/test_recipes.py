"""Recipes: resolution per size, image size and device; overrides; fallbacks; what the file records."""

import json

import numpy as np
import pytest

from devs import load_distilled
from devs.cli import main
from devs.errors import InvalidParameterError, UnknownNameError
from devs.methods import get_method
from devs.recipes import RECIPES, parse_duration, resolve_recipe

CIFAR, DIGITS, FASHION = (3, 32, 32), (1, 8, 8), (1, 28, 28)


def params(method, recipe, ipc=10, shape=CIFAR, device="cpu"):
    return resolve_recipe(method, recipe, ipc=ipc, image_shape=shape, device=device).params


def test_devs_clusters_small_images_per_class_and_large_ones_globally():
    assert params("devs", "balanced", shape=DIGITS) == {"clustering": "per-class"}
    for shape in (CIFAR, FASHION):
        assert params("devs", "balanced", shape=shape) == {}  # the default: global clustering
    assert all(params("devs", recipe) == {} for recipe in ("fast", "balanced", "best"))  # one cost level


@pytest.mark.parametrize("ipc, device, expected", [
    (1, "cpu", {"finetune_iterations": 1000, "formation": 4}),
    (10, "cuda", {"finetune_iterations": 2000, "formation": 2}),
    (50, "cpu", {"finetune_iterations": 1000}),  # packing at 50 per class only with a GPU's long DM step
    (50, "cuda:1", {"finetune_iterations": 5000, "formation": 2}),
])
def test_devs_plus_best_depends_on_size_and_device(ipc, device, expected):
    assert params("devs+", "best", ipc=ipc, device=device) == expected


def test_devs_plus_fast_and_balanced():
    assert params("devs+", "fast") == {"finetune_iterations": 0, "formation": 2}
    assert params("devs+", "balanced", ipc=1) == {"finetune_iterations": 300, "formation": 4}
    assert params("devs+", "balanced", ipc=2) == {"finetune_iterations": 300, "formation": 2}
    assert params("devs+", "fast", ipc=1) == {"finetune_iterations": 0, "formation": 2}  # 4 only with a DM step
    assert params("devs+", "balanced", ipc=50) == {"finetune_iterations": 300}


def test_matching_iterations_by_recipe_and_device():
    assert [params("dm", r, device="cpu")["iterations"] for r in ("fast", "balanced", "best")] == [100, 300, 1000]
    assert [params("dm", r, device="cuda")["iterations"] for r in ("fast", "balanced", "best")] == [300, 2000, 20000]
    assert params("dm", "balanced", ipc=50) == {"iterations": 300}
    assert [params("dc", r)["iterations"] for r in ("fast", "balanced", "best")] == [100, 300, 1000]


def test_coresets_and_none_resolve_to_the_defaults():
    for method in ("random", "herding", "kcenter", "forgetting"):
        assert all(params(method, recipe) == {} for recipe in RECIPES)
    assert all(params(method, "none", shape=DIGITS) == {} for method in ("devs", "devs+", "dm", "dc"))


@pytest.mark.parametrize("shape", [DIGITS, (3, 28, 27), (3, 14, 14)])
def test_formation_falls_back_with_a_note(shape):
    resolved = resolve_recipe("devs+", "balanced", ipc=10, image_shape=shape, device="cpu")
    assert "formation" not in resolved.params
    assert len(resolved.notes) == 1 and "keeping formation=1" in resolved.notes[0]
    assert f"{shape[1]}x{shape[2]}" in resolved.notes[0]


@pytest.mark.parametrize("shape, factor", [(CIFAR, 4), ((3, 64, 64), 4), (FASHION, 2), ((3, 24, 24), 2),
                                           ((3, 34, 34), 2)])
def test_sixteen_tiles_at_1_per_class_where_8_px_tiles_fit(shape, factor):
    resolved = resolve_recipe("devs+", "balanced", ipc=1, image_shape=shape, device="cpu")
    assert resolved.params["formation"] == factor
    assert bool(resolved.notes) == (factor == 2)  # the fallback to 2 says why
    assert all("formation=4 needs" in note and f"{shape[1]}x{shape[2]}" in note for note in resolved.notes)


@pytest.mark.parametrize("method", ["devs+", "dm"])
def test_zca_keeps_formation_1_with_a_note(method):
    plain = resolve_recipe(method, "balanced", ipc=10, image_shape=CIFAR, device="cpu")
    assert plain.params["formation"] == 2  # the rule applies without zca ...
    whitened = resolve_recipe(method, "balanced", ipc=10, image_shape=CIFAR, device="cpu", zca=True)
    assert "formation" not in whitened.params and "zca" in whitened.notes[0]  # ... and not with it
    get_method(method, ipc=10, zca=0.1, **whitened.params)  # the method accepts what the recipe gave


def test_dry_run_with_zca_resolves_to_parameters_the_method_accepts(capsys, tmp_path):
    # 16 px images, so the formation rule would apply: --zca must turn it off, not make the method refuse it.
    images = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(images, x_train=rng.integers(0, 255, (40, 16, 16, 3), dtype=np.uint8), y_train=np.arange(40) % 2,
             x_test=rng.integers(0, 255, (10, 16, 16, 3), dtype=np.uint8), y_test=np.arange(10) % 2)
    code, out, err = run(capsys, "distill", "--dataset", str(images), "--method", "dm", "--zca", "--ipc", "2",
                         "--dry-run", "--json", "-q")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["params"]["formation"]["value"] == 1 and any("zca" in note for note in shown["notes"])


def test_every_resolved_parameter_is_a_parameter_of_its_method():
    for method in ("devs", "devs+", "dm", "dc", "random", "herding"):
        for recipe in RECIPES:
            for device in ("cpu", "cuda"):
                for ipc, shape in ((1, CIFAR), (50, CIFAR), (10, DIGITS)):
                    get_method(method, ipc=ipc, **params(method, recipe, ipc, shape, device))  # raises if unknown


def test_bad_recipe_and_shape():
    with pytest.raises(UnknownNameError, match="Valid: fast, balanced, best, none"):
        resolve_recipe("devs", "quick", ipc=1, image_shape=CIFAR, device="cpu")
    with pytest.raises(InvalidParameterError, match="channels, height, width"):
        resolve_recipe("devs", "fast", ipc=1, image_shape=(32, 32), device="cpu")


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("10m", 600), ("1.5h", 5400), (" 2 MIN ", 120)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "0", "-5m", "5d"])
def test_parse_duration_refuses(text):
    with pytest.raises(InvalidParameterError):
        parse_duration(text)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_shows_sources_and_explicit_values_win(capsys, tmp_path):
    code, out, err = run(capsys, "distill", "--method", "devs+", "--recipe", "fast", "--param", "finetune_iterations=5",
                         "--dry-run", "--json", "-q", "--out", str(tmp_path / "x.safetensors"))
    assert code == 0, err
    shown = json.loads(out)
    assert shown["params"]["finetune_iterations"] == {"value": 5, "source": "given", "why": ""}
    assert shown["params"]["label_mix"]["source"] == "default"
    assert shown["notes"] and "8x8" in shown["notes"][0]  # digits are too small to pack
    assert not (tmp_path / "x.safetensors").exists()  # nothing distilled
    code, out, _ = run(capsys, "distill", "--method", "dm", "--recipe", "best", "--device", "cpu", "--dry-run", "-q")
    assert code == 0 and "iterations" in out and "1000" in out and "recipe" in out


def test_unknown_recipe_is_a_usage_error(capsys):
    code, _, err = run(capsys, "distill", "--recipe", "quick", "--dry-run")
    assert code == 2 and "invalid choice: 'quick'" in err


def test_the_file_records_the_recipe_and_its_parameters(capsys, tmp_path):
    fast = ["--ipc", "1", "--epochs", "1", "--no-evaluate", "-q"]
    for recipe, clustering in (("balanced", "per-class"), ("none", "global")):
        out = tmp_path / f"{recipe}.safetensors"
        code, _, err = run(capsys, "distill", "--recipe", recipe, "--out", str(out), *fast)
        assert code == 0, err
        config = load_distilled(out).config
        assert config["recipe"]["name"] == recipe and config["clustering"] == clustering
        assert json.loads(out.with_suffix(".json").read_text())["recipe"] == recipe
    out = tmp_path / "override.safetensors"
    assert run(capsys, "distill", "--clustering", "global", "--out", str(out), *fast)[0] == 0
    config = load_distilled(out).config
    assert config["clustering"] == "global" and config["recipe"]["overridden"] == ["clustering"]


def test_time_budget_stops_matching_and_warns_for_methods_without_iterations(capsys, tmp_path, caplog):
    out = tmp_path / "dm.safetensors"
    code, _, err = run(capsys, "distill", "--method", "dm", "--ipc", "1", "--param", "iterations=100000",
                       "--time-budget", "1s", "--out", str(out), "--no-evaluate", "-q")
    assert code == 0, err
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["config"]["time_budget_s"] == 1.0 and 0 < record["fit"]["iterations_done_"] < 100000
    with caplog.at_level("WARNING"):
        code, _, err = run(capsys, "distill", "--method", "random", "--ipc", "1", "--time-budget", "10m",
                           "--out", str(tmp_path / "r.safetensors"), "--no-evaluate", "-q")
    assert code == 0 and "cannot shorten it" in caplog.text
    code, _, err = run(capsys, "distill", "--method", "dm", "--time-budget", "1m", "--param", "time_budget_s=5",
                       "--dry-run", "-q")
    assert code == 2 and "not both" in err
