"""ZCA whitening inside the methods (issue #24 item 3): what the nets see, what the file records, round trips."""

import importlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import devs.cli as cli
import devs.methods.devs as devs_module
import devs.methods.extractor as extractor_module
import devs
from devs import DEvS, load_distilled
from devs.data import holdout_split
from devs.errors import DistilledFileError, InvalidParameterError
from devs.exchange import export_distilled, import_distilled
from devs.io import DistilledSet
from devs.methods import DEvSPlus, DistributionMatching, Herding, get_method
from devs.methods.base import Whitening
from devs.methods.extractor import ExtractorSpec, content_hash
from devs.train import Normalizer
from devs.zca import ZCA, ZCAMismatchError

DEVS_FAST = dict(ipc=2, epochs=1, width=16, device="cpu", progress=False)
DM_FAST = dict(ipc=2, iterations=2, width=16, batch_real=64, device="cpu", progress=False)
METADATA_WITHOUT_ZCA = {"format", "classes", "mean", "std", "dataset", "method", "config", "seed",
                        "source_train_size", "devs_version", "created", "formation"}


@pytest.fixture(scope="module")
def description(digits):
    return ZCA.from_dataset(digits, regularization=0.1).describe()


@pytest.fixture(scope="module")
def devs_run(digits):
    """A DEvS run with zca=0.1, with the transforms its extractor trained and embedded on."""
    seen = {"train": [], "features": []}
    train, features = extractor_module.train_classifier, devs_module.extract_features
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extractor_module, "train_classifier",
                      lambda *args, **kwargs: seen["train"].append(args[4]) or train(*args, **kwargs))
        patch.setattr(devs_module, "extract_features",
                      lambda *args, **kwargs: seen["features"].append(args[2]) or features(*args, **kwargs))
        method = DEvS(zca=0.1, **DEVS_FAST).fit(digits)
    return method, seen


def test_devs_extractor_sees_whitened_images_and_the_file_records_the_transform(digits, devs_run, description):
    method, seen = devs_run
    assert len(seen["train"]) == 1 and len(seen["features"]) == 1
    transform = seen["train"][0]
    assert isinstance(transform, Whitening) and seen["features"][0] is transform
    images = digits.train.images
    white = transform(images)
    torch.testing.assert_close(white, ZCA.from_dataset(digits).whiten(images))
    # The training inputs have the whitened covariance U S/(S + r) U^T: eigenvalues S/(S + 0.1) of the pixels' S.
    pixels = torch.linalg.eigvalsh(torch.cov(images.reshape(len(images), -1).T.double())).clamp_min(0)
    eigenvalues = torch.linalg.eigvalsh(torch.cov(white.reshape(len(images), -1).T.double()))
    torch.testing.assert_close(eigenvalues, pixels / (pixels + 0.1), atol=2e-5, rtol=0)
    assert float(white.reshape(len(images), -1).mean(0).abs().max()) < 1e-4  # centred per pixel
    distilled = method.distilled_
    assert distilled.zca == description and method.zca_.describe() == description
    assert distilled.config["zca"] == 0.1
    # Means of pixel-unit images: pixel units, inside [0, 1] (digits' pixels are).
    assert 0.0 <= float(distilled.images.min()) and float(distilled.images.max()) <= 1.0
    assert float(distilled.images.max()) > 0.5


def test_devs_without_zca_keeps_the_normalizer_and_files_as_before(digits, tmp_path):
    seen = []
    train = extractor_module.train_classifier
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extractor_module, "train_classifier",
                      lambda *args, **kwargs: seen.append(args[4]) or train(*args, **kwargs))
        method = DEvS(**DEVS_FAST).fit(digits)
    assert isinstance(seen[0], Normalizer) and method.zca_ is None
    distilled = method.distilled_
    assert distilled.zca is None and "zca" not in distilled.config
    path = distilled.save(tmp_path / "plain.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        assert set(handle.metadata()) == METADATA_WITHOUT_ZCA
    assert load_distilled(path).zca is None
    # Checkpoint keys without zca are those from before the parameter existed.
    spec = ExtractorSpec()
    before = {name: value for name, value in spec.__dict__.items() if name != "precision"}  # a later field
    assert spec.key("input", 3, 0) == content_hash({"input": "input", "params": before, "epochs": 3, "seed": 0})
    assert spec.key("input", 3, 0, zca=0.1) != spec.key("input", 3, 0)
    assert "zca" not in DEvS()._settings() and DEvS(zca=0.1)._settings()["zca"] == 0.1


def test_save_load_round_trip_of_the_zca_metadata_is_exact(devs_run, tmp_path):
    distilled = devs_run[0].distilled_
    path = distilled.save(tmp_path / "zca.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert set(metadata) == METADATA_WITHOUT_ZCA | {"zca"}
    assert json.loads(metadata["zca"]) == distilled.zca
    loaded = load_distilled(path)
    assert loaded.zca == distilled.zca and json.dumps(loaded.zca, sort_keys=True) == metadata["zca"]
    torch.testing.assert_close(loaded.images, distilled.images, atol=0, rtol=0)
    again = loaded.save(tmp_path / "again.safetensors")
    assert again.read_bytes() == path.read_bytes()


def _rewrite(path, target, **metadata):
    with safe_open(str(path), framework="pt") as handle:
        old = handle.metadata()
    save_file(load_file(str(path)), str(target), metadata={**old, **metadata})
    return target


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('"devs.zca.v1"', "JSON object"),
    (None, "devs.zca.v0"),  # a description with another rule
    ("altered", "altered"),  # an edited regularization no longer matches the description's fingerprint
])
def test_a_malformed_zca_metadata_is_refused_on_load(devs_run, tmp_path, text, message):
    distilled = devs_run[0].distilled_
    path = distilled.save(tmp_path / "good.safetensors")
    if text is None:
        text = json.dumps({**distilled.zca, "rule": "devs.zca.v0"})
    elif text == "altered":
        text = json.dumps({**distilled.zca, "regularization": 0.2})
    bad = _rewrite(path, tmp_path / "bad.safetensors", zca=text)
    with pytest.raises(DistilledFileError, match=message):
        load_distilled(bad)


