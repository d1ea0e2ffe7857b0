"""An evaluation with a progress file resumes: finished nets are taken from it, only the others train."""

import importlib
import json

import pytest

from devs import RandomSubset, evaluate, evaluate_random_baseline
from devs.cli import main
from devs.errors import InvalidParameterError
from devs.ledger import NetLedger


@pytest.fixture
def trained(monkeypatch):
    """The seeds of every judging net trained from now on (the training itself still runs)."""
    module = importlib.import_module("devs.evaluate")
    real, seeds = module._Judge.train_and_test, []

    def spy(judge, images, targets, seed):
        seeds.append(seed)
        return real(judge, images, targets, seed)

    monkeypatch.setattr(module._Judge, "train_and_test", spy)
    return seeds


def test_a_rerun_takes_the_finished_nets_and_matches_an_uninterrupted_run(digits, tmp_path, trained):
    subset = RandomSubset(ipc=3, random_state=0).fit(digits).distilled_
    file = tmp_path / "nets.jsonl"
    whole = evaluate(subset, digits, runs=3, epochs=5, progress=False)
    trained.clear()
    first = evaluate(subset, digits, runs=2, epochs=5, progress=False, progress_file=file)  # "killed" after 2 nets
    rerun = evaluate(subset, digits, runs=3, epochs=5, progress=False, progress_file=file)
    assert trained == [0, 1, 2]  # nets 0 and 1 once, net 2 only in the rerun
    assert first.accuracies == whole.accuracies[:2] and rerun.accuracies == whole.accuracies
    assert rerun.seeds == [0, 1, 2] and len(rerun.seconds) == 3
    assert evaluate(subset, digits, runs=3, epochs=5, progress=False, progress_file=file).accuracies == whole.accuracies
    assert trained == [0, 1, 2]  # all three recorded: nothing trains


def test_other_sets_settings_and_random_subsets_are_kept_apart(digits, tmp_path, trained):
    file = tmp_path / "nets.jsonl"
    subset = RandomSubset(ipc=3, random_state=0).fit(digits).distilled_
    other = RandomSubset(ipc=3, random_state=1).fit(digits).distilled_
    evaluate(subset, digits, runs=1, epochs=5, progress=False, progress_file=file)
    evaluate(other, digits, runs=1, epochs=5, progress=False, progress_file=file)  # other pixels
    evaluate(subset, digits, runs=1, epochs=6, progress=False, progress_file=file)  # another recipe
    evaluate(subset, digits, protocol="devs", runs=1, epochs=5, progress=False, progress_file=file)  # and dropout
    evaluate_random_baseline(digits, 30, runs=1, epochs=5, progress=False, progress_file=file)
    assert trained == [0] * 5
    assert len({json.loads(line)["key"] for line in file.read_text().splitlines()}) == 5
    evaluate_random_baseline(digits, 30, runs=1, epochs=5, progress=False, progress_file=file)
    assert trained == [0] * 5  # the random subsets resume too


def test_nets_trained_together_are_kept_and_taken_together(digits, tmp_path, monkeypatch):
    module = importlib.import_module("devs.evaluate")
    real, calls = module._Judge.together, []
    monkeypatch.setattr(module._Judge, "together", lambda judge, sets, seeds: calls.append(seeds) or real(judge, sets, seeds))
    subset = RandomSubset(ipc=2, random_state=0).fit(digits).distilled_
    file = tmp_path / "nets.jsonl"
    first = evaluate(subset, digits, runs=2, epochs=3, progress=False, together=True, progress_file=file)
    again = evaluate(subset, digits, runs=2, epochs=3, progress=False, together=True, progress_file=file)
    assert calls == [[0, 1]] and first.together and again.together
    assert again.accuracies == first.accuracies and again.seeds == [0, 1]


def test_a_line_cut_short_by_a_crash_is_skipped_and_ended(tmp_path, caplog):
    file = tmp_path / "nets.jsonl"
    ledger = NetLedger(file, "k")
    ledger.record(0, 50.0, 1.0)
    with open(file, "a") as handle:
        handle.write('{"key": "k", "seed": 1, "accur')  # the crash
    assert ledger.finished() == {0: (50.0, 1.0)} and "cut short" in caplog.text
    ledger.record(1, 60.0, 2.0)
    assert ledger.finished() == {0: (50.0, 1.0), 1: (60.0, 2.0)}
    with pytest.raises(InvalidParameterError, match="not a file"):
        NetLedger(tmp_path, "k")


def test_cli_evaluate_resumes_from_its_progress_file(digits, tmp_path, trained, capsys):
    out, file = tmp_path / "set.safetensors", tmp_path / "nets.jsonl"
    RandomSubset(ipc=2, random_state=0).fit(digits).distilled_.save(out)
    argv = ["evaluate", str(out), "--dataset", "digits", "--runs", "2", "--eval-epochs", "3", "--json", "-q",
            "--progress-file", str(file)]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)["results"]
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)["results"]
    assert trained == [0, 1, 0, 1]  # the set's nets and the random subsets' nets, each once
    assert [r["accuracies"] for r in again] == [r["accuracies"] for r in first]
