"""A DEvS run killed with SIGKILL in the middle of a stage resumes without redoing finished stages."""

import os
import signal
import subprocess
import sys
import time

import torch

from devs import load_distilled

# Stage 2 trains for a few hundred epochs on 8x8 images, long enough for the kill to land inside it.
ARGS = ["distill", "--ipc", "2", "--schedule", "20,2", "--epochs", "2,300", "--no-evaluate", "--seed", "11"]


def distill(out, *extra):
    return [sys.executable, "-m", "devs", *ARGS, "--out", str(out), *extra]


def test_sigkill_mid_stage_then_resume_matches_an_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed.safetensors"
    stages = killed.with_suffix(".stages")
    process = subprocess.Popen(distill(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not list(stages.glob("stage1-*.safetensors")):
        assert process.poll() is None, "the run ended before stage 1 was saved"
        assert time.monotonic() < deadline, "stage 1 never finished"
        time.sleep(0.05)
    time.sleep(0.5)  # inside stage 2's training now
    assert process.poll() is None, "stage 2 ended before the kill; lengthen it"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not killed.exists()  # no half-written output
    assert not list(tmp_path.rglob("*.tmp"))  # no temp files left behind either
    stage1 = next(stages.glob("stage1-*.safetensors"))
    before = stage1.stat().st_mtime_ns

    resumed = subprocess.run(distill(killed, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "Stage 1: resumed" in resumed.stderr and "Stage 2: resumed" not in resumed.stderr
    assert stage1.stat().st_mtime_ns == before  # stage 1 was not recomputed

    clean = tmp_path / "clean.safetensors"
    assert subprocess.run(distill(clean), capture_output=True).returncode == 0
    a, b = load_distilled(killed), load_distilled(clean)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.metadata()["seed"] == b.metadata()["seed"] and a.classes == b.classes