def test_a_distilled_set_refuses_a_bad_description_when_built(devs_run):
    distilled = devs_run[0].distilled_
    fields = dict(images=distilled.images, labels=distilled.labels, classes=distilled.classes,
                  mean=distilled.mean, std=distilled.std)
    with pytest.raises(DistilledFileError, match="devs.zca.v2"):
        DistilledSet(**fields, zca={**distilled.zca, "rule": "devs.zca.v2"})
    with pytest.raises(DistilledFileError, match="JSON object"):
        DistilledSet(**fields, zca="devs.zca.v1")


def test_export_and_import_keep_the_zca_description(devs_run, tmp_path):
    distilled = devs_run[0].distilled_
    folder = export_distilled(distilled, tmp_path / "export")
    document = json.loads((folder / "labels.json").read_text())
    assert document["zca"] == distilled.zca
    back = import_distilled(folder)
    assert back.zca == distilled.zca
    back.save(tmp_path / "back.safetensors")
    assert load_distilled(tmp_path / "back.safetensors").zca == distilled.zca
    # A set without ZCA exports no zca field, and a broken one is refused on import.
    plain = DistilledSet(images=distilled.images, labels=distilled.labels, classes=distilled.classes,
                         mean=distilled.mean, std=distilled.std)
    assert "zca" not in json.loads((export_distilled(plain, tmp_path / "plain") / "labels.json").read_text())
    document["zca"] = {**distilled.zca, "rule": "devs.zca.v9"}
    (folder / "labels.json").write_text(json.dumps(document))
    with pytest.raises(DistilledFileError, match="devs.zca.v9"):
        import_distilled(folder)


def test_dm_matches_in_whitened_units_and_stores_pixels(digits, description, monkeypatch):
    seen = []
    iteration = DistributionMatching._iteration
    monkeypatch.setattr(DistributionMatching, "_iteration",
                        lambda self, state, net, optimizer: seen.append(state) or iteration(self, state, net, optimizer))
    # A vanishing learning rate keeps the synthetic images at their start: real images, whitened.
    method = DistributionMatching(zca=0.1, lr_img=1e-9, **DM_FAST).fit(digits)
    state = seen[0]
    assert isinstance(state.sampler.normalizer, Whitening)
    zca = ZCA.from_dataset(digits)
    torch.testing.assert_close(state.sampler.images, zca.whiten(digits.train.images))
    distilled = method.distilled_
    assert distilled.zca == description and distilled.config["zca"] == 0.1
    # Stored unwhitened: each image is (up to float32 rounding of the round trip) a real training image.
    flat = digits.train.images.reshape(len(digits.train.images), -1)
    stored = distilled.images.reshape(len(distilled), -1)
    nearest = flat[torch.cdist(stored, flat).argmin(1)]
    assert float((stored - nearest).abs().max()) < 1e-3
    assert 0.0 <= float(distilled.images.min()) + 1e-4 and float(distilled.images.max()) <= 1.0 + 1e-4


def test_devs_plus_passes_its_zca_to_the_dm_step(digits, description, monkeypatch):
    fits = []
    original = ZCA.fit.__func__
    monkeypatch.setattr(ZCA, "fit", classmethod(lambda cls, *args, **kwargs: fits.append(1) or original(cls, *args, **kwargs)))
    method = DEvSPlus(zca=0.1, finetune_iterations=1, **DEVS_FAST).fit(digits)
    assert len(fits) == 1  # fitted once, by DEvS; the DM step whitens with the same object
    assert method.distilled_.zca == description and method.distilled_.config["finetune_iterations_done"] == 1
    assert "zca" in DEvSPlus.param_names()
    with pytest.raises(InvalidParameterError, match="formation"):
        DEvSPlus(zca=0.1, formation=2, **DEVS_FAST).fit(digits)


