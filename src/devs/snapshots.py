"""Anytime runs: the set a method is still learning, handed out at given elapsed times.

A method that improves its images step by step (dc, dm, devs+'s DM step) can report, in one run, what it
would have returned had it been stopped after 2, 10 or 30 minutes: that gives its whole time-to-accuracy
curve for the price of its longest point. ``Snapshots`` holds the times and what to do with each set;
``devs distill --snapshots 2m,10m,30m`` writes each one beside ``--out``.

Times are seconds since the method's ``fit`` began, setup included (the same clock as ``time_budget_s``),
and they are checked after each iteration: a snapshot is the set after the iteration in which its time
was reached. A run resumed from a checkpoint keeps its clock, and times it had passed are not taken again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidParameterError
from .io import DistilledSet

Writer = Callable[[DistilledSet, float, float], None]  # (set, the time asked for, the elapsed seconds)

# A run stops (or snapshots) after the step in flight when its time is reached, so it may end a little
# past its budget: up to this factor over it still counts as within the budget (devs distill warns beyond).
BUDGET_TOLERANCE = 1.05


def within_budget(seconds: float, budget_s: float) -> bool:
    return seconds <= budget_s * BUDGET_TOLERANCE


@dataclass
class Snapshots:
    """Elapsed times (seconds, ascending) at which ``write(set, at_s, elapsed_s)`` gets the set so far.

    A method calls ``take`` on its own clock; ``offset_s`` and ``convert`` (see ``shifted``) turn that into
    the run's clock and the run's set when the method is one step of another.
    """

    at_s: Sequence[float]
    write: Writer
    taken: list[float] = field(default_factory=list)
    offset_s: float = 0.0
    convert: Callable[[DistilledSet], DistilledSet] | None = None

    def __post_init__(self) -> None:
        times = [float(t) for t in self.at_s]
        if not times or any(t <= 0 for t in times) or sorted(set(times)) != times:
            raise InvalidParameterError(f"Snapshot times must be positive, distinct and ascending; got {list(self.at_s)}")
        self.at_s = tuple(times)

    def skip_until(self, elapsed_s: float) -> None:
        """Mark the times an earlier process of a resumed run already passed as taken."""
        self.taken.extend(t for t in self.due(elapsed_s))

    def due(self, elapsed_s: float) -> list[float]:
        """The times reached by ``elapsed_s`` (on the caller's clock) and not yet taken."""
        return [t for t in self.at_s if t <= elapsed_s + self.offset_s and t not in self.taken]

    def take(self, elapsed_s: float, current: Callable[[], DistilledSet]) -> None:
        """Hand out the set (built by ``current()`` only when some time is due) for each time reached."""
        due = self.due(elapsed_s)
        if not due:
            return
        distilled = current()
        if self.convert is not None:
            distilled = self.convert(distilled)
        elapsed_s += self.offset_s
        for at_s in due:
            stamped = dataclasses.replace(distilled, config={**distilled.config, "snapshot_at_s": at_s,
                                                             "elapsed_s": round(elapsed_s, 3)})
            self.write(stamped, at_s, elapsed_s)
            self.taken.append(at_s)

    def shifted(self, offset_s: float, convert: Callable[[DistilledSet], DistilledSet]) -> "Snapshots":
        """The same schedule (and taken times) for a step that starts ``offset_s`` seconds into this clock and
        whose sets become this method's through ``convert`` (devs+: DM's images with DEvS's labels)."""
        def chained(distilled: DistilledSet) -> DistilledSet:
            distilled = convert(distilled)
            return self.convert(distilled) if self.convert is not None else distilled

        return Snapshots(self.at_s, self.write, self.taken, self.offset_s + offset_s, chained)


def snapshot_path(out: str | Path, at_s: float) -> Path:
    """Where ``devs distill --snapshots`` writes the snapshot for time ``at_s`` of the run writing ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.at{at_s:g}s{out.suffix}")
