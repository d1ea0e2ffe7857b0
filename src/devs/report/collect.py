"""Reading the inputs of ``devs report``: distilled sets, their run records and DEvS stages, benchmark results.

Inputs are distilled ``.safetensors`` files (with the ``.json`` run record ``devs distill`` writes next to
each), directories (searched recursively for those, for DEvS stage files
``stage<N>-ipc<K>-<hash>.safetensors`` and for benchmark results), and the ``.jsonl`` results of
``benchmarks/devs_table.py``, ``benchmarks/table1.py`` and ``benchmarks/frontier.py``. Unreadable inputs
are skipped with a warning. ``collect`` gathers them into a ``Collected``: the runs with their matched stage
files, the accuracy measurements (``Point``), the distillation costs (``Timing``) and the time-to-accuracy
points (``FrontierPoint``).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import DevsError
from ..io import DistilledSet, load_distilled

logger = logging.getLogger(__name__)

STAGE_FILE = re.compile(r"stage(\d+)-ipc(\d+)-[0-9a-f]+\.safetensors")
EXTRACTOR_FILE = re.compile(r"extractor\d+-[0-9a-f]+\.safetensors")  # trained nets in a checkpoint dir, not sets
PROGRESS_FILE = re.compile(r".+\.progress\.safetensors")  # matching runs' resume state (methods/progress.py)
# Settings that may differ between runs sharing one stage checkpoint (see DEvS._stage_key), or that only
# stage files carry: ignored when deciding whether a stage file belongs to a run.
# "recipe" names how the run's settings were chosen; the settings themselves are compared.
_STAGE_VARYING = {"ipc", "schedule", "epochs", "steps_per_stage", "device", "stages", "resolved_schedule",
                  "resolved_epochs", "stage", "stage_key", "recipe"}
CEILING = "whole"  # table1.py's method name for the whole training set


@dataclass
class Stage:
    """A DEvS stage checkpoint: the full distilled set after stage ``number``."""

    path: Path
    number: int
    ipc: int
    distilled: DistilledSet

    @property
    def record(self) -> dict[str, Any]:
        """Sizes, epochs and seconds of this stage, as DEvS stored them in the file."""
        return self.distilled.config.get("stage") or {}


@dataclass
class Run:
    """A distilled file, its run record (empty when there is none) and its matched DEvS stages."""

    path: Path
    distilled: DistilledSet
    record: dict[str, Any]
    stages: list[Stage] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return str(self.record.get("dataset") or self.distilled.dataset)

    @property
    def ipc(self) -> int:
        return int(self.distilled.config.get("ipc") or round(len(self.distilled) / self.distilled.num_classes))

    @property
    def schedule(self) -> list[int]:
        """Images per class after each DEvS stage (empty for other methods)."""
        return list(self.distilled.config.get("resolved_schedule") or [])

    @property
    def label(self) -> str:
        """The method name, with the DEvS schedule when it has several stages (so variants stay apart)."""
        method = self.distilled.method or "distilled"
        return f"{method} (schedule {','.join(map(str, self.schedule))})" if len(self.schedule) > 1 else method


@dataclass
class Point:
    """One accuracy measurement: mean ± std over ``nets`` networks."""

    dataset: str
    protocol: str
    epochs: int | None  # the evaluation's epochs when they overrode the protocol's
    method: str
    ipc: int
    mean: float
    std: float
    nets: int
    source: str
    date: str = ""


@dataclass
class Timing:
    """One distillation's cost, with its DEvS stage records when there are any."""

    dataset: str
    method: str
    ipc: int
    wall_time_s: float | None
    peak_memory_mib: float | None
    cuda_peak_memory_mib: float | None
    stages: list[dict[str, Any]]
    machine: str
    source: str


@dataclass
class FrontierPoint:
    """One set of a time-to-accuracy run (benchmarks/frontier.py): its entry, its distillation seconds and its
    accuracy; ``entry`` "random subsets" (seconds 0) is the same-size random real baseline."""

    dataset: str
    protocol: str
    ipc: int
    entry: str
    ours: bool
    seconds: float
    mean: float
    std: float
    nets: int
    source: str
    jobs: int = 1  # entries distilled at once; above 1 the seconds were taken beside the others (upper bounds)


@dataclass
class Collected:
    """Everything found in the inputs."""

    runs: list[Run] = field(default_factory=list)
    loose_stages: list[Stage] = field(default_factory=list)  # stage files given as inputs but matching no run
    points: list[Point] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    frontier: list[FrontierPoint] = field(default_factory=list)
    transfer: list[dict[str, Any]] = field(default_factory=list)  # benchmarks/cross_arch.py rows
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, path: Path | str, reason: str) -> None:
        logger.warning("report: skipping %s: %s", path, reason)
        self.skipped.append((str(path), reason))

    def empty(self) -> bool:
        return not (self.runs or self.loose_stages or self.points or self.timings or self.frontier or self.transfer)


