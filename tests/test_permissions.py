"""Every file and folder devs writes gets the mode the user's umask gives any new file.

Atomic writes go through temporary files and folders (mkstemp 0o600, mkdtemp 0o700); without care the
result stays private, and a colleague on a shared machine cannot read a distilled set.
"""

import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

import devs
from devs.cli import main
from devs.methods.progress import MatchingProgress, save_progress


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def modes(root):
    """{path relative to root: mode} for root and everything under it."""
    paths = [root, *root.rglob("*")]
    return {str(path.relative_to(root.parent)): stat.S_IMODE(path.lstat().st_mode) for path in paths}


def wrong_modes(root, umask):
    expected = {True: 0o777 & ~umask, False: 0o666 & ~umask}
    return {path: oct(mode) for path, mode in modes(root).items()
            if mode != expected[(root.parent / path).is_dir()]}


def run(capsys, *argv):
    code = main(list(argv))
    assert code == 0, capsys.readouterr().err


def write_image_folder(root):
    for split in ("train", "test"):
        for cls in range(2):
            folder = root / split / f"class{cls}"
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8), 60 * i, dtype=np.uint8)).save(folder / f"{i}.png")


def test_outputs_follow_the_umask(tmp_path, capsys, umask):
    out = tmp_path / "runs" / "digits.safetensors"  # "runs" is made by devs too
    run(capsys, "distill", "--ipc", "1", "--schedule", "10,1", "--no-evaluate", "--epochs", "1", "-q", "--out", str(out))
    assert {p.name for p in out.parent.iterdir()} >= {"digits.safetensors", "digits.png", "digits.json", "digits.stages"}
    assert any(out.with_suffix(".stages").glob("stage*.safetensors"))

    devs.load_distilled(out).save(out.with_name("saved.safetensors"))
    save_progress(out.with_suffix(".stages") / "progress.safetensors", "key",
                  MatchingProgress(torch.zeros(2, 3), None, torch.zeros(4, dtype=torch.uint8), torch.zeros(1)))
    run(capsys, "export", str(out), "--to", str(tmp_path / "export"), "-q")
    run(capsys, "report", str(out), "--out", str(tmp_path / "report"), "-q")
    report = {p.suffix for p in (tmp_path / "report").iterdir()}
    assert {".html", ".png", ".csv"} <= report
    write_image_folder(tmp_path / "images")
    run(capsys, "pack", str(tmp_path / "images"), "--out", str(tmp_path / "store"), "-q")

    wrong = {}
    for root in ("runs", "export", "report", "store"):
        wrong.update(wrong_modes(tmp_path / root, umask))
    assert wrong == {}


def test_dataset_cache_follows_the_umask(tmp_path, monkeypatch, request, umask):
    monkeypatch.setenv("DEVS_CACHE_DIR", str(tmp_path / "cache"))
    write_image_folder(tmp_path / "images")
    devs.load_dataset(str(tmp_path / "images"))
    assert wrong_modes(tmp_path / "cache", umask) == {}
