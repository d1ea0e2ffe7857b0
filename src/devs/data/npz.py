"""``.npz`` arrays -> a dataset: the ``.npz`` loader's format, also the ImageFolder cache's.

Files are read with ``allow_pickle=False``; the layout of the arrays is checked before use.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .dataset import ImageDataset, _split

_NPZ_LAYOUT = (
    "expected keys x_train and x_test (uint8 [N, H, W] or [N, H, W, C] with C 1 or 3), "
    "y_train and y_test (integer [N]), and optionally classes (unicode strings [K])"
)
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz file, refusing pickled (object) arrays."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise DatasetError(f"{path} is a single array, not a .npz archive; {_NPZ_LAYOUT}")
            missing = [key for key in _NPZ_KEYS if key not in npz.files]
            if missing:
                raise DatasetError(
                    f"{path} lacks {', '.join(missing)} "
                    f"(it has {', '.join(npz.files) or 'nothing'}); {_NPZ_LAYOUT}"
                )
            return {key: npz[key] for key in (*_NPZ_KEYS, "classes") if key in npz.files}
    except ValueError as exc:
        raise DatasetError(
            f"{path} holds pickled object arrays, which devs refuses to load ({exc}); {_NPZ_LAYOUT}"
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot read {path}: {exc}; it is not a valid .npz file") from exc


def _dataset_from_arrays(name: str, arrays: dict[str, np.ndarray], source: str) -> ImageDataset:
    """Build a dataset from channels-last uint8 images and integer labels, checking the layout."""
    splits = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        channels_ok = x.ndim == 3 or (x.ndim == 4 and x.shape[3] in (1, 3))
        if x.dtype != np.uint8 or not channels_ok:
            raise DatasetError(f"{source}: x_{split} is {x.dtype} {x.shape}; {_NPZ_LAYOUT}")
        if y.dtype.kind not in "iu" or y.shape != (len(x),):
            raise DatasetError(
                f"{source}: y_{split} is {y.dtype} {y.shape} for {len(x)} images; {_NPZ_LAYOUT}"
            )
        splits[split] = (x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2), y)
    if "classes" in arrays:
        classes = arrays["classes"]
        if classes.dtype.kind != "U" or classes.ndim != 1:
            raise DatasetError(
                f"{source}: classes is {classes.dtype} {classes.shape}; {_NPZ_LAYOUT}"
            )
        class_names = tuple(str(c) for c in classes)
    else:
        labels = [y for _, y in splits.values() if len(y)]
        num_classes = max(int(y.max()) for y in labels) + 1 if labels else 0
        class_names = tuple(str(k) for k in range(num_classes))
    return ImageDataset(name, class_names, _split(*splits["train"]), _split(*splits["test"]))