def collect(inputs: Iterable[str | Path]) -> Collected:
    """Read every input (see the module docstring); nothing here raises for a bad file."""
    found = Collected()
    pool: dict[Path, Stage] = {}  # every stage file read, by resolved path
    given: list[Path] = []  # stage files named by the inputs
    for path in _expand(inputs, found):
        try:
            if path.suffix == ".jsonl":
                _read_benchmark(path, found)
            elif STAGE_FILE.fullmatch(path.name):
                given.append(_add_stage(path, pool))
            elif path.suffix == ".safetensors":
                found.runs.append(_read_run(path, found))
            else:
                found.skip(path, "not a .safetensors or .jsonl file")
        except (DevsError, OSError, ValueError) as error:
            found.skip(path, str(error))
    matched: set[Path] = set()
    for run in found.runs:
        for stage_path in _stage_files_of(run):
            try:
                _add_stage(stage_path, pool)
            except DevsError as error:
                found.skip(stage_path, str(error))
        run.stages = _match_stages(run, pool.values())
        matched.update(stage.path.resolve() for stage in run.stages)
        found.points += _run_points(run)
        found.timings += [_run_timing(run)] if run.record else []
    found.loose_stages = [pool[path] for path in given if path not in matched]
    return found


def _expand(inputs: Iterable[str | Path], found: Collected) -> list[Path]:
    """Input files, with directories replaced by the .safetensors and .jsonl files under them; no repeats."""
    files: dict[Path, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix in (".safetensors", ".jsonl") and p.is_file()
                            and not p.name.startswith(".") and not EXTRACTOR_FILE.fullmatch(p.name)
                            and not PROGRESS_FILE.fullmatch(p.name))
            if not inside:
                found.skip(path, "no .safetensors or .jsonl files in this directory")
            files.update((p.resolve(), p) for p in inside if p.resolve() not in files)
        elif path.is_file():
            files.setdefault(path.resolve(), path)
        else:
            found.skip(path, "not found")
    return list(files.values())


def _add_stage(path: Path, pool: dict[Path, Stage]) -> Path:
    """Read a stage file into ``pool`` (once) and return its resolved path."""
    key = path.resolve()
    if key not in pool:
        number, ipc = (int(group) for group in STAGE_FILE.fullmatch(path.name).groups())  # type: ignore[union-attr]
        pool[key] = Stage(path, number, ipc, load_distilled(path))
    return key


def _read_run(path: Path, found: Collected) -> Run:
    """A distilled file and the run record next to it (a missing record is fine, an unreadable one is skipped)."""
    distilled = load_distilled(path)
    record_path = path.with_suffix(".json")
    record: dict[str, Any] = {}
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            found.skip(record_path, f"unreadable run record ({error}); the set is shown without it")
            record = {}
    return Run(path, distilled, record)


