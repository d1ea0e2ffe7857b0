import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load as safetensors_load

from devs import load_distilled
from devs.cli import main

FAST = ["--epochs", "1", "--runs", "1", "--eval-epochs", "3", "-q"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_distill_then_evaluate_end_to_end(tmp_path, capsys):
    out = tmp_path / "digits.safetensors"
    code, stdout, stderr = run_cli(capsys, "distill", "--ipc", "2", "--out", str(out), *FAST)
    assert code == 0, stderr
    distilled = load_distilled(out)
    assert len(distilled) == 20 and distilled.dataset == "digits" and distilled.method == "devs"
    assert out.with_suffix(".png").stat().st_size > 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert [r["label"] for r in record["evaluation"]] == ["devs", "random"]
    assert "test accuracy" in stdout and "protocol dc" in stdout

    code, stdout, stderr = run_cli(capsys, "evaluate", str(out), "--dataset", "digits", "--runs", "1",
                                   "--eval-epochs", "2", "--protocol", "devs", "--no-baseline", "--json", "-q")
    assert code == 0, stderr
    results = json.loads(stdout)["results"]
    assert len(results) == 1 and results[0]["protocol"] == "devs" and len(results[0]["accuracies"]) == 1
    # the evaluation learns: its net on 20 real digits (the baseline) is far above chance (10 %) after 60 epochs
    code, stdout, stderr = run_cli(capsys, "evaluate", str(out), "--dataset", "digits", "--runs", "1",
                                   "--eval-epochs", "60", "--json", "-q")
    assert code == 0, stderr
    assert json.loads(stdout)["results"][1]["label"] == "random" and json.loads(stdout)["results"][1]["mean"] > 30


def test_resume_from_the_command_line(tmp_path, capsys, caplog):
    out = tmp_path / "r.safetensors"
    args = ["distill", "--ipc", "2", "--schedule", "20,2", "--no-evaluate", "--out", str(out), "--epochs", "1"]
    assert run_cli(capsys, *args)[0] == 0
    first = out.read_bytes()
    assert len(list(out.with_suffix(".stages").glob("stage*.safetensors"))) == 2
    with caplog.at_level("INFO"):
        assert run_cli(capsys, *args, "--resume")[0] == 0
    assert "resumed" in caplog.text
    before, after = safetensors_load(first), load_distilled(out)  # the file of the first run, and the resumed one
    assert torch.equal(before["images"], after.images) and torch.equal(before["labels"], after.labels)


def test_list(capsys):
    code, stdout, _ = run_cli(capsys, "list")
    assert code == 0 and "digits" in stdout and "devs" in stdout and "dc" in stdout


def write_image_folder(root, sizes):
    for split in ("train", "test"):
        for cls, size in enumerate(sizes):
            folder = root / split / f"class{cls}"
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((size, size), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.mark.parametrize(
    "argv, expected_code, message",
    [
        (["distill", "--dataset", "imagenet-9000"], 1, "Unknown dataset 'imagenet-9000'"),
        (["distill", "--ipc", "ten"], 2, "invalid int value: 'ten'"),
        (["distill", "--ipc", "5000"], 1, "more than the smallest class holds"),
        (["distill", "--ipc", "0"], 1, "must be an int in the range [1, inf)"),
        (["distill", "--method", "devz"], 1, "did you mean 'devs'"),
        (["distill", "--schedule", "a,b"], 2, "comma-separated integers"),
        (["evaluate", "missing.safetensors", "--dataset", "digits"], 1, "not found"),
        (["evaluate", "x.safetensors"], 2, "--dataset"),
        (["distill", "--protocol", "nope"], 1, "Unknown protocol"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code(tmp_path, capsys, monkeypatch, argv, expected_code, message):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = run_cli(capsys, *argv, "--epochs", "1") if argv[0] == "distill" else run_cli(capsys, *argv)
    assert code == expected_code
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("devs: error:") and message in last_line and "Traceback" not in stderr
    assert not list(tmp_path.rglob("*.safetensors"))  # nothing half-written


def test_unwritable_output_fails_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, stderr = run_cli(capsys, "distill", "--out", str(blocker / "x.safetensors"), "--epochs", "1")
    assert code == 1 and "choose a writable --out path" in stderr.splitlines()[-1] and "Traceback" not in stderr


def test_mixed_image_sizes_in_an_image_folder(tmp_path, capsys):
    write_image_folder(tmp_path / "data", sizes=[8, 8])
    Image.fromarray(np.zeros((9, 9), dtype=np.uint8)).save(tmp_path / "data" / "train" / "class0" / "odd.png")
    code, _, stderr = run_cli(capsys, "distill", "--dataset", str(tmp_path / "data"), "--ipc", "1",
                              "--out", str(tmp_path / "o.safetensors"), "--epochs", "1")
    assert code == 1 and "odd.png" in stderr.splitlines()[-1] and "Traceback" not in stderr
    assert not (tmp_path / "o.safetensors").exists()


def test_module_entry_point_and_help():
    result = subprocess.run([sys.executable, "-m", "devs", "distill", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--dataset", "--ipc", "--method", "--out", "--seed", "--device", "--resume", "--data-root", "--download"):
        assert option in result.stdout


def test_distill_json_prints_only_the_run_record(tmp_path, capsys):
    out = tmp_path / "r.safetensors"
    code = main(["distill", "--method", "random", "--ipc", "1", "--eval-epochs", "1", "--runs", "1", "--json", "-q",
                 "--out", str(out)])
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["file"] == str(out) and record["command"][:2] == ["devs", "distill"]
    assert record["evaluation"][0]["label"] == "random" and "torch" in record["environment"]
    assert json.loads(out.with_suffix(".json").read_text()) == record
