"""The README cannot drift from the code: its shell and Python blocks run, and its results table matches
BENCHMARKS.md cell for cell.

Blocks are marked by an HTML comment on the line before them: ``<!-- readme-test: install -->`` (the two
commands at the top: the test command must be the one CI runs, the default job's command runs here with
this environment's ``devs``), ``<!-- readme-test: skip (why) -->`` (CIFAR-10 or several GPUs: each ``devs``
command is only parsed). Every other ``bash`` and ``python`` block runs, in order, in one fresh directory.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from devs.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BENCHMARKS = (ROOT / "BENCHMARKS.md").read_text()

_BLOCK = re.compile(r"(?:<!-- readme-test: (?P<mark>\w+)[^>]*-->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


def blocks(lang: str | None = None) -> list[tuple[str | None, str, str]]:
    found = [(m["mark"], m["lang"], m["body"]) for m in _BLOCK.finditer(README)]
    return [block for block in found if lang is None or block[1] == lang]


def install_blocks() -> list[str]:
    return [body.strip() for mark, _, body in blocks("bash") if mark == "install"]


def skeleton(text: str) -> list[str]:
    """Lines with every number replaced, so that output from another run or machine can be compared."""
    return [re.sub(r"\d+(\.\d+)?", "N", line).strip() for line in text.strip().splitlines()]


def test_the_test_command_is_the_one_ci_runs():
    commands = install_blocks()
    assert len(commands) == 2 and "devs distill" in commands[0] and "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_skipped_blocks_parse():
    parser = build_parser()
    skipped = [body for mark, lang, body in blocks("bash") if mark == "skip"]
    assert skipped
    for body in skipped:
        for line in body.splitlines():
            words = shlex.split(line, comments=True)
            if "devs" in words[:1] or "-m" in words and words[words.index("-m") + 1] == "devs":
                args = words[1:] if words[0] == "devs" else words[words.index("-m") + 2:]
                parser.parse_args(args)  # an unknown option or bad value raises


def test_readme_blocks_run_on_digits(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    default_job = install_blocks()[0].split("&&")[-1].strip().replace(".venv/bin/", "")
    done = subprocess.run(default_job, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    sample = next(body for _, lang, body in blocks("text") if "test accuracy" in body)
    assert skeleton(done.stdout) == skeleton(sample), "the README's sample output of the default job is stale"
    ran = 0
    for mark, lang, body in blocks():
        if mark or lang not in ("bash", "python"):
            continue
        command = ["bash", "-euo", "pipefail", "-c", body] if lang == "bash" else [sys.executable, "-c", body]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"README block failed:\n{body}\n{done.stderr[-2000:]}"
        ran += 1
    assert ran >= 2 and (tmp_path / "digits.safetensors").exists() and (tmp_path / "runs" / "digits-png").is_dir()


# ----------------------------------------------------------------------------- results table

def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def sections_of(markdown: str) -> dict[str, str]:
    """anchor -> the section's text, up to the next heading of the same or a higher level."""
    fences = [m.span() for m in re.finditer(r"^```.*?^```", markdown, re.M | re.S)]  # '# comment' lines in code
    headings = [h for h in re.finditer(r"^(#+) (.+)$", markdown, re.M)
                if not any(start < h.start() < end for start, end in fences)]
    sections: dict[str, str] = {}
    for i, heading in enumerate(headings):
        level = len(heading[1])
        end = next((h.start() for h in headings[i + 1:] if len(h[1]) <= level), len(markdown))
        sections.setdefault(github_anchor(heading[2]), markdown[heading.end():end])
    return sections


def table_problems(readme: str, benchmarks: str) -> tuple[int, list[str]]:
    """(cells checked, problems): every linked number of the README's results table must appear in the
    BENCHMARKS.md section its link names."""
    links = dict(re.findall(r"^\[([\w-]+)\]: BENCHMARKS\.md#(\S+)$", readme, re.M))
    sections = sections_of(benchmarks)
    table = next(part for part in readme.split("## Results", 1)[1].split("\n\n") if part.lstrip().startswith("| data |"))
    problems, cells = [], 0
    for row in table.splitlines()[2:]:
        name = " ".join(part.strip() for part in row.split("|")[1:3])
        for number, ref in re.findall(r"\[(\d+\.\d)\]\[([\w-]+)\]", row):
            cells += 1
            if ref not in links or links[ref] not in sections:
                problems.append(f"{name}: [{ref}] does not link to a BENCHMARKS.md section")
            elif not re.search(rf"(?<![\d.]){re.escape(number)}(?!\d)", sections[links[ref]]):
                problems.append(f"{name}: {number} is not in BENCHMARKS.md #{links[ref]}")
    return cells, problems


def test_results_table_matches_benchmarks_cell_for_cell():
    cells, problems = table_problems(README, BENCHMARKS)
    assert cells >= 40 and problems == []


def test_the_table_check_catches_a_changed_number_and_a_dead_link():
    changed = README.replace("[57.7][gpu-dm]", "[57.9][gpu-dm]", 1)
    assert any("57.9 is not in" in problem for problem in table_problems(changed, BENCHMARKS)[1])
    dead = README.replace("[77.5][table1-c10]", "[77.5][nowhere]", 1)
    assert any("[nowhere]" in problem for problem in table_problems(dead, BENCHMARKS)[1])
