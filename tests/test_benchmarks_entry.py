"""benchmarks/run.py: every experiment is listed, its --dry-run commands name real scripts and real options, and
a tiny digits run through it records a JSONL that a rerun resumes from without recomputing."""

import ast
import functools
import importlib.util
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import devs

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"
spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
bench = importlib.util.module_from_spec(spec)
sys.modules.setdefault("benchmarks_run", bench)
spec.loader.exec_module(bench)

# The options after which a script hands everything to `devs distill`.
DISTILL_TAIL = {"benchmarks/devs_table.py": "--distill-args", "benchmarks/paper_search.py": "--common-args",
                "benchmarks/streaming.py": "--"}


@functools.cache
def options(path: Path) -> set[str]:
    """Every long option an argparse parser in ``path`` defines (with --no-X for BooleanOptionalAction)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            names = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")]
            found.update(names)
            if any(getattr(k.value, "attr", "") == "BooleanOptionalAction" for k in node.keywords):
                found.update("--no-" + name[2:] for name in names if name.startswith("--"))
    return found


# the devs command line's options, read from the package being tested (the installed one when src/ is absent)
DEVS_OPTIONS = set().union(*(options(path) for path in Path(devs.__file__).parent.rglob("*.py")))


def dry_run(*argv: str) -> str:
    out = io.StringIO()
    stdout, sys.stdout = sys.stdout, out
    try:
        assert bench.main(["--dry-run", *argv]) == 0
    finally:
        sys.stdout = stdout
    return out.getvalue()


def check_command(line: str) -> str | None:
    """Assert that a printed command's script exists and that it knows every option given; return the script."""
    words = shlex.split(line)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value prefixes
        words.pop(0)
    if words[0] != "python":
        return None
    if words[1] == "-c":
        return None
    if words[1:3] == ["-m", "devs"]:
        script, given, tail = "devs", words[4:], []
    else:
        script = words[1]
        assert (ROOT / script).is_file(), f"{script} does not exist: {line}"
        given, tail = words[2:], []
        marker = DISTILL_TAIL.get(script)
        if marker and marker in given:
            at = given.index(marker)
            given, tail = given[:at], given[at + 1:]
    known = DEVS_OPTIONS if script == "devs" else options(ROOT / script)
    for word in given:
        if word.startswith("--"):
            assert word in known, f"{script} has no option {word}: {line}"
    for word in tail:
        if word.startswith("--"):
            assert word in DEVS_OPTIONS, f"devs distill has no option {word}: {line}"
    return script


def test_list_names_every_experiment():
    done = subprocess.run([sys.executable, str(RUN), "list"], capture_output=True, text=True, check=True)
    named = {line.split()[0] for line in done.stdout.splitlines() if line and not line[0].isspace()}
    assert named == set(bench.EXPERIMENTS)
    for name in ("devs-table", "table1", "paper", "devs-plus", "speed", "scaling", "clustering", "same-budget",
                 "evaluation"):
        assert name in named


@pytest.mark.parametrize("name", sorted(bench.EXPERIMENTS))
def test_dry_run_prints_commands_of_existing_scripts_and_options(name):
    experiment = bench.EXPERIMENTS[name]
    scripts = set()
    for device in experiment.devices:
        for smoke in ([], ["--smoke"]):
            text = dry_run(name, "--device", device, "--budget", "600", *smoke)
            commands = [line for line in text.splitlines() if line and not line.startswith("#")]
            assert commands, text
            for line in commands:
                scripts.add(check_command(line))
            # results are named per experiment and device (NAME-cpu*, NAME-gpu*: none of the older records' names)
            tag = "gpu" if device == "cuda" else "cpu"
            for path in re.findall(r"--results (\S+)|--csv (\S+)", text):
                path = next(p for p in path if p)
                if path.endswith((".jsonl", ".csv")):
                    assert Path(path).name.startswith(f"{name}-{tag}"), path
            if device == "cuda":
                assert "nvidia-smi" in commands and "lscpu" in commands  # the GPU prelude
            else:
                assert "nvidia-smi" not in commands
    assert scripts - {None}, name


def test_pass_through_arguments_land_before_the_distill_options():
    text = dry_run("devs-table", "--device", "cpu", "--only", "cifar10", "--", "--ipc", "1", "--distill-args",
                   "--epochs", "1")
    line = next(line for line in text.splitlines() if line.startswith("python benchmarks/devs_table.py"))
    head, tail = line.split(" --distill-args ")
    assert head.endswith("--ipc 1") and tail.endswith("--epochs 1")
    assert "not selected by --only" in text  # the fashion-mnist step


def test_benchmarks_md_names_an_experiment_under_each_section():
    text = (ROOT / "BENCHMARKS.md").read_text()
    for experiment in bench.EXPERIMENTS.values():
        heading = f"## {experiment.section}\n"
        assert heading in text, heading
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        assert f"python benchmarks/run.py {experiment.name}" in section, experiment.name
    # every benchmarks/ script BENCHMARKS.md names exists, or the line (or the one above it) says it was removed
    lines = text.splitlines()
    for number, line in enumerate(lines):
        for script in re.findall(r"benchmarks/\w+\.(?:py|sh)", line):
            assert (ROOT / script).exists() or "removed" in line + lines[number - 1], line


def test_a_tiny_digits_run_records_and_resumes(tmp_path):
    results, work = tmp_path / "results", tmp_path / "work"
    command = [sys.executable, str(RUN), "devs-table", "--device", "cpu", "--smoke", "--only", "cifar10",
               "--results", str(results), "--work", str(work), "--", "--ipc", "1", "--runs", "1", "--protocols", "dc",
               "--eval-epochs", "2", "--distill-args", "--epochs", "1", "--param", "width=8"]
    first = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    records = results / "devs-table-cpu-cifar10.jsonl"
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert [(r["dataset"], r["ipc"], r["protocol"], r["runs"]) for r in rows] == [("digits", 1, "dc", 1)]
    assert "-m devs distill" in first.stdout and "--epochs 1 --param width=8" in first.stdout
    assert (results / "devs-table-cpu.log").read_text().count("done cifar10") == 1

    again = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert records.read_text().count("\n") == 1  # nothing recomputed, nothing appended
    assert "-m devs distill" not in again.stdout and "-m devs evaluate" not in again.stdout
