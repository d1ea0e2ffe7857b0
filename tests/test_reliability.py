"""Determinism, concurrent writers, and malformed files or options from the command line."""

import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from devs import DistilledSet, load_distilled
from devs.cli import main
from devs.errors import DistilledFileError

FAST = ["--ipc", "2", "--epochs", "1", "--no-evaluate", "-q"]


def distill(cwd, out, seed, env=None):
    argv = [sys.executable, "-m", "devs", "distill", *FAST, "--seed", str(seed), "--out", out]
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_same_seed_gives_a_bit_identical_file_other_seed_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    runs = [distill(tmp_path / "a", "x.safetensors", 4), distill(tmp_path / "b", "x.safetensors", 4)]
    other = distill(tmp_path / "c", "x.safetensors", 5)
    for process in [*runs, other]:
        assert process.wait() == 0, process.stderr.read()
    first, second, third = ((tmp_path / n / "x.safetensors").read_bytes() for n in "abc")
    assert first == second
    assert first != third


def test_two_runs_into_one_directory_do_not_corrupt_each_other(tmp_path):
    # Distinct files: both succeed. The same file: both succeed, and the survivor is a whole, valid file.
    processes = [distill(tmp_path, "one.safetensors", 1), distill(tmp_path, "two.safetensors", 2),
                 distill(tmp_path, "same.safetensors", 3), distill(tmp_path, "same.safetensors", 4)]
    for process in processes:
        assert process.wait() == 0, process.stderr.read()
    for name in ("one", "two", "same"):
        loaded = load_distilled(tmp_path / f"{name}.safetensors")
        assert len(loaded) == 20
    assert load_distilled(tmp_path / "same.safetensors").seed in (3, 4)
    assert not list(tmp_path.rglob("*.tmp"))


def _good_tensors():
    return {"images": torch.rand(10, 1, 8, 8), "labels": torch.eye(10)}


def _good_metadata():
    return DistilledSet(images=torch.rand(10, 1, 8, 8), labels=torch.eye(10), classes=[str(i) for i in range(10)],
                        mean=[0.3], std=[0.3]).metadata()


@pytest.mark.parametrize(
    "tensors, metadata, message",
    [
        ({"images": torch.full((10, 1, 8, 8), float("nan")), "labels": torch.eye(10)}, {}, "NaN or Inf"),
        ({"images": torch.rand(10, 1, 8, 8), "labels": torch.eye(10) * 2}, {}, "sum to 1"),
        (None, {"format": "devs.distilled.v0"}, "expected 'devs.distilled.v1'"),
        ({"images": torch.rand(3, 1, 8, 8), "labels": torch.eye(3)}, {"classes": '["a", "b", "c"]'},
         "3 classes but dataset 'digits' has 10"),
        (None, {"mean": "[0.1"}, "not valid JSON"),
    ],
)
def test_bad_distilled_files_fail_in_one_line(tmp_path, capsys, tensors, metadata, message):
    path = tmp_path / "bad.safetensors"
    save_file(tensors or _good_tensors(), str(path), metadata={**_good_metadata(), **metadata})
    code = main(["evaluate", str(path), "--dataset", "digits", "--runs", "1", "--eval-epochs", "1", "-q"])
    stderr = capsys.readouterr().err
    assert code == 1 and message in stderr.strip().splitlines()[-1] and "Traceback" not in stderr


def test_truncated_file_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "t.safetensors"
    save_file(_good_tensors(), str(path), metadata=_good_metadata())
    path.write_bytes(path.read_bytes()[:-100])
    code = main(["evaluate", str(path), "--dataset", "digits", "-q"])
    stderr = capsys.readouterr().err
    assert code == 1 and "truncated" in stderr and "Traceback" not in stderr


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.binary(max_size=64),
    metadata=st.dictionaries(st.sampled_from(["format", "classes", "mean", "std", "seed", "config"]),
                             st.text(max_size=12), max_size=6),
    labels=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=4, max_size=4),
)
def test_malformed_files_raise_only_distilled_file_error(tmp_path, header, metadata, labels):
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(header)
    with pytest.raises(DistilledFileError):
        load_distilled(raw)
    crafted = tmp_path / "crafted.safetensors"
    tensors = {"images": torch.rand(2, 1, 2, 2), "labels": torch.tensor(labels).reshape(2, 2)}
    base = {"format": "devs.distilled.v1", "classes": '["a", "b"]', "mean": "[0.5]", "std": "[0.5]"}
    save_file(tensors, str(crafted), metadata={**base, **metadata})
    try:
        loaded = load_distilled(crafted)
    except DistilledFileError:
        return
    # Whatever loads must be a valid set.
    assert torch.isfinite(loaded.labels).all() and torch.allclose(loaded.labels.sum(1), torch.ones(2), atol=1e-3)
    assert loaded.num_classes == loaded.labels.shape[1]


@settings(max_examples=40, deadline=None)
@given(option=st.sampled_from(["--ipc", "--seed", "--runs", "--eval-epochs", "--epochs", "--schedule"]),
       value=st.text(min_size=1, max_size=8).filter(lambda v: not v.startswith("-")))
def test_any_option_value_gives_an_error_not_a_traceback(option, value):
    try:
        int(value)
        return  # a well-formed number may start a real run; other tests cover those
    except ValueError:
        pass
    code = main(["distill", option, value, "--no-evaluate", "-q", "--out", "/proc/devs-test/y.safetensors"])
    assert code in (1, 2)


def _folder(root, classes=("a", "b"), size=8, mode="L"):
    from PIL import Image

    for split in ("train", "test"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.new(mode, (size, size), color=40 * i if mode == "L" else (40 * i, 0, 0)).save(folder / f"{i}.png")
    return root


def _corrupt(root):
    _folder(root)
    (root / "train" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def _mixed_modes(root):
    from PIL import Image

    _folder(root)
    Image.new("RGB", (8, 8)).save(root / "train" / "b" / "colour.png")
    return root


def _empty_class(root):
    _folder(root)
    (root / "train" / "c").mkdir()
    (root / "test" / "c").mkdir()
    return root


def _climbing_tar(root):
    import io
    import tarfile

    archive = root.parent / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        payload = b"x"
        member = tarfile.TarInfo("data/../../evil.png")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    return archive


@pytest.mark.parametrize(
    "make, message",
    [
        (_corrupt, "replace or delete it"),
        (_mixed_modes, "colour.png"),  # names the odd file out
        (_empty_class, "has no images; add images to it or remove it"),
        (lambda root: _folder(root, classes=("only",)), "at least 2 are needed"),
        (_climbing_tar, "unsafe path"),
    ],
)
def test_bad_image_folders_fail_in_one_line(tmp_path, capsys, monkeypatch, make, message):
    monkeypatch.setenv("DEVS_CACHE_DIR", str(tmp_path / "cache"))
    source = make(tmp_path / "data")
    out = tmp_path / "out.safetensors"
    code = main(["distill", "--dataset", str(source), "--ipc", "1", "--epochs", "1", "--out", str(out), "-q"])
    stderr = capsys.readouterr().err
    last = stderr.strip().splitlines()[-1]
    assert code == 1 and last.startswith("devs: error:") and message in last and "Traceback" not in stderr
    assert not out.exists()
