"""Recipes: a named setting per method (fast, balanced, best), resolved per size, image size and device.

A recipe turns "how much compute do I want to spend" into concrete method parameters, from the settings
measured in BENCHMARKS.md ("Recipes" names the rows behind each rule). It only fills in parameters: an
explicit value (``--param``, ``--clustering``, a keyword argument) always wins. Where a rule's requirement
fails (multi-formation on small or odd-sided images) the recipe falls back and says so in ``notes``.

    fast      no gradient steps on the images where the method allows it: seconds on a GPU, minutes on a CPU
    balanced  the best measured setting that stays in minutes on a GPU and under an hour on a 2-core CPU
    best      the best measured setting within about one GPU-hour (and what a CPU can do in a few hours)
    none      the method's own defaults (the published settings), nothing resolved
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import InvalidParameterError, UnknownNameError

DESCRIPTIONS = {
    "fast": "no gradient steps on the images where the method allows it (devs, devs+, coresets); short dc / dm runs",
    "balanced": "the best measured setting that takes minutes on a GPU and under about an hour on a 2-core CPU",
    "best": "longer matching (devs+, dm, dc): about a GPU-hour at most, a few CPU-hours",
    "none": "the method's own defaults (the published settings), nothing resolved",
}
RECIPES = tuple(DESCRIPTIONS)
DEFAULT_RECIPE = "balanced"  # what `devs distill` uses unless told otherwise

# Size limits of the rules that shrink or sharpen images (see the two rules below).
MIN_TILE_SIDE = 8  # multi-formation's tiles: 8 px tiles (of 16 px images at factor 2) still hold a shape
MIN_GLOBAL_CLUSTERING_SIDE = 16  # below it, global clusters of tiny images mix classes (8 x 8 digits)


@dataclass(frozen=True)
class Target:
    """What a recipe is resolved for."""

    ipc: int
    image_shape: tuple[int, int, int]  # C, H, W
    device: str  # "cpu" or "cuda" (any accelerator counts as "cuda")
    zca: bool = False  # the images are matched ZCA-whitened (which multi-formation cannot pack)

    @property
    def side(self) -> int:
        return min(self.image_shape[1:])

    @property
    def gpu(self) -> bool:
        return self.device != "cpu"


@dataclass
class Resolved:
    """A recipe's parameters for one method and target, with the reasons and any fallbacks."""

    recipe: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # parameter -> why the recipe sets it so
    notes: list[str] = field(default_factory=list)  # fallbacks: rules that did not apply, and why

    def set(self, name: str, value: Any, why: str) -> None:
        self.params[name] = value
        self.reasons[name] = why

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.recipe, "params": dict(self.params), "notes": list(self.notes)}


def _clustering(resolved: Resolved, target: Target) -> None:
    if target.side < MIN_GLOBAL_CLUSTERING_SIDE:
        resolved.set("clustering", "per-class", f"images of {target.side} px: per-class clustering (digits, "
                     "validation split: see BENCHMARKS.md 'Recipes')")


def _fits(factor: int, target: Target) -> bool:
    """Whether ``factor`` divides both image sides into tiles of at least MIN_TILE_SIDE px."""
    _, height, width = target.image_shape
    return not (height % factor or width % factor) and target.side >= factor * MIN_TILE_SIDE


def _formation(resolved: Resolved, target: Target, wanted: bool, why: str, *, finer: str = "") -> None:
    """Multi-formation 2 where ``wanted`` and the images allow it (4 instead where ``finer`` gives the reason and
    the images allow that); otherwise 1, with a note when wanted."""
    _, height, width = target.image_shape
    if not wanted:
        return
    if not _fits(2, target):
        resolved.notes.append(f"formation=2 needs even image sides of at least {2 * MIN_TILE_SIDE} px; these are "
                              f"{height}x{width}: keeping formation=1")
        return
    if target.zca:
        resolved.notes.append("formation=2 does not combine with zca (whitening mixes every pixel with every "
                              "other, so it does not commute with packing tiles): keeping formation=1")
        return
    if finer and _fits(4, target):
        resolved.set("formation", 4, finer)
        return
    if finer:
        resolved.notes.append(f"formation=4 needs image sides divisible by 4 and of at least {4 * MIN_TILE_SIDE} px; "
                              f"these are {height}x{width}: formation=2")
    resolved.set("formation", 2, why)


