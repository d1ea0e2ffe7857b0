"""ZCA whitening of images, fitted on a training split: the transform MTT, FTD and DATM train on.

    zca = ZCA.from_dataset(devs.load_dataset("cifar10"))      # regularization 0.1, as MTT
    white = zca.whiten(images)                                 # float32 [B, C, H, W] -> same shape
    pixels = zca.unwhiten(white)                               # the exact inverse
    meta = zca.describe()                                      # JSON-able, stored next to a distilled set
    zca = check_matches(meta, dataset)                         # refit and verify; the fitted ZCA back

The rule, ``devs.zca.v1``, follows MTT (Cazenavette et al. 2022, ``utils.py: get_dataset``), which
fits ``kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)`` (kornia 0.6.3) on the training images
and applies it to train and test images. Written here with torch.linalg, no kornia:

* Input: the training split's float32 images ``[N, C, H, W]`` in pixel units [0, 1]. MTT loads them
  with ``transforms.ToTensor()`` *only* when ``--zca`` is given: no per-channel normalization before
  ZCA (its ``Normalize(mean, std)`` is used only without ``--zca``; DATM and FTD copy this). So the
  default here is ``normalize=False``. ``normalize=True`` first maps every image to
  ``(x - mean_c) / std_c`` with the train split's per-channel mean and population std (computed here
  in float64 from the images, not taken from a store's metadata), and ``unwhiten`` undoes that too.
  It is not what MTT does, and the absolute regularization then acts on a ~16x larger scale on CIFAR.
* Each image is flattened to a row of ``D = C*H*W`` values. Centred: ``mu`` is the mean image;
  covariance ``Sigma = (X - mu)^T (X - mu) / (N - 1)`` (kornia's default ``unbiased=True``).
* ``Sigma = U diag(S) U^T`` by ``torch.linalg.eigh`` in float64 (kornia uses an SVD of Sigma, whose
  singular values are the same for a symmetric positive semi-definite matrix; eigenvalues that come
  out a rounding error below zero are set to 0).
* Regularization: *absolute*, ``S + r`` (kornia's ``eps``; MTT ``r = 0.1``). KIP's preprocessing
  (``_get_whitening_transform`` of the neural-tangents KIP code, reused by later kernel methods)
  instead layer-normalizes every image, uses the uncentred ``X^T X / N`` and, by default, a *relative*
  strength ``r * trace(Sigma) / D``; devs does not.
* Whitening matrix ``W = U diag((S + r)^-1/2) U^T``; ``whiten(x) = (x - mu) W``.
  Inverse ``W^-1 = U diag((S + r)^1/2) U^T``; ``unwhiten(y) = y W^-1 + mu``. Both are symmetric.
  The whitened training images have covariance ``U diag(S / (S + r)) U^T``, not the identity.

Fitting reads the images in chunks of rows, so an on-disk ``ArrayStore`` (devs.store) works as well as
a tensor: two passes (mean and a SHA-256 of the float32 rows, then the covariance), the covariance
accumulated in float64. CIFAR-10 (50,000 x 3,072) needs ~0.5 GiB at the peak beyond the images. ``whiten`` and
``unwhiten`` take tensors (a store's batches, as the training loop reads them) and work through
``batch_size`` rows at a time in float32, on the input's device; they are differentiable.

Reproducing the transform: ``describe()`` names the rule, the regularization, whether the images were
normalized first, and the training images by their count, shape and SHA-256 (``train_sha256``: of the
C-order float32 bytes of the train images, row after row). Those inputs determine the transform, so
its fingerprint ``sha256`` is the SHA-256 of their canonical JSON. The whitening matrix itself is not
hashed: with millions of entries some entry always lands on a rounding boundary between two BLAS
builds, so a hash of rounded bytes would not be reproducible. ``checks`` instead holds three numbers
of the fitted spectrum that ``check_matches`` compares after a refit with a relative tolerance of
1e-6 (float64 noise is ~1e-12; a change of rule, such as N for N - 1, moves them by > 1e-5).

Fitting is deterministic, so fitted transforms are cached in memory by (train_sha256, shape,
regularization, normalize): a refit of the same data costs one hashing pass. ``clear_cache()`` empties it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch

from .errors import DistilledFileError, InvalidParameterError

RULE = "devs.zca.v1"
DEFAULT_REGULARIZATION = 0.1  # MTT's kornia ZCAWhitening(eps=0.1)
MAX_FEATURES = 12288  # 3 x 64 x 64 (Tiny ImageNet, which MTT also whitens): a 1.2 GB float64 covariance
CHUNK_ROWS = 2048  # rows per chunk while fitting: 2048 x 3072 float64 is 50 MB
CHECK_RTOL = 1e-6
_CACHE_SIZE = 2
_CACHE: "OrderedDict[tuple, ZCA]" = OrderedDict()

FITTED_ON = {
    False: "train split in pixel units [0, 1], not normalized (as MTT)",
    True: "train split after per-channel normalization (x - mean_c) / std_c, population std",
}


class ZCAMismatchError(InvalidParameterError):
    """A ZCA description does not match the transform refitted on the given dataset."""


def clear_cache() -> None:
    """Forget every fitted transform kept in memory."""
    _CACHE.clear()


def _check_regularization(regularization: Any) -> float:
    if isinstance(regularization, bool) or not isinstance(regularization, (int, float)):
        raise InvalidParameterError(
            f"ZCA regularization must be a number > 0 such as 0.1 (MTT's); got {regularization!r}."
        )
    value = float(regularization)
    if not math.isfinite(value) or value <= 0:
        raise InvalidParameterError(
            f"ZCA regularization must be a finite number > 0 such as 0.1 (MTT's); got {regularization!r}. "
            "It is added to every eigenvalue of the covariance, so 0 would divide by zero on constant pixels."
        )
    return value


def _check_images(images: Any, what: str) -> None:
    shape = getattr(images, "shape", None)
    if not isinstance(images, torch.Tensor) and not _is_store(images):
        raise InvalidParameterError(f"ZCA {what} takes a float tensor [N, C, H, W]; got {type(images).__name__}.")
    if shape is None or len(shape) != 4:
        raise InvalidParameterError(
            f"ZCA {what} takes images [N, C, H, W]; got shape {tuple(shape) if shape is not None else None}. "
            "Add a batch dimension with images[None] for a single image."
        )
    if isinstance(images, torch.Tensor) and not images.dtype.is_floating_point:
        raise InvalidParameterError(
            f"ZCA {what} takes float images in pixel units [0, 1]; got dtype {images.dtype}. "
            "Divide uint8 pixels by 255."
        )


def _is_store(images: Any) -> bool:
    from .store import ArrayStore

    return isinstance(images, ArrayStore)


def _rows(images: Any, start: int, stop: int) -> torch.Tensor:
    """Rows start:stop as float32 CPU [n, D] (a store reads them from disk)."""
    chunk = images[start:stop]
    return chunk.detach().to("cpu", torch.float32).reshape(stop - start, -1)


def _canonical(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ZCA:
    """A fitted ZCA whitening transform (rule ``devs.zca.v1``; see the module docstring).

    Build one with ``ZCA.fit(images)`` or ``ZCA.from_dataset(dataset)`` (the constructor takes the fitted
    arrays); treat it as immutable. Attributes: ``matrix`` W and ``inverse_matrix`` W^-1 (float32 [D, D]),
    ``mean`` mu (float32 [D]), ``eigenvalues`` S (float64 [D], ascending), ``regularization``,
    ``normalize``, ``channel_mean``/``channel_std`` (lists, or None), ``image_shape``, ``train_size``,
    ``train_sha256``, ``dataset``.
    """

    def __init__(self, *, mean: torch.Tensor, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor,
                 regularization: float, normalize: bool, channel_mean: list[float] | None,
                 channel_std: list[float] | None, image_shape: tuple[int, int, int], train_size: int,
                 train_sha256: str, dataset: str | None) -> None:
        self.regularization = float(regularization)
        self.normalize = bool(normalize)
        self.image_shape = tuple(int(x) for x in image_shape)
        self.train_size = int(train_size)
        self.train_sha256 = str(train_sha256)
        self.dataset = dataset
        self.channel_mean = list(channel_mean) if channel_mean is not None else None
        self.channel_std = list(channel_std) if channel_std is not None else None
        self.eigenvalues = eigenvalues.to(torch.float64)  # S, ascending, clamped at 0 (float64 [D])
        u = eigenvectors.to(torch.float64)
        scale = self.eigenvalues + self.regularization
        self.mean = mean.to(torch.float32).reshape(-1)  # mu, in the (normalized, if normalize) space [D]
        self.matrix = ((u * scale.rsqrt()) @ u.T).to(torch.float32)  # W  [D, D]
        self.inverse_matrix = ((u * scale.sqrt()) @ u.T).to(torch.float32)  # W^-1  [D, D]
        self._devices: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def __repr__(self) -> str:
        return (f"ZCA(dataset={self.dataset!r}, train_size={self.train_size}, image_shape={self.image_shape}, "
                f"regularization={self.regularization}, normalize={self.normalize})")

    # ---------------------------------------------------------------- fitting

    @classmethod
    def fit(cls, images: torch.Tensor, regularization: float = DEFAULT_REGULARIZATION, normalize: bool = False,
            dataset: str | None = None) -> "ZCA":
        """Fit on ``images`` (float32 [N, C, H, W] in pixel units, or an ArrayStore), read in chunks.

        ``dataset`` is only recorded (a name for people); the images are identified by their SHA-256.
        """
        regularization = _check_regularization(regularization)
        if not isinstance(normalize, bool):
            raise InvalidParameterError(f"ZCA normalize must be True or False; got {normalize!r}.")
        _check_images(images, "fitting")
        n, c, h, w = (int(x) for x in images.shape)
        features = c * h * w
        if n < 2:
            raise InvalidParameterError(f"ZCA needs at least 2 training images to estimate a covariance; got {n}.")
        if features > MAX_FEATURES:
            raise InvalidParameterError(
                f"ZCA of {c}x{h}x{w} images needs a {features}x{features} covariance, more than the "
                f"{MAX_FEATURES} features devs fits (3x64x64); resize the images (e.g. 'devs pack --size 32')."
            )

        # Pass 1: SHA-256 of the float32 rows, the mean image, per-channel sums of squares.
        digest = hashlib.sha256()
        total = torch.zeros(features, dtype=torch.float64)
        squares = torch.zeros(c, dtype=torch.float64)
        for start in range(0, n, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, n)
            rows = _rows(images, start, stop)
            digest.update(np.ascontiguousarray(rows.numpy()).tobytes())
            chunk_sum = rows.sum(0, dtype=torch.float64)
            if not bool(torch.isfinite(chunk_sum).all()):  # a NaN or an infinity anywhere reaches the sum
                raise InvalidParameterError(
                    f"ZCA cannot be fitted on images with NaN or infinite values (in rows {start}-{stop - 1}); "
                    "clean the data set first."
                )
            total += chunk_sum
            if normalize:
                squares += rows.reshape(stop - start, c, h * w).square().sum((0, 2), dtype=torch.float64)
        train_sha256 = digest.hexdigest()

        key = (train_sha256, (n, c, h, w), regularization, normalize)
        if key in _CACHE:
            _CACHE.move_to_end(key)
            cached = _CACHE[key]
            return cached if cached.dataset == dataset else cached._renamed(dataset)

        mean = total / n
        if normalize:
            channel_mean = mean.reshape(c, h * w).mean(1)
            channel_var = squares / (n * h * w) - channel_mean.square()
            channel_std = channel_var.clamp_min(0).sqrt()
            if bool((channel_std <= 0).any()):
                raise InvalidParameterError("ZCA normalize=True needs every channel to vary; a channel is constant.")
            feature_std = channel_std.repeat_interleave(h * w)
            mean_cpu = ((mean.reshape(c, h * w) - channel_mean[:, None]) / channel_std[:, None]).reshape(-1)
        else:
            channel_mean = channel_std = feature_std = None
            mean_cpu = mean

        # Pass 2: the centred covariance, accumulated in float64.
        cov = torch.zeros(features, features, dtype=torch.float64)
        for start in range(0, n, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, n)
            centred = _rows(images, start, stop).to(torch.float64) - mean
            cov.addmm_(centred.T, centred)
        cov /= n - 1
        if feature_std is not None:  # the covariance of (x - m_c) / s_c is D^-1 Sigma D^-1
            cov /= feature_std[:, None] * feature_std[None, :]
        cov = (cov + cov.T) / 2  # exactly symmetric, whatever the BLAS did
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        del cov
        zca = cls(mean=mean_cpu, eigenvalues=eigenvalues.clamp_min(0), eigenvectors=eigenvectors,
                  regularization=regularization, normalize=normalize,
                  channel_mean=channel_mean.tolist() if channel_mean is not None else None,
                  channel_std=channel_std.tolist() if channel_std is not None else None,
                  image_shape=(c, h, w), train_size=n, train_sha256=train_sha256, dataset=dataset)
        _CACHE[key] = zca
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return zca

    @classmethod
    def from_dataset(cls, dataset: Any, regularization: float = DEFAULT_REGULARIZATION,
                     normalize: bool = False) -> "ZCA":
        """Fit on ``dataset.train.images`` (an ImageDataset; in memory or a store), deterministically."""
        return cls.fit(dataset.train.images, regularization=regularization, normalize=normalize,
                       dataset=getattr(dataset, "name", None))

    def _renamed(self, dataset: str | None) -> "ZCA":
        twin = object.__new__(ZCA)
        twin.__dict__.update(self.__dict__)
        twin.dataset = dataset
        twin._devices = self._devices
        return twin

    # ---------------------------------------------------------------- applying

    def _on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._devices:
            shift = torch.tensor(self.channel_mean or [0.0] * self.image_shape[0], dtype=torch.float32)
            scale = torch.tensor(self.channel_std or [1.0] * self.image_shape[0], dtype=torch.float32)
            self._devices[device] = tuple(t.to(device) for t in (
                self.mean, self.matrix, self.inverse_matrix, shift[None, :, None, None], scale[None, :, None, None]))
        return self._devices[device]

    def _check_batch(self, images: Any, what: str, check_finite: bool) -> None:
        _check_images(images, what)
        if not isinstance(images, torch.Tensor):
            raise InvalidParameterError(
                f"ZCA {what} takes a tensor; read a store a batch at a time (store[start:stop]) and pass each batch."
            )
        if tuple(images.shape[1:]) != self.image_shape:
            raise InvalidParameterError(
                f"This ZCA was fitted on {self.image_shape} images; got {tuple(images.shape[1:])}. "
                "Fit it on the dataset these images come from."
            )
        if check_finite and images.numel() and not bool(torch.isfinite(images).all()):
            raise InvalidParameterError(f"ZCA {what} got images with NaN or infinite values.")

    def whiten(self, images: torch.Tensor, batch_size: int = 4096, check_finite: bool = True) -> torch.Tensor:
        """``(x - mu) W`` for float images [B, C, H, W] in pixel units; float32, same shape and device.

        ``check_finite=False`` skips the NaN check (it synchronizes a GPU); ``__call__`` does that.
        """
        self._check_batch(images, "whiten", check_finite)
        mean, matrix, _, shift, scale = self._on(images.device)
        out = []
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(torch.float32)
            if self.normalize:
                x = (x - shift) / scale
            out.append(((x.reshape(x.shape[0], -1) - mean) @ matrix).reshape(x.shape))
        return torch.cat(out) if len(out) != 1 else out[0]

    def unwhiten(self, images: torch.Tensor, batch_size: int = 4096, check_finite: bool = True) -> torch.Tensor:
        """The inverse of ``whiten``: ``y W^-1 + mu`` (then ``* std_c + mean_c`` if normalized); pixel units."""
        self._check_batch(images, "unwhiten", check_finite)
        mean, _, inverse, shift, scale = self._on(images.device)
        out = []
        for start in range(0, images.shape[0], batch_size):
            y = images[start : start + batch_size].to(torch.float32)
            x = ((y.reshape(y.shape[0], -1) @ inverse) + mean).reshape(y.shape)
            out.append(x * scale + shift if self.normalize else x)
        return torch.cat(out) if len(out) != 1 else out[0]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``whiten`` without the NaN check: a drop-in for ``devs.train.Normalizer`` in a training loop."""
        return self.whiten(images, check_finite=False)

    # ---------------------------------------------------------------- describing

    def checks(self) -> dict[str, float]:
        """Three numbers of the fitted spectrum, compared with a relative tolerance after a refit."""
        s, r = self.eigenvalues, self.regularization
        return {
            "trace_covariance": float(s.sum()),  # sum S
            "top_eigenvalue": float(s.max()),  # max S
            "trace_whitening": float((s + r).rsqrt().sum()),  # trace W = sum (S + r)^-1/2
        }

    def _identity(self) -> dict[str, Any]:
        return {"rule": RULE, "regularization": self.regularization, "normalize": self.normalize,
                "image_shape": list(self.image_shape), "train_size": self.train_size,
                "train_sha256": self.train_sha256}

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of what determines the transform (see the module docstring)."""
        return _canonical(self._identity())

    def describe(self) -> dict[str, Any]:
        """A JSON-able description from which anyone holding the training images can refit this transform."""
        return {
            **self._identity(),
            "regularization_rule": "absolute: eigenvalues S + regularization (kornia eps, as MTT)",
            "fitted_on": FITTED_ON[self.normalize],
            "centred": True,
            "covariance": "(X - mean)^T (X - mean) / (N - 1)",
            "channel_mean": self.channel_mean,
            "channel_std": self.channel_std,
            "dataset": self.dataset,
            "sha256": self.fingerprint(),
            "checks": self.checks(),
        }


_REQUIRED = {"rule": str, "regularization": (int, float), "normalize": bool, "image_shape": list,
             "train_size": int, "train_sha256": str, "sha256": str, "checks": dict}


def _validate(description: Any) -> None:
    if not isinstance(description, Mapping):
        raise DistilledFileError(f"A ZCA description is a JSON object; got {type(description).__name__}.")
    if description.get("rule") != RULE:
        raise DistilledFileError(
            f"ZCA rule {description.get('rule')!r} is not one this devs knows ({RULE!r}); upgrade devs to read it."
        )
    for key, kind in _REQUIRED.items():
        value = description.get(key)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise DistilledFileError(f"The ZCA description's {key!r} is missing or malformed ({value!r}).")
    if _canonical({key: description[key] for key in
                   ("rule", "regularization", "normalize", "image_shape", "train_size", "train_sha256")}) \
            != description["sha256"]:
        raise DistilledFileError("The ZCA description's sha256 does not match its own fields; the file was altered.")


def check_matches(description: Mapping[str, Any], dataset: Any, regularization: float | None = None,
                  normalize: bool | None = None) -> ZCA:
    """Refit ``description``'s transform on ``dataset``'s train split; raise unless it is the same. Returns it.

    Raises DistilledFileError for a malformed description, ZCAMismatchError (an InvalidParameterError)
    when the dataset's training images, or the refitted spectrum, differ from the description's, or when
    ``regularization`` / ``normalize`` are given (what the caller asked for) and differ from the recorded ones.
    The dataset's *name* is not compared (a moved file keeps its images); its images are.
    """
    _validate(description)
    if regularization is not None and _check_regularization(regularization) != float(description["regularization"]):
        raise ZCAMismatchError(
            f"The file's images were whitened with ZCA regularization {description['regularization']}, not "
            f"{regularization}; evaluate with {description['regularization']} (or distill again)."
        )
    if normalize is not None and bool(normalize) != description["normalize"]:
        raise ZCAMismatchError(
            f"The file's ZCA was fitted with normalize={description['normalize']}, not {bool(normalize)}."
        )
    images = dataset.train.images
    shape = [int(x) for x in images.shape[1:]]
    name = getattr(dataset, "name", None)
    if shape != list(description["image_shape"]) or len(images) != description["train_size"]:
        raise ZCAMismatchError(
            f"The ZCA was fitted on {description['train_size']} training images of shape "
            f"{tuple(description['image_shape'])} ({description.get('dataset')!r}); dataset {name!r} has "
            f"{len(images)} of shape {tuple(shape)}. Use the dataset the file was made from."
        )
    try:
        zca = ZCA.from_dataset(dataset, regularization=float(description["regularization"]),
                               normalize=description["normalize"])
    except InvalidParameterError as error:
        raise ZCAMismatchError(f"The ZCA description cannot be refitted on {name!r}: {error}") from None
    if zca.train_sha256 != description["train_sha256"]:
        raise ZCAMismatchError(
            f"The ZCA was fitted on other training images than dataset {name!r}'s (train SHA-256 "
            f"{description['train_sha256'][:12]}... vs {zca.train_sha256[:12]}...). Use the dataset the file was "
            "made from (same images, same order, same resolution)."
        )
    expected, got = description["checks"], zca.checks()
    for key, value in got.items():
        want = expected.get(key)
        if not isinstance(want, (int, float)) or not math.isclose(value, want, rel_tol=CHECK_RTOL, abs_tol=1e-12):
            raise ZCAMismatchError(
                f"Refitting the ZCA on {name!r} gives {key} = {value!r}, not the recorded {want!r}: the rule "
                f"{RULE} changed since the file was written. Refit with the devs version that wrote it."
            )
    return zca
