"""Multi-formation: packing, decoding, the file field, and the methods that use it."""

import importlib
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from devs import DEvSPlus, DistributionMatching, DistilledSet, evaluate
from devs.cli import main
from devs.errors import DistilledFileError, InvalidParameterError
from devs.exchange import export_distilled, import_distilled
from devs.formation import check_factor, decode, decode_labels, downsample, encode, pack_labels, split
from devs.inspection import describe
from devs.io import load_distilled


def test_encode_and_split_are_inverse_and_place_tiles_row_major():
    tiles = torch.arange(2 * 4 * 3 * 2 * 2, dtype=torch.float32).reshape(8, 3, 2, 2)
    stored = encode(tiles, 2)
    assert stored.shape == (2, 3, 4, 4)
    assert torch.equal(split(stored, 2), tiles)
    # tile 1 of image 0 is its top-right quarter, tile 2 its bottom-left
    assert torch.equal(stored[0, :, :2, 2:], tiles[1]) and torch.equal(stored[0, :, 2:, :2], tiles[2])
    assert encode(tiles, 1) is tiles and split(stored, 1) is stored and decode(stored, 1) is stored


def test_decode_upsamples_each_tile_to_full_size():
    real = torch.rand(8, 3, 8, 8)
    stored = encode(downsample(real, 2), 2)
    decoded = decode(stored, 2)
    assert decoded.shape == (8, 3, 8, 8)
    expected = F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(decoded, expected, atol=1e-6)
    # a constant tile decodes to a constant image
    flat = encode(torch.full((4, 1, 2, 2), 0.25), 2)
    assert torch.allclose(decode(flat, 2), torch.full((4, 1, 4, 4), 0.25))


def test_labels_repeat_per_tile_and_pack_to_their_mean():
    labels = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert torch.equal(decode_labels(labels, 2), labels.repeat_interleave(4, 0))
    packed = pack_labels(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]), 2)
    assert torch.allclose(packed, torch.tensor([[0.75, 0.25]]))


@pytest.mark.parametrize("factor", [0, -1, 1.5, True, 3])
def test_bad_factors_are_refused_with_what_fits(factor):
    with pytest.raises(InvalidParameterError, match="formation"):
        check_factor(factor, (8, 8))
    assert check_factor(4, (8, 8)) == 4


def _stored_set(formation=2):
    images = torch.rand(4, 1, 8, 8)
    labels = torch.eye(2).repeat_interleave(2, 0)
    return DistilledSet(images, labels, ("a", "b"), [0.5], [0.25], method="test", formation=formation)


def test_the_file_records_the_factor_and_training_decodes(tmp_path):
    path = _stored_set().save(tmp_path / "mf.safetensors")
    loaded = load_distilled(path)
    assert loaded.formation == 2 and len(loaded) == 4
    images, labels = loaded.training_set()
    assert images.shape == (16, 1, 8, 8) and torch.equal(labels, loaded.labels.repeat_interleave(4, 0))
    plain_images, plain_labels = _stored_set(formation=1).training_set()
    assert plain_images.shape == (4, 1, 8, 8) and plain_labels.shape == (4, 2)


def test_files_without_the_field_load_as_factor_1_and_bad_values_are_refused(tmp_path):
    path = _stored_set().save(tmp_path / "mf.safetensors")
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    old = dict(metadata)
    del old["formation"]
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=old)
    assert load_distilled(tmp_path / "old.safetensors").formation == 1
    for bad in ("3", "two", "0"):
        save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={**metadata, "formation": bad})
        with pytest.raises(DistilledFileError):
            load_distilled(tmp_path / "bad.safetensors")


