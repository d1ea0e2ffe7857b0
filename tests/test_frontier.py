"""benchmarks/frontier.py: the budget table reads recorded rows right (the runs themselves are benchmarks)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import frontier  # noqa: E402


def row(entry, seconds, mean, ours):
    return {"dataset": "cifar10-jpeg", "ipc": 1, "entry": entry, "ours": ours, "protocol": "dc", "runs": 3,
            "file": None if entry == "random subsets" else f"{entry}.safetensors", "seconds": seconds,
            "iterations_done": None, "result": {"mean": mean, "std": 0.5}}


ROWS = [row("random subsets", 0, 14.0, False), row("random", 0.1, 13.0, False), row("dm anytime", 118, 24.0, False),
        row("dm anytime", 650, 36.6, False), row("devs", 300, 20.0, True), row("devs+ balanced", 597, 35.9, True)]


def test_best_within_a_budget_takes_only_what_fits():
    assert frontier.best_within(ROWS, 120, ours=False)["seconds"] == 118
    assert frontier.best_within(ROWS, 120, ours=True) is None  # nothing of ours finished in 2 minutes
    assert frontier.best_within(ROWS, 600, ours=True)["entry"] == "devs+ balanced"
    assert frontier.best_within(ROWS, 600, ours=False)["seconds"] == 118  # dm's 650 s set does not fit in 600
    # a run ends after the step in flight: 5% over the budget still counts (devs.snapshots.BUDGET_TOLERANCE)
    late = [row("dm anytime", 126, 30.0, False), row("dm anytime", 127, 31.0, False)]
    assert frontier.best_within(late, 120, ours=False)["seconds"] == 126
    assert frontier.best_within(ROWS, 3600, ours=False)["result"]["mean"] == 36.6


def test_markdown_lists_every_set_and_each_budgets_best():
    text = frontier.markdown(ROWS, [120.0, 600.0, 3600.0])
    assert "| random real subsets | 0 | | 14.0 ± 0.5 |" in text
    assert "| 120 s | none finished | dm anytime 24.0 ± 0.5 (118 s) |" in text
    assert "| 600 s | devs+ balanced 35.9 ± 0.5 (597 s) | dm anytime 24.0 ± 0.5 (118 s) |" in text
    assert text.count("| dm anytime |") == 2


def test_every_entry_names_a_method_and_anytime_entries_can_snapshot():
    from devs.methods import get_method

    for name, (options, anytime) in frontier.ENTRIES.items():
        method = get_method(options[options.index("--method") + 1])
        assert method.supports_snapshots or not anytime, name


def test_markdown_says_when_entries_shared_the_machine():
    assert "upper bounds" not in frontier.markdown(ROWS, [600.0])
    shared = [dict(r, jobs=4) for r in ROWS]
    assert "up to 4 entries distilled at once, so the seconds are upper bounds" in frontier.markdown(shared, [600.0])


def test_jobs_start_the_anytime_entries_first_and_a_failed_entry_stops_no_other(tmp_path, monkeypatch):
    import threading

    import pytest

    started, evaluated, lock = [], [], threading.Lock()

    def fake_distill(args, entry, work, data, stem, ipc, budgets):
        with lock:
            started.append(entry)
        if entry == "herding":
            raise RuntimeError("boom")
        return [(Path(f"{entry}.safetensors"), 1.0, {})]

    def fake_evaluate(args, results, data, stem, ipc, entry, path, seconds, record):
        with lock:
            evaluated.append(entry)

    monkeypatch.setattr(frontier, "distill", fake_distill)
    monkeypatch.setattr(frontier, "evaluate", fake_evaluate)
    entries = "random,herding,dm anytime,devs,dc anytime"
    argv = ["--dataset", "digits", "--entries", entries, "--no-baseline", "--jobs", "2",
            "--results", str(tmp_path / "r.jsonl"), "--work-dir", str(tmp_path / "w")]
    with pytest.raises(SystemExit, match="herding at 1 per class: RuntimeError"):
        frontier.main(argv)
    assert set(started[:2]) == {"dm anytime", "dc anytime"}  # the two longest take the two slots first
    assert sorted(evaluated) == sorted(["random", "dm anytime", "devs", "dc anytime"])


def test_the_baseline_runs_first_alone_and_after_the_anytime_runs_with_jobs(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(frontier, "distill", lambda args, entry, *rest: started.append(entry) or [])
    monkeypatch.setattr(frontier, "baseline", lambda args, results, data, stem, ipc: started.append("baseline"))
    for jobs, expected in (("1", ["baseline", "random", "dm anytime", "devs"]),
                           ("2", ["dm anytime", "baseline", "random", "devs"])):
        started.clear()
        frontier.main(["--dataset", "digits", "--entries", "random,dm anytime,devs", "--jobs", jobs,
                       "--results", str(tmp_path / "r.jsonl"), "--work-dir", str(tmp_path / "w")])
        assert set(started[:2]) == set(expected[:2]) and sorted(started) == sorted(expected)  # 2 slots start at once
