"""The nets an evaluation has finished, kept on disk so that an interrupted evaluation resumes.

Judging a packed set can take hours on a CPU (at 10 per class with sixteen tiles per image each net trains
on 1,600 tiles for hundreds of epochs), and a killed ``devs evaluate`` used to lose every finished net.
With ``--progress-file F`` each finished net appends one JSON line to F: which evaluation it belongs to
(a key over the set's pixels and labels, the data, the protocol's recipe and the model), its seed, its
accuracy and its seconds. A rerun with the same F takes the nets it finds under its own key and trains only
the others; since every net has its own seed, the result is the one an uninterrupted run gives. One file
can hold many evaluations (a set and its random subsets, several protocols), each under its own key.

Lines are appended whole and flushed to disk one by one, so a crash can at worst cut the last line short;
reading skips a line that does not parse (that net is trained again). Nothing in the file is executed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .errors import InvalidParameterError
from .methods.extractor import content_hash, fingerprint

logger = logging.getLogger(__name__)


def evaluation_key(what: dict[str, Any], dataset, recipe, protocol: str, model: str, dropout: float) -> str:
    """The key of one evaluation: ``what`` is judged (the set's fingerprint, or "random" and its size), on
    ``dataset`` (its test split's content and its training labels: another holdout split differs in both), by
    ``model`` nets trained with ``recipe`` (epochs, augmentation, precision, ...)."""
    return content_hash({"what": what, "dataset": dataset.name,
                         "test": fingerprint(dataset.test.images, dataset.test.labels, dataset.classes),
                         "train_labels": content_hash(dataset.train.labels.tolist()), "recipe": asdict(recipe),
                         "protocol": protocol, "model": model, "dropout": dropout})


class NetLedger:
    """The finished nets of one evaluation (``key``) in a JSON-lines file shared with other evaluations."""

    def __init__(self, path: str | Path, key: str) -> None:
        self.path = Path(path)
        self.key = key
        if self.path.exists() and not self.path.is_file():
            raise InvalidParameterError(f"--progress-file {self.path} is not a file; name a file (it is created).")

    def finished(self) -> dict[int, tuple[float, float]]:
        """Net seed -> (accuracy in %, seconds) for this evaluation's nets already in the file."""
        if not self.path.exists():
            return {}
        found = {}
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                row = json.loads(line)
                if row["key"] == self.key:
                    found[int(row["seed"])] = (float(row["accuracy"]), float(row["seconds"]))
            except (ValueError, KeyError, TypeError):
                logger.warning("%s line %d is not a finished net (cut short by a crash?); skipped", self.path, number)
        return found

    def record(self, seed: int, accuracy: float, seconds: float) -> None:
        line = json.dumps({"key": self.key, "seed": seed, "accuracy": accuracy, "seconds": seconds}) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as file:
                file.seek(-1, os.SEEK_END)
                if file.read(1) != b"\n":  # a line cut short by a crash: end it, so this one stays whole
                    line = "\n" + line
        # one write of a whole short line in append mode: processes sharing the file (torchrun ranks) do not
        # interleave, and a crash can only cut the last line short
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
