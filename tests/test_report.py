"""devs report: the HTML page, its PNG and CSV files, escaping, bad inputs, and a real browser rendering it."""

import csv
import json
import re
import shutil
import sys
from unittest import mock

import pytest
import torch
from PIL import Image

from devs import DistilledSet
from devs.cli import main
from devs.errors import ReportError
from devs.report import build_report

TINY = ["--param", "epochs=1", "--eval-epochs", "2", "--runs", "1", "-q"]


def table1_row(method, ipc, mean, **extra):
    """A row as benchmarks/table1.py writes it (evaluated with 2 epochs, like the tiny run)."""
    size = max(ipc, 1) * 10
    return {"dataset": "digits", "method": method, "ipc": ipc, "protocol": "dc",
            "result": {"label": method, "protocol": "dc", "size": size, "accuracies": [mean - 1, mean + 1],
                       "seeds": [0, 1], "mean": mean, "std": 1.0},
            "evaluate_command": "python -m devs evaluate x.safetensors --eval-epochs 2", "machine": "test machine",
            "date": "2026-11-26T00:00:00+00:00", **extra}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A tiny two-stage DEvS run on digits (5 then 2 images per class), evaluated, with its stage files."""
    root = tmp_path_factory.mktemp("runs")
    out = root / "digits.safetensors"
    argv = ["distill", "--ipc", "2", "--schedule", "5", "--checkpoint-dir", str(root / "digits.stages"),
            "--out", str(out), *TINY]
    with mock.patch.object(sys, "argv", ["devs", *argv]):  # the run record keeps sys.argv, as from a shell
        assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def report(digits_run, tmp_path_factory):
    results = tmp_path_factory.mktemp("bench") / "table1-digits.jsonl"
    rows = [table1_row("herding", 1, 40.0, distill_wall_time_s=1.5, distill_peak_memory_mib=300.0),
            table1_row("herding", 2, 50.0, distill_wall_time_s=1.6, distill_peak_memory_mib=300.0),
            table1_row("whole", 0, 90.0, ceiling_epochs=2)]
    results.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return build_report([digits_run.parent, results], tmp_path_factory.mktemp("report") / "out")


def referenced(index):
    """The files the page points at (img src and a href)."""
    return set(re.findall(r'(?:src|href)="([^"]+)"', index.read_text()))


def test_report_writes_grids_plots_and_tables(report, digits_run):
    out = report.parent
    written = {path.name for path in out.iterdir() if path.suffix in (".png", ".csv")}
    assert referenced(report) == written  # every file is on the page, and the page points at nothing else
    grids = sorted(name for name in written if name.startswith("grid-"))
    assert grids == ["grid-01-digits-stage1.png", "grid-01-digits.png"]  # stage 1 and the result (stage 2)
    assert [name for name in written if name.startswith("accuracy-")] == ["accuracy-01-digits-dc.png"]
    assert {"accuracy.csv", "timings.csv", "stages.csv", "runs.csv"} <= written
    for name in written - {"accuracy.csv", "timings.csv", "stages.csv", "runs.csv"}:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 50

    accuracy = list(csv.DictReader((out / "accuracy.csv").open()))
    values = {(row["method"], row["images per class"]): (float(row["mean (%)"]), float(row["std (%)"]), row["nets"])
              for row in accuracy}
    # the benchmark rows as written, and the run's own evaluation as its record has it
    assert values[("herding", "1")] == (40.0, 1.0, "2") and values[("herding", "2")] == (50.0, 1.0, "2")
    assert values[("whole", "0")][0] == 90.0
    evaluation = {r["label"]: r for r in json.loads(digits_run.with_suffix(".json").read_text())["evaluation"]}
    for label, method in (("devs", "devs (schedule 5,2)"), ("random", "random")):
        assert values[(method, "2")][:2] == (round(evaluation[label]["mean"], 2), round(evaluation[label]["std"], 2))
    stages = list(csv.DictReader((out / "stages.csv").open()))
    assert [(row["stage"], row["input images"], row["output images"]) for row in stages] == [("1", "1347", "50"),
                                                                                             ("2", "50", "20")]
    assert all(float(row["train (s)"]) >= 0 for row in stages)
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs) == 1 and json.loads(runs[0]["config"])["resolved_schedule"] == [5, 2]
    page = report.read_text()
    assert "Distillation time" in page and "configuration of" in page and "digits.stages/stage1-ipc5-" in page


def test_report_escapes_text_taken_from_files(tmp_path):
    evil = "<script>alert(1)</script>"
    distilled = DistilledSet(images=torch.rand(4, 1, 8, 8), labels=torch.tensor([[0.9, 0.1]] * 2 + [[0.2, 0.8]] * 2),
                             classes=(evil, "cost $5 & $6"), mean=[0.5], std=[0.25], dataset="digits",
                             method="random", config={"ipc": 2, "note": evil})
    path = distilled.save(tmp_path / "in" / "evil.safetensors")
    record = {"dataset": evil, "wall_time_s": 1.0, "command": ["devs", evil],
              "environment": {"python": "3.11", "torch": evil}}
    path.with_suffix(".json").write_text(json.dumps(record))
    (tmp_path / "in" / "t.jsonl").write_text(json.dumps(table1_row(evil, 2, 30.0, distill_wall_time_s=2.0)) + "\n")
    index = build_report([tmp_path / "in"], tmp_path / "out")
    page = index.read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # "$" in a class name did not trip matplotlib either
    assert "python 3.11, torch &lt;script&gt;" in page  # the environment a record states
    assert referenced(index) == {p.name for p in (tmp_path / "out").iterdir() if p.suffix in (".png", ".csv")}


def test_unreadable_inputs_are_skipped_with_a_warning(digits_run, tmp_path, caplog):
    (tmp_path / "broken.safetensors").write_bytes(b"\x00not a safetensors file")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with caplog.at_level("WARNING"):
        index = build_report([digits_run, tmp_path / "broken.safetensors", tmp_path / "bad.jsonl",
                              tmp_path / "missing"], tmp_path / "out")
    assert "broken.safetensors" in caplog.text and "bad.jsonl" in caplog.text and "missing: not found" in caplog.text
    page = index.read_text()
    assert "Skipped inputs" in page and "grid-01-digits-stage1.png" in page  # a run file alone finds its stages


def test_nothing_to_report_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="give .safetensors files"):
        build_report([tmp_path / "empty"], tmp_path / "out")
    code = main(["report", str(tmp_path / "empty"), str(tmp_path / "nothing.jsonl"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("devs: error:") == 1 and "Nothing to report" in err
    assert not (tmp_path / "o" / "index.html").exists()


def test_report_command_line(digits_run, tmp_path, capsys):
    code = main(["report", str(digits_run), "--out", str(tmp_path / "r"), "--max-per-class", "3", "-q"])
    assert code == 0 and f"wrote {tmp_path / 'r' / 'index.html'}" in capsys.readouterr().out
    assert main(["report", str(digits_run), "--max-per-class", "0"]) == 2


def chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(report, tmp_path):
    """The issue's Done-when: the page loads in a real browser, with no errors, and its pictures show."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium executable on PATH (Debian: apt-get install chromium)")
    console, page_errors, failed = [], [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda message: console.append((message.type, message.text)))
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.goto(report.as_uri(), wait_until="load")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            images = page.eval_on_selector_all("img", """images => images.map(image => {
                const box = image.getBoundingClientRect();
                return {src: image.getAttribute("src"), natural: image.naturalWidth,
                        width: box.width, height: box.height};
            })""")
        finally:
            browser.close()
    assert page_errors == [] and failed == []
    assert [text for kind, text in console if kind == "error"] == []
    sources = [image["src"] for image in images]
    assert any(src.startswith("accuracy-") for src in sources) and sum(src.startswith("grid-") for src in sources) == 2
    for image in images:
        assert image["natural"] > 0 and image["width"] > 0 and image["height"] > 0, image
    with Image.open(tmp_path / "report.png") as screenshot:
        assert screenshot.size[0] == 1200 and screenshot.size[1] > 900


