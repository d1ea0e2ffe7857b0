"""Checkpoints of a pixel-matching run (DC, DM, devs+'s DM step), enough to continue it exactly.

After a finished iteration such a run is fully described by its synthetic images, the SGD momentum on
them, the state of the one random generator that draws everything else (real batches, the fresh nets'
seeds, augmentations) and the losses so far. The file holds those tensors and the run's key; loading it
runs no code (safetensors). A resumed run on the CPU continues bit for bit where the saved one stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..runtime import atomic_path

logger = logging.getLogger(__name__)

FORMAT = "devs.matching-progress.v1"


@dataclass
class MatchingProgress:
    images: torch.Tensor  # the synthetic images in normalised units
    momentum: torch.Tensor | None  # SGD's momentum buffer on the images (None before the first step)
    generator_state: torch.Tensor  # uint8, torch.Generator.get_state()
    losses: torch.Tensor  # float32, one value per finished iteration
    elapsed_s: float = 0.0  # seconds the run had spent when saved (its clock for time_budget_s and snapshots)

    @property
    def iterations_done(self) -> int:
        return len(self.losses)


def save_progress(path: Path, key: str, progress: MatchingProgress) -> None:
    """Write ``progress`` to ``path`` atomically (a crash while saving keeps the previous file)."""
    tensors = {"images": progress.images, "generator_state": progress.generator_state, "losses": progress.losses}
    if progress.momentum is not None:
        tensors["momentum"] = progress.momentum
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    with atomic_path(path) as temp_path:
        save_file(tensors, str(temp_path), metadata={"format": FORMAT, "key": key, "elapsed_s": repr(progress.elapsed_s)})


def load_progress(path: Path, key: str, images_shape: torch.Size) -> MatchingProgress | None:
    """The saved progress of the run with this exact ``key``, or None (no file, another run, a bad file)."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        logger.warning("Ignoring unreadable matching checkpoint %s (%s); starting afresh", path, error)
        return None
    if metadata.get("format") != FORMAT or metadata.get("key") != key:
        return None
    if not _well_formed(tensors, images_shape):
        logger.warning("Ignoring malformed matching checkpoint %s; starting afresh", path)
        return None
    return MatchingProgress(tensors["images"], tensors.get("momentum"), tensors["generator_state"],
                            tensors["losses"].float(), _seconds(metadata.get("elapsed_s")))


def _seconds(text: str | None) -> float:
    """The saved clock; 0 for files written before it was saved (or an unreadable value)."""
    try:
        seconds = float(text) if text is not None else 0.0
    except ValueError:
        return 0.0
    return seconds if seconds >= 0 and seconds != float("inf") else 0.0


def _well_formed(tensors: dict[str, torch.Tensor], images_shape: torch.Size) -> bool:
    """Every tensor a resume needs is there with the shape and type this run can take."""
    if not {"images", "generator_state", "losses"} <= tensors.keys():
        return False
    generator = tensors["generator_state"]
    momentum = tensors.get("momentum")
    return (tensors["images"].shape == images_shape and tensors["losses"].dim() == 1
            and (momentum is None or momentum.shape == images_shape)
            and generator.dtype == torch.uint8 and generator.shape == torch.Generator().get_state().shape)