def test_evaluation_trains_on_the_decoded_images(digits, monkeypatch):
    module = importlib.import_module("devs.evaluate")
    real, seen = module._Judge.train_and_test, []

    def spy(judge, images, targets, *rest):  # the real training, with a look at what it was given
        seen.append((images.clone(), targets.clone()))
        return real(judge, images, targets, *rest)

    monkeypatch.setattr(module._Judge, "train_and_test", spy)
    order = torch.cat([torch.nonzero(digits.train.labels == c)[:16, 0] for c in range(10)])  # 4 tiles of one class each
    images = encode(downsample(digits.train.images[order], 2), 2)
    labels = pack_labels(F.one_hot(digits.train.labels[order], 10).float(), 2)
    stored = DistilledSet(images, labels, digits.classes, *digits.channel_stats(), formation=2)
    result = evaluate(stored, digits, runs=1, epochs=150, progress=False)
    assert len(seen) == 1 and result.size == 40
    trained_images, trained_targets = seen[0]
    assert torch.equal(trained_images, decode(images, 2)) and trained_images.shape == (160, 1, 8, 8)
    assert torch.equal(trained_targets, labels.repeat_interleave(4, dim=0))
    assert result.mean > 30  # 160 real (halved and restored) digits: far above chance (10 %)


def test_dm_with_formation_starts_from_reduced_real_images_and_records_the_factor(digits):
    dm = DistributionMatching(ipc=1, iterations=2, formation=2, width=8, progress=False).fit(digits)
    result = dm.distilled_
    assert result.formation == 2 and result.images.shape == (10, 1, 8, 8) and result.class_counts() == [1] * 10
    start = DistributionMatching(ipc=1, iterations=1, lr_img=1e-9, formation=2, width=8, progress=False).fit(digits)
    # the matching loss reaches the stored pixels through the decoder
    assert not torch.allclose(result.images, start.distilled_.images, atol=1e-4)
    # each stored start image is four distinct half-size real images of its class
    tiles = split(start.distilled_.images, 2)
    reduced = downsample(digits.train.images, 2)
    for index, tile in enumerate(tiles):
        cls = index // 4
        members = reduced[digits.train.labels == cls]
        assert float((members - tile).abs().amax(dim=(1, 2, 3)).min()) < 1e-4
    with pytest.raises(InvalidParameterError, match="formation"):
        DistributionMatching(ipc=1, iterations=1, formation=3, progress=False).fit(digits)


FAST = dict(ipc=2, epochs=2, width=16, progress=False, label_mix=0.5, anchor=0.5, finetune_iterations=0)


def test_devs_plus_formation_packs_the_last_stage_tiles(digits, tmp_path, caplog):
    tiles = DEvSPlus(**{**FAST, "ipc": 8}, checkpoint_dir=tmp_path).fit(digits).distilled_
    caplog.set_level("INFO", logger="devs")
    packed = DEvSPlus(**FAST, formation=2, checkpoint_dir=tmp_path, resume=True).fit(digits).distilled_
    assert "Stage 1: resumed" in caplog.text  # the stage at 8 tiles per class is shared
    assert packed.formation == 2 and len(packed) == 20 and packed.class_counts() == [2] * 10
    assert torch.allclose(packed.images, encode(downsample(tiles.images, 2), 2))
    assert torch.allclose(packed.labels, pack_labels(tiles.labels, 2))
    tuned = DEvSPlus(**{**FAST, "finetune_iterations": 2}, formation=2).fit(digits).distilled_
    assert tuned.formation == 2 and torch.equal(tuned.labels, packed.labels)
    assert not torch.allclose(tuned.images, packed.images)
    with pytest.raises(InvalidParameterError, match="per-class"):
        DEvSPlus(**FAST, formation=2, clustering="global").fit(digits)
    with pytest.raises(InvalidParameterError, match="divide"):
        DEvSPlus(**FAST, formation=3).fit(digits)


def test_export_import_and_inspect_keep_the_factor(tmp_path):
    stored = _stored_set()
    back = import_distilled(export_distilled(stored, tmp_path / "export"))
    assert back.formation == 2 and torch.allclose(back.images, stored.images, atol=1 / 255)
    assert describe(back)["metadata"]["formation"] == 2


def test_cli_distills_and_evaluates_a_multi_formation_set(tmp_path, capsys):
    out = tmp_path / "mf.safetensors"
    assert main(["distill", "--method", "devs+", "--ipc", "1", "--epochs", "1", "--param", "width=8",
                 "--param", "formation=2", "--param", "finetune_iterations=0", "--out", str(out),
                 "--no-evaluate", "-q"]) == 0
    assert load_distilled(out).formation == 2
    capsys.readouterr()
    assert main(["evaluate", str(out), "--dataset", "digits", "--runs", "1", "--eval-epochs", "2", "--no-baseline",
                 "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["size"] == 10