def frontier_row(entry, seconds, mean, ours, **extra):
    """A row as benchmarks/frontier.py writes it."""
    return {"dataset": "cifar10-jpeg", "holdout": None, "ipc": 1, "entry": entry, "ours": ours, "method": "dm",
            "file": None if entry == "random subsets" else f"{entry}-{seconds}.safetensors", "seconds": seconds,
            "protocol": "dc", "runs": 2, "result": {"accuracies": [mean - 1, mean + 1], "mean": mean, "std": 1.0},
            **extra}


def test_report_plots_accuracy_against_distillation_time(tmp_path):
    rows = [frontier_row("random subsets", 0.0, 14.0, False), frontier_row("dm anytime", 120.0, 25.0, False),
            frontier_row("dm anytime", 600.0, 33.0, False), frontier_row("devs+ balanced", 597.0, 35.9, True)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "frontier.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    stages = tmp_path / "in" / "x.stages"
    stages.mkdir()
    (stages / "dm-ipc1-0123abcd.progress.safetensors").write_bytes(b"resume state, not a set")
    index = build_report([tmp_path / "in"], tmp_path / "out")
    page = index.read_text()
    assert "Accuracy vs. distillation time" in page and "frontier-cifar10-jpeg-dc-ipc1.png" in page
    assert "Skipped inputs" not in page  # a matching run's progress file is not an input to complain about
    with Image.open(tmp_path / "out" / "frontier-cifar10-jpeg-dc-ipc1.png") as image:
        assert image.width > 300
    table = list(csv.DictReader((tmp_path / "out" / "frontier.csv").open()))
    assert [(r["entry"], r["seconds"], r["devs's"]) for r in table if r["entry"] == "devs+ balanced"] == [
        ("devs+ balanced", "597.0", "yes")]
    assert len(table) == 4


def test_report_tables_cross_architecture_results(tmp_path):
    def result(mean):
        return {"accuracies": [mean - 0.5, mean + 0.5], "mean": mean, "std": 0.5}

    def row(model, labels, mean, random_mean, file="runs/dm-ipc10.safetensors", method="dm"):
        """A row as benchmarks/cross_arch.py writes it."""
        return {"file": file, "dataset": ".data/cifar10-jpeg.tar.gz", "holdout": None, "model": model, "labels": labels,
                "protocol": "dc", "eval_epochs": None, "runs": 2, "seed": 0, "size": 100, "method": method,
                "set": result(mean), "random": result(random_mean)}

    rows = [row("convnet", "soft", 52.0, 27.0), row("convnet", "hard", 48.0, 27.0), row("resnet18", "soft", 40.0, 22.0),
            row("convnet", "soft", 44.0, 27.0, file="runs/devs-ipc10.safetensors", method="devs")]
    (tmp_path / "cross.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = build_report([tmp_path / "cross.jsonl"], tmp_path / "out").read_text()
    assert "Across architectures" in page and "Skipped inputs" not in page
    table = list(csv.DictReader((tmp_path / "out" / "architectures.csv").open()))
    cells = {(r["set"], r["labels"]): (r["convnet"], r["resnet18"]) for r in table}
    assert cells == {("random subset", "hard"): ("27.0 ± 0.5", "22.0 ± 0.5"),
                     ("dm (dm-ipc10.safetensors)", "soft"): ("52.0 ± 0.5", "40.0 ± 0.5"),
                     ("dm (dm-ipc10.safetensors)", "hard"): ("48.0 ± 0.5", ""),
                     ("devs (devs-ipc10.safetensors)", "soft"): ("44.0 ± 0.5", "")}