def test_herding_trains_its_extractor_on_whitened_images(digits, description, training_calls, monkeypatch):
    seen = []
    train = extractor_module.train_classifier  # the training_calls wrapper
    monkeypatch.setattr(extractor_module, "train_classifier",
                        lambda *args, **kwargs: seen.append(args[4]) or train(*args, **kwargs))
    distilled = Herding(ipc=2, epochs=1, zca=0.1, device="cpu", progress=False).fit(digits).distilled_
    assert isinstance(seen[0], Whitening) and distilled.zca == description
    assert training_calls == [len(digits.train.images)]


@pytest.mark.parametrize("method, params", [
    ("devs", dict(zca=0)), ("dm", dict(zca=-1.0)), ("dc", dict(zca="0.1")), ("herding", dict(zca=float("nan"))),
    ("dm", dict(zca=0.1, formation=2)),
])
def test_bad_zca_settings_are_refused(digits, method, params):
    with pytest.raises(InvalidParameterError, match="zca"):
        get_method(method, progress=False, device="cpu", **params).fit(digits)


def test_cli_zca_option():
    parser = cli.build_parser()
    assert cli._method_params(parser.parse_args(["distill", "--zca"]))["zca"] == 0.1
    assert cli._method_params(parser.parse_args(["distill", "--method", "dm", "--zca", "0.25"]))["zca"] == 0.25
    assert "zca" not in cli._method_params(parser.parse_args(["distill"]))
    params = cli._method_params(parser.parse_args(["distill", "--method", "random", "--zca"]))
    with pytest.raises(InvalidParameterError, match="supported by: .*devs.*dm"):
        get_method("random", **params)


# ----------------------------------------------------------------------------- the evaluation side

def _transforms_seen(monkeypatch):
    evaluate_module = importlib.import_module("devs.evaluate")  # `devs.evaluate` the attribute is the function
    seen = []
    original = evaluate_module.train_classifier
    monkeypatch.setattr(evaluate_module, "train_classifier", lambda net, images, targets, recipe, normalizer, *a, **k:
                        seen.append(normalizer) or original(net, images, targets, recipe, normalizer, *a, **k))
    return seen


def test_a_zca_set_and_its_random_baseline_are_judged_on_whitened_images(digits, devs_run, description, monkeypatch,
                                                                         capsys, tmp_path):
    seen = _transforms_seen(monkeypatch)
    path = tmp_path / "z.safetensors"
    devs_run[0].distilled_.save(path)
    code = cli.main(["evaluate", str(path), "--dataset", "digits", "--runs", "1", "--eval-epochs", "1", "-q"])
    assert code == 0, capsys.readouterr().err
    assert len(seen) == 2 and all(isinstance(t, Whitening) for t in seen)  # the set, then the random subset
    assert all(t.zca.fingerprint() == description["sha256"] for t in seen)


def test_zca_protocol_refuses_a_set_distilled_without_zca(digits, monkeypatch):
    plain = DEvS(ipc=1, epochs=1, clustering="per-class").fit(digits).distilled_
    with pytest.raises(InvalidParameterError, match="distilled without ZCA"):
        devs.evaluate(plain, digits, protocol="zca-dsa", runs=1, epochs=1, progress=False)
    seen = _transforms_seen(monkeypatch)
    devs.evaluate_random_baseline(digits, 10, protocol="zca-dsa", runs=1, epochs=1, progress=False)
    assert isinstance(seen[0], Whitening) and seen[0].zca.regularization == 0.1


def test_a_zca_set_is_refused_on_other_training_images_or_another_regularization(digits, devs_run):
    with pytest.raises(ZCAMismatchError):
        devs.evaluate(devs_run[0].distilled_, holdout_split(digits, 100), runs=1, epochs=1, progress=False)
    other = DEvS(zca=0.5, **DEVS_FAST).fit(digits).distilled_
    with pytest.raises(ZCAMismatchError, match="regularization"):
        devs.evaluate(other, digits, protocol="zca-dsa", runs=1, epochs=1, progress=False)


def test_inspect_shows_the_zca_and_leaves_it_out_without(digits, devs_run):
    from devs.inspection import describe, format_description

    shown = describe(devs_run[0].distilled_)["metadata"]["zca"]
    assert shown["rule"] == "devs.zca.v1" and shown["regularization"] == 0.1 and len(shown["sha256"]) == 64
    assert "zca" in format_description({"file": "x", **describe(devs_run[0].distilled_)})
    plain = DEvS(ipc=1, epochs=1, clustering="per-class").fit(digits).distilled_
    assert "zca" not in describe(plain)["metadata"]