def command_option(command: Sequence[str] | str | None, name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in a recorded command line (a list or a shell string)."""
    if not command:
        return None
    try:
        argv = shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]
    except ValueError:
        return None
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.partition("=")[2]
    return None


def _stage_files_of(run: Run) -> list[Path]:
    """Stage files that fit the run's schedule in its checkpoint directories: ``<out>.stages`` and any
    recorded --checkpoint-dir (a relative one is read from the current directory)."""
    wanted = {f"stage{number}-ipc{ipc}-" for number, ipc in enumerate(run.schedule, start=1)}
    directories = [run.path.with_suffix(".stages")]
    recorded = command_option(run.record.get("command"), "--checkpoint-dir")
    if recorded:
        directories.append(Path(recorded))
    files = []
    for directory in directories:
        try:
            files += [path for path in directory.iterdir() if STAGE_FILE.fullmatch(path.name)
                      and path.name[:path.name.rindex("-") + 1] in wanted]
        except OSError:  # not there (the usual case for one of the two), or not readable
            continue
    return sorted(files)


def _match_stages(run: Run, pool: Iterable[Stage]) -> list[Stage]:
    """The stage files of this run, in order: same name pattern, data, seed, epochs and settings.

    Runs sharing a checkpoint directory (several --ipc values, several configurations) also share files;
    among equal candidates one in the run's own ``<out>.stages`` directory is preferred.
    """
    epochs = run.distilled.config.get("resolved_epochs") or []
    own = run.path.with_suffix(".stages").resolve()
    stages = []
    for number, ipc in enumerate(run.schedule, start=1):
        candidates = [stage for stage in pool if stage.number == number and stage.ipc == ipc
                      and _same_chain(run, stage, epochs[number - 1] if number <= len(epochs) else None)]
        if candidates:
            stages.append(min(candidates, key=lambda stage: stage.path.parent.resolve() != own))
    return stages


def _same_chain(run: Run, stage: Stage, epochs: int | None) -> bool:
    """Whether ``stage`` can be a stage of ``run``: the same source data, seed sequence and settings."""
    a, b = run.distilled, stage.distilled

    def settings(config: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in config.items() if key not in _STAGE_VARYING}

    return (a.dataset == b.dataset and a.classes == b.classes and a.source_train_size == b.source_train_size
            and b.seed == (a.seed or 0) + stage.number - 1 and settings(a.config) == settings(b.config)
            and (epochs is None or stage.record.get("epochs") == epochs))


def _run_points(run: Run) -> list[Point]:
    """The evaluations in a run record: the set itself and its random baseline."""
    epochs = command_option(run.record.get("command"), "--eval-epochs")
    points = []
    for result in run.record.get("evaluation") or []:
        try:
            method = "random" if result.get("label") == "random" else run.label
            ipc = round(result["size"] / run.distilled.num_classes)
            points.append(_point(result, run.dataset, method, ipc, epochs, run.path.name, run.distilled.created))
        except (KeyError, TypeError, ValueError) as error:
            logger.warning("report: %s: ignoring a malformed evaluation (%s)", run.path, error)
    return points


def _run_timing(run: Run) -> Timing:
    record = run.record
    return Timing(run.dataset, run.label, run.ipc, record.get("wall_time_s"), record.get("peak_memory_mib"),
                  record.get("cuda_peak_memory_mib"), record.get("stages") or [], recorded_environment(record),
                  run.path.name)


def _point(result: dict[str, Any], dataset: str, method: str, ipc: int, epochs: Any, source: str, date: str) -> Point:
    """A Point from an EvaluationResult dictionary."""
    return Point(str(dataset), str(result["protocol"]), int(epochs) if epochs else None, str(method), int(ipc),
                 float(result["mean"]), float(result["std"]), len(result.get("accuracies") or []), source, str(date))


def _read_benchmark(path: Path, found: Collected) -> None:
    """Rows of benchmarks/devs_table.py or benchmarks/table1.py; malformed lines are counted and skipped."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    bad: list[str] = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            if "entry" in row and "seconds" in row:  # benchmarks/frontier.py
                found.frontier.append(_frontier_point(row, path.name))
                continue
            if {"model", "labels", "set"} <= row.keys():  # benchmarks/cross_arch.py
                found.transfer.append(_transfer_row(row, path.name))
                continue
            points, timing = _benchmark_row(row, path.name)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            bad.append(f"line {number}: {type(error).__name__} {error}")
            continue
        found.points += points
        found.timings += [timing] if timing else []
    if bad and len(bad) == len(lines):
        found.skip(path, f"no benchmark rows ({bad[0]}); give results of benchmarks/devs_table.py, table1.py, "
                         "frontier.py or cross_arch.py")
    elif not lines:
        found.skip(path, "empty file")
    elif bad:
        logger.warning("report: %s: skipped %d of %d lines (%s)", path, len(bad), len(lines), bad[0])


def _benchmark_row(row: dict[str, Any], source: str) -> tuple[list[Point], Timing | None]:
    """Points and timing of one result row: devs_table.py rows have 'devs' and 'random', table1.py 'result'."""
    date = str(row.get("date", ""))
    if "devs" in row and "random" in row:  # benchmarks/devs_table.py
        dataset = row["dataset"] + (f"-holdout{row['holdout']}" if row.get("holdout") else "")
        method = "devs" if row.get("config", "default") == "default" else f"devs ({row['config']})"
        epochs = row.get("eval_epochs")
        points = [_point(row["devs"], dataset, method, row["ipc"], epochs, source, date),
                  _point(row["random"], dataset, "random", row["ipc"], epochs, source, date)]
    elif "method" in row and "result" in row:  # benchmarks/table1.py
        dataset, method = row["dataset"], row["method"]
        evaluated = command_option(row.get("evaluate_command"), "--eval-epochs")
        epochs = row.get("ceiling_epochs") if method == CEILING else evaluated
        points = [_point(row["result"], dataset, method, row["ipc"], epochs, source, date)]
    else:
        raise ValueError("neither a devs_table.py row (devs, random) nor a table1.py row (method, result)")
    timing = None
    if row.get("distill_wall_time_s") is not None:
        timing = Timing(str(dataset), str(method), int(row["ipc"]), row["distill_wall_time_s"],
                        row.get("distill_peak_memory_mib"), row.get("distill_cuda_peak_memory_mib"),
                        row.get("stages") or [], str(row.get("machine", "")), source)
    return points, timing


def _transfer_row(row: dict[str, Any], source: str) -> dict[str, Any]:
    """A cross_arch.py row, checked for what the table reads."""
    for result in (row["set"], row.get("random")):
        if result is not None:
            float(result["mean"]), float(result["std"])
    str(row["model"]), str(row["protocol"]), str(row["dataset"]), str(row["file"]), int(row["size"])
    return {**row, "source": source}


def _frontier_point(row: dict[str, Any], source: str) -> FrontierPoint:
    dataset = row["dataset"] + (f"-holdout{row['holdout']}" if row.get("holdout") else "")
    result = row["result"]
    return FrontierPoint(str(dataset), str(row["protocol"]), int(row["ipc"]), str(row["entry"]), bool(row["ours"]),
                         float(row["seconds"]), float(result["mean"]), float(result["std"]),
                         len(result.get("accuracies") or []), source, int(row.get("jobs") or 1))


def recorded_environment(record: dict[str, Any]) -> str:
    """Python, torch and machine as a record states them: an 'environment' object or a 'machine' line."""
    env = record.get("environment")
    if isinstance(env, dict) and env:
        return ", ".join(f"{key} {value}" for key, value in env.items())
    return str(env or record.get("machine") or "not recorded")
