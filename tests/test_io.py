import json

import pytest
import torch
from safetensors.torch import save_file

from devs.errors import DistilledFileError, OutputError
from devs.io import FORMAT, DistilledSet, load_distilled


def make_set(n=6, k=3, **overrides):
    generator = torch.Generator().manual_seed(0)
    fields = dict(
        images=torch.rand(n, 1, 4, 4, generator=generator),
        labels=torch.softmax(torch.randn(n, k, generator=generator), 1),
        classes=[f"c{i}" for i in range(k)],
        mean=[0.5],
        std=[0.25],
        dataset="toy",
        method="devs",
        config={"ipc": 2, "schedule": [2]},
        seed=7,
        source_train_size=100,
    )
    fields.update(overrides)
    return DistilledSet(**fields)


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    original = make_set()
    path = original.save(tmp_path / "set.safetensors")
    loaded = load_distilled(path)
    assert torch.equal(loaded.images, original.images) and torch.equal(loaded.labels, original.labels)
    assert loaded.classes == ("c0", "c1", "c2") and loaded.mean == [0.5] and loaded.std == [0.25]
    assert (loaded.dataset, loaded.method, loaded.seed, loaded.source_train_size) == ("toy", "devs", 7, 100)
    assert loaded.config == {"ipc": 2, "schedule": [2]}
    assert loaded.created == original.created and loaded.devs_version == original.devs_version
    assert [p.name for p in tmp_path.iterdir()] == ["set.safetensors"]  # no temp files left


def test_file_is_readable_with_plain_safetensors(tmp_path):
    from safetensors import safe_open

    path = make_set().save(tmp_path / "set.safetensors")
    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata()
        assert metadata["format"] == FORMAT
        assert json.loads(metadata["classes"]) == ["c0", "c1", "c2"]
        assert handle.get_tensor("images").dtype.name == "float32"
        assert all(isinstance(value, str) for value in metadata.values())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"images": torch.full((6, 1, 4, 4), float("nan"))}, "NaN or Inf"),
        ({"labels": torch.ones(6, 3)}, "sum to 1"),
        ({"labels": torch.full((6, 3), float("inf"))}, "NaN, Inf"),
        ({"classes": ["a", "b"]}, "class names"),
        ({"mean": [0.1, 0.2]}, "one value per channel"),
        ({"std": [0.0]}, "std"),
    ],
)
def test_invalid_sets_are_refused(overrides, message):
    with pytest.raises(DistilledFileError, match=message):
        make_set(**overrides)


def _write_raw(path, metadata, labels=None):
    tensors = {"images": torch.rand(2, 1, 4, 4), "labels": torch.eye(2) if labels is None else labels}
    save_file(tensors, str(path), metadata=metadata)


def test_wrong_or_missing_format_field(tmp_path):
    good = make_set().metadata()
    _write_raw(tmp_path / "a.safetensors", {**good, "format": "other.v9", "classes": '["a", "b"]'})
    with pytest.raises(DistilledFileError, match="expected 'devs.distilled.v1'"):
        load_distilled(tmp_path / "a.safetensors")
    missing = {k: v for k, v in good.items() if k != "format"}
    _write_raw(tmp_path / "b.safetensors", missing)
    with pytest.raises(DistilledFileError, match="not a devs distilled-set file"):
        load_distilled(tmp_path / "b.safetensors")


def test_labels_not_summing_to_one_in_a_file(tmp_path):
    metadata = {**make_set().metadata(), "classes": '["a", "b"]'}
    _write_raw(tmp_path / "c.safetensors", metadata, labels=torch.full((2, 2), 0.9))
    with pytest.raises(DistilledFileError, match="sum to 1"):
        load_distilled(tmp_path / "c.safetensors")


def test_truncated_and_missing_files(tmp_path):
    path = make_set().save(tmp_path / "set.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DistilledFileError, match="truncated"):
        load_distilled(path)
    with pytest.raises(DistilledFileError, match="not found"):
        load_distilled(tmp_path / "nope.safetensors")


def test_unwritable_output_is_refused_before_writing(tmp_path):
    target = tmp_path / "dir.safetensors"
    target.mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        make_set().save(target)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        make_set().save(blocker / "sub" / "set.safetensors")
