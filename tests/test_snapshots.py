"""Anytime runs: snapshots of the set being learned at given elapsed times, their clock and the CLI option."""

import json

import pytest
import torch

from devs import DEvSPlus, get_method, load_distilled
from devs.cli import main
from devs.errors import InvalidParameterError
from devs.methods.matching import _PixelMatching
from devs.methods.progress import load_progress
from devs.snapshots import Snapshots, snapshot_path

DM = dict(width=16, batch_real=64, device="cpu", progress=False)


class Recorder:
    def __init__(self):
        self.sets = {}

    def __call__(self, distilled, at_s, elapsed_s):
        self.sets[at_s] = (distilled, elapsed_s)


@pytest.fixture
def clock(monkeypatch):
    """Matching's clock reads one second more at every look: iteration i ends at about i seconds."""
    ticks = iter(range(1, 10_000))
    monkeypatch.setattr(_PixelMatching, "_elapsed", staticmethod(lambda start, device: float(next(ticks))))


def test_schedule_checks_and_hands_out_each_time_once():
    with pytest.raises(InvalidParameterError, match="ascending"):
        Snapshots([10, 5], Recorder())
    with pytest.raises(InvalidParameterError):
        Snapshots([0, 5], Recorder())
    recorder = Recorder()
    snapshots = Snapshots([1, 2, 5], recorder)
    built = []

    def current():
        built.append(1)
        return get_method("random", ipc=1).fit((torch.rand(20, 1, 4, 4), torch.arange(20) % 2)).distilled_

    snapshots.take(0.5, current)
    assert not built  # nothing due: nothing built
    snapshots.take(2.5, current)  # 1 and 2 are due: one set for both
    assert sorted(recorder.sets) == [1.0, 2.0] and len(built) == 1
    assert recorder.sets[2.0][0].config["snapshot_at_s"] == 2.0 and recorder.sets[2.0][0].config["elapsed_s"] == 2.5
    snapshots.take(3.0, current)
    assert len(built) == 1  # taken times are not taken again
    shifted = snapshots.shifted(4.0, lambda distilled: distilled)
    assert shifted.due(0.5) == [] and shifted.due(1.0) == [5.0]  # 1 s into a step that starts at 4 s
    resumed = Snapshots([1, 2, 5], Recorder())
    resumed.skip_until(2.0)
    assert resumed.due(10) == [5.0]


def test_a_snapshot_is_the_set_a_shorter_run_returns(digits, clock):
    recorder = Recorder()
    method = get_method("dm", ipc=1, iterations=5, random_state=2, **DM)
    method.snapshots = Snapshots([2, 4], recorder)
    method.fit(digits)
    assert sorted(recorder.sets) == [2.0, 4.0]
    for at_s, iterations in ((2.0, 2), (4.0, 4)):
        snapshot, elapsed = recorder.sets[at_s]
        shorter = get_method("dm", ipc=1, iterations=iterations, random_state=2, **DM).fit(digits).distilled_
        assert torch.equal(snapshot.images, shorter.images) and torch.equal(snapshot.labels, shorter.labels)
        assert snapshot.config["iterations_done"] == iterations and elapsed == at_s


def test_a_resumed_run_keeps_its_clock(digits, tmp_path):
    get_method("dm", ipc=1, iterations=3, checkpoint_dir=tmp_path, **DM).fit(digits)
    (saved,) = tmp_path.glob("*.progress.safetensors")
    method = get_method("dm", ipc=1, iterations=3, checkpoint_dir=tmp_path, **DM)
    progress = load_progress(saved, method._checkpoint(*_state(method, digits))[1], (10, 1, 8, 8))
    assert progress is not None and progress.elapsed_s > 0
    # Resumed with a budget the saved run had already spent: one more iteration, then it stops.
    extended = get_method("dm", ipc=1, iterations=50, checkpoint_dir=tmp_path, resume=True,
                          time_budget_s=progress.elapsed_s / 2, **DM).fit(digits)
    assert extended.iterations_done_ == 4 and extended.elapsed_s_ > progress.elapsed_s
    # ... and snapshot times it had passed are not taken again.
    recorder = Recorder()
    again = get_method("dm", ipc=1, iterations=5, checkpoint_dir=tmp_path, resume=True, **DM)
    again.snapshots = Snapshots([extended.elapsed_s_ / 2, 1e6], recorder)
    again.fit(digits)
    assert recorder.sets == {}


def _state(method, digits):
    from devs.methods.base import as_training_data
    from devs.runtime import resolve_device

    data = as_training_data(digits)
    device = resolve_device("cpu")
    state = method._initial_state(data, method._input_transform(data, device), device)
    return data, state


def test_devs_plus_snapshots_carry_devs_labels_and_the_dm_steps_images(digits, clock):
    fast = dict(ipc=2, epochs=1, width=16, progress=False)
    recorder = Recorder()
    plus = DEvSPlus(finetune_iterations=4, **fast)
    plus.snapshots = Snapshots([2], recorder)  # devs+'s own clock: DM's clock (tick 1, 2, ...) plus DEvS's time
    plus.fit(digits)
    ((snapshot, elapsed),) = recorder.sets.values()
    shorter = DEvSPlus(finetune_iterations=snapshot.config["finetune_iterations_done"], **fast).fit(digits).distilled_
    assert torch.equal(snapshot.images, shorter.images) and torch.equal(snapshot.labels, shorter.labels)
    assert snapshot.method == "devs+" and elapsed >= 2 and snapshot.config["finetune_iterations_done"] < 4


def test_cli_writes_snapshots_beside_the_output_and_lists_them(tmp_path, capsys):
    out = tmp_path / "dm.safetensors"
    code = main(["distill", "--method", "dm", "--ipc", "1", "--param", "iterations=3", "--param", "width=16",
                 "--snapshots", "0.001s,1h", "--no-evaluate", "-q", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    record = json.loads(out.with_suffix(".json").read_text())
    (written,) = record["snapshots"]  # 1 h was never reached: the final set stands for it
    assert written["file"] == str(snapshot_path(out, 0.001)) and written["iterations_done"] == 1
    snapshot = load_distilled(written["file"])
    assert snapshot.config["snapshot_at_s"] == 0.001 and snapshot.config["recipe"]["name"] == "balanced"
    assert "before snapshot time(s) 3600 s" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--method", "devs", "--snapshots", "1m"], "has no set in between"),
    (["--method", "devs+", "--param", "finetune_iterations=0", "--snapshots", "1m"], "has no set in between"),
    (["--method", "dm", "--snapshots", "10m,2m"], "ascending"),
])
def test_cli_refuses_snapshots_it_cannot_take(tmp_path, capsys, argv, message):
    code = main(["distill", *argv, "--no-evaluate", "-q", "--out", str(tmp_path / "x.safetensors")])
    assert code == 2 and message in capsys.readouterr().err