def _devs(resolved: Resolved, target: Target) -> None:
    # DEvS has one cost level (no gradient steps, nothing to lengthen that paid): every recipe is its default,
    # except the clustering rule for tiny images.
    _clustering(resolved, target)


def _devs_plus(resolved: Resolved, target: Target) -> None:
    recipe, small = resolved.recipe, target.ipc <= 10
    if recipe == "best":
        iterations = (5000 if target.ipc >= 50 else 2000) if target.gpu else 1000
    else:
        iterations = {"fast": 0, "balanced": 300}[recipe]
    resolved.set("finetune_iterations", iterations, {
        "fast": "no DM step: no gradient steps on the images",
        "balanced": "the devs+ default (validation: 42.8 against 43.3 with 1,000 at 3x the time)",
        "best": "a longer DM step paid at every length measured (CIFAR-10 10 per class: 48.3 / 50.4 / 51.6 at "
                "300 / 1,000 / 2,000; 50 per class: 62.2 / 63.5 at 2,000 / 5,000 under dsa)",
    }[recipe])
    long_dm = recipe == "best" and target.gpu
    # 16 tiles per stored image at 1 per class, where the DM step runs (measured with it: not for `fast`)
    finer = ("sixteen 8 px tiles per image at 1 per class with a DM step (validation, 3 seeds: 41.8 / 40.4 / 40.3 "
             "against 35.6 / 34.4 / 34.9 with formation=2)") if target.ipc == 1 and iterations else ""
    _formation(resolved, target, small or long_dm,
               "multi-formation at 1 and 10 per class (validation: 33.6 against 25.7 at 1, 44.8 against 42.8 at 10)"
               if small else "multi-formation with a long DM step at 50 per class (63.5 under dsa; picked after "
               "seeing a test number)", finer=finer)


def _dm(resolved: Resolved, target: Target) -> None:
    table = {"fast": (100, 300), "balanced": (300, 2000), "best": (1000, 20000)}  # (CPU, GPU) iterations
    iterations = table[resolved.recipe][target.gpu]
    resolved.set("iterations", iterations, f"{resolved.recipe} on a {'GPU' if target.gpu else 'CPU'} "
                 "(CIFAR-10, 10 per class, packed: 49.1 / 51.0 / 52.0 at 300 / 1,000 / 2,000 under dc)")
    _formation(resolved, target, target.ipc <= 10,
               "multi-formation at 1 and 10 per class (packed DM: 36.4 / 49.1 at 300 iterations, test split)")


def _dc(resolved: Resolved, target: Target) -> None:
    iterations = {"fast": 100, "balanced": 300, "best": 1000}[resolved.recipe]
    resolved.set("iterations", iterations, "not searched: a share of the published 1,000 outer iterations")


RULES: dict[str, Callable[[Resolved, Target], None]] = {"devs": _devs, "devs+": _devs_plus, "dm": _dm, "dc": _dc}
# The coresets (random, herding, kcenter, forgetting) have no cost knob: every recipe is their default.


def resolve_recipe(method: str, recipe: str, *, ipc: int, image_shape: tuple[int, ...], device: str,
                   zca: bool = False) -> Resolved:
    """The parameters ``recipe`` gives ``method`` at ``ipc`` images per class of ``image_shape`` (C, H, W) on
    ``device`` ("cpu", "cuda", "cuda:N" or "mps"), distilling in ZCA-whitened space if ``zca``. Explicit
    parameters should be applied on top."""
    if recipe not in RECIPES:
        raise UnknownNameError(f"Unknown recipe {recipe!r}. Valid: {', '.join(RECIPES)}")
    resolved = Resolved(recipe, method)
    if recipe == "none":
        return resolved
    kind = "cpu" if str(device).startswith("cpu") else "cuda"
    if len(image_shape) != 3:
        raise InvalidParameterError(f"image_shape must be (channels, height, width); got {tuple(image_shape)}")
    channels, height, width = (int(size) for size in image_shape)
    rule = RULES.get(method)
    if rule is not None:
        rule(resolved, Target(ipc, (channels, height, width), kind, zca=zca))
    return resolved


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1.5h' -> seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise InvalidParameterError(f"Expected a duration such as 90s, 10m or 1.5h; got {text!r}.")
    seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "").lower() or None]
    if seconds <= 0:
        raise InvalidParameterError(f"A time budget must be positive; got {text!r}.")
    return seconds
