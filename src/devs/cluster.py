"""Clustering of feature vectors and per-cluster means (the DEvS "crossover").

k-means comes from scikit-learn's MiniBatchKMeans (the paper's choice), from torch (k-means++ and full-batch
Lloyd iterations on the device: large k on a GPU in seconds) or, optionally, faiss.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import torch

from .distributed import Group
from .errors import InvalidParameterError
from .registry import Registry
from .store import ArrayStore

logger = logging.getLogger(__name__)

KMEANS_BACKENDS: Registry = Registry("k-means backend")
# The settings a backend has no use for, and why; a value other than its default (_DEFAULTS, the paper's,
# which kmeans_assign's signature uses) warns.
_DEFAULTS = {"batch_size": 1028, "tol": 1e-4}
_UNUSED_SETTINGS = {
    "torch": {"batch_size": "it runs full-batch Lloyd iterations"},
    "faiss": {"batch_size": "it runs full-batch Lloyd iterations", "tol": "it stops after max_iter iterations only"},
}


@KMEANS_BACKENDS.register("sklearn")
def _sklearn_kmeans(features: np.ndarray, k: int, seed: int, batch_size: int, max_iter: int, tol: float,
                    device: torch.device) -> np.ndarray:
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(
        n_clusters=k,
        init="k-means++",
        max_iter=max_iter,
        tol=tol,
        batch_size=batch_size,
        n_init=1,
        random_state=seed,
    )
    return model.fit_predict(features)


@KMEANS_BACKENDS.register("faiss")
def _faiss_kmeans(features: np.ndarray, k: int, seed: int, batch_size: int, max_iter: int, tol: float,
                  device: torch.device) -> np.ndarray:
    try:
        import faiss
    except ImportError:
        raise InvalidParameterError(
            "The faiss k-means backend needs the faiss package: pip install faiss-cpu (or faiss-gpu)."
        ) from None
    # faiss subsamples to max_points_per_centroid * k points and fixes seed=1234 unless told otherwise.
    # faiss-gpu builds cluster on the GPU when one is visible; faiss-cpu builds report no GPUs.
    on_gpu = bool(getattr(faiss, "get_num_gpus", lambda: 0)())
    kmeans = faiss.Kmeans(
        features.shape[1], k, niter=max_iter, seed=seed, max_points_per_centroid=len(features),
        verbose=False, gpu=on_gpu,
    )
    kmeans.train(features)
    _, assignments = kmeans.index.search(features, 1)
    return assignments[:, 0].astype(np.int64)


# Distances are computed for this many (point, centre) pairs at a time: 256 MiB of float32.
_DISTANCE_CHUNK = 2**26


def _squared_distances(points: torch.Tensor, point_norms: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """[len(points), len(centres)] squared distances, as |x|^2 - 2 x.c + |c|^2 (one matrix product; the norms
    of the points are computed once by the caller). About 5x faster on a CPU than torch.cdist here."""
    products = torch.addmm(point_norms[:, None], points, centres.T, alpha=-2)
    return products.add_((centres * centres).sum(1)).clamp_min_(0)


def _nearest(points: torch.Tensor, point_norms: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The index of the nearest of ``centres`` for every row of ``points``."""
    rows = max(1, _DISTANCE_CHUNK // len(centres))
    return torch.cat([_squared_distances(part, norms, centres).argmin(1)
                      for part, norms in zip(points.split(rows), point_norms.split(rows))])


def _kmeans_plus_plus(points: torch.Tensor, point_norms: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding (scikit-learn's rule: 2 + log k candidates per centre, keep the best)."""
    trials = 2 + int(math.log(k))
    n = len(points)
    first = torch.randint(n, (1,), generator=generator, device=points.device)
    centres = [points[first]]
    closest = _squared_distances(points, point_norms, points[first])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: any point will do (empty clusters are filled later)
            candidates = torch.randint(n, (trials,), generator=generator, device=points.device)
        else:
            candidates = torch.multinomial(closest / total, trials, replacement=True, generator=generator)
        distances = _squared_distances(points, point_norms, points[candidates]).T  # [trials, n]
        pot = torch.minimum(distances, closest).sum(1)
        best = int(pot.argmin())
        closest = torch.minimum(closest, distances[best])
        centres.append(points[candidates[best : best + 1]])
    return torch.cat(centres)


@KMEANS_BACKENDS.register("torch")
def _torch_kmeans(features: np.ndarray, k: int, seed: int, batch_size: int, max_iter: int, tol: float,
                  device: torch.device) -> np.ndarray:
    """k-means++ seeding, then full-batch Lloyd iterations on ``device`` until the assignments stop changing,
    the centres move less than ``tol`` times the features' mean variance (scikit-learn's KMeans rule), or
    ``max_iter`` iterations. Every point is used in every iteration, so ``batch_size`` does not apply."""
    points = torch.as_tensor(features, device=device)
    point_norms = (points * points).sum(1)
    generator = torch.Generator(device=points.device).manual_seed(seed)
    centres = _kmeans_plus_plus(points, point_norms, k, generator)
    threshold = tol * float(points.var(0).mean())
    previous = None
    for _ in range(max_iter):
        assignments = _nearest(points, point_norms, centres)
        if previous is not None and torch.equal(assignments, previous):
            break  # a fixed point: the centres below would be the same again
        previous = assignments
        counts = torch.bincount(assignments, minlength=k).to(points.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assignments, points)
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        shift = float(((moved - centres) ** 2).sum())
        centres = moved
        if shift <= threshold:
            break
    return _nearest(points, point_norms, centres).cpu().numpy().astype(np.int64)


def _fill_empty_clusters(features: np.ndarray, assignments: np.ndarray, k: int) -> np.ndarray:
    """Give every empty cluster one point, taken from the largest cluster, so exactly k clusters come out.

    The point moved is the one farthest from its cluster's centroid: the worst-represented member.
    """
    assignments = assignments.copy()
    counts = np.bincount(assignments, minlength=k)
    for empty in np.flatnonzero(counts == 0):
        largest = int(np.argmax(counts))
        members = np.flatnonzero(assignments == largest)
        centroid = features[members].mean(axis=0)
        farthest = members[np.argmax(((features[members] - centroid) ** 2).sum(axis=1))]
        assignments[farthest] = empty
        counts[largest] -= 1
        counts[empty] += 1
    return assignments


def kmeans_assign(
    features: np.ndarray | torch.Tensor,
    k: int,
    seed: int,
    backend: str = "sklearn",
    batch_size: int = _DEFAULTS["batch_size"],
    max_iter: int = 200,
    tol: float = _DEFAULTS["tol"],
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Cluster ``features`` [N, D] into exactly ``k`` non-empty clusters; returns int64 labels [N].

    ``device`` is where the torch backend computes (the others run where their library does). A setting the
    backend does not use (``batch_size`` for torch and faiss, ``tol`` for faiss) warns when it is not the default."""
    features = np.ascontiguousarray(torch.as_tensor(features).float().cpu().numpy())
    n = len(features)
    if not 1 <= k <= n:
        raise InvalidParameterError(f"Cannot make {k} clusters from {n} samples; k must be in [1, {n}].")
    given = {"batch_size": batch_size, "tol": tol}
    for name, why in _UNUSED_SETTINGS.get(backend, {}).items():
        if given[name] != _DEFAULTS[name]:
            warnings.warn(f"The {backend} k-means backend ignores {name}={given[name]} ({why}); use the sklearn "
                          "backend for mini-batch k-means with that setting.", stacklevel=2)
    if k == n:
        return np.arange(n, dtype=np.int64)
    assignments = KMEANS_BACKENDS.get(backend)(features, k, seed, batch_size, max_iter, tol, torch.device(device))
    return _fill_empty_clusters(features, np.asarray(assignments, dtype=np.int64), k)


def nearest_rows(features: torch.Tensor, assignments: torch.Tensor, k: int) -> torch.Tensor:
    """For each of the ``k`` clusters of ``features`` (``assignments``: a cluster per row, none empty), the row
    of the member nearest the cluster's mean feature vector (DEvS's medoids, DREAM's representatives)."""
    centroids, _ = cluster_means(features, features[:, :1], assignments, k)
    distance = ((features - centroids[assignments]) ** 2).sum(1)
    order = torch.argsort(distance)
    order = order[torch.argsort(assignments[order], stable=True)]  # by cluster, nearest first
    sizes = torch.bincount(assignments, minlength=k)
    return order[torch.cumsum(sizes, 0) - sizes]  # the first (nearest) row of each cluster


def cluster_means(
    images: torch.Tensor | ArrayStore,
    targets: torch.Tensor,
    assignments: np.ndarray | torch.Tensor,
    k: int,
    group: Group | None = None,
    chunk_rows: int = 1024,
    restore_contrast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean image and mean label row of each of the ``k`` clusters (every cluster must be non-empty).

    ``restore_contrast``: rescale each mean image to the average contrast of its members (``match_contrast``):
    a mean of many images is flatter than any of them, which batch-norm networks trained on it pay for.

    Running float64 sums over ``chunk_rows`` rows at a time, so ``images`` may be an ArrayStore larger
    than memory: memory grows with k and the chunk, not with the data set. With an active ``group``
    each rank sums its own share of the rows and the sums are added across ranks.
    """
    group = group or Group()
    index = torch.as_tensor(assignments, dtype=torch.long).cpu()
    if len(index) != len(images) or len(index) != len(targets):
        raise InvalidParameterError(f"{len(images)} images, {len(targets)} label rows and {len(index)} assignments must match.")
    counts = torch.bincount(index, minlength=k).double()
    if bool((counts == 0).any()):
        raise InvalidParameterError("cluster_means got an empty cluster; assignments must cover all k clusters.")
    image_sums = torch.zeros((k, *images.shape[1:]), dtype=torch.float64)
    target_sums = torch.zeros((k, targets.shape[1]), dtype=torch.float64)
    spread_sums = torch.zeros((k, images.shape[1]), dtype=torch.float64)  # per-channel pixel std of each member
    mine = group.rows(len(index))
    for start in range(mine.start, mine.stop, chunk_rows):
        rows = slice(start, min(start + chunk_rows, mine.stop))
        chunk = images[rows].cpu().double()
        image_sums.index_add_(0, index[rows], chunk)
        target_sums.index_add_(0, index[rows], targets[rows].cpu().double())
        if restore_contrast:
            spread_sums.index_add_(0, index[rows], chunk.flatten(2).std(2))
    image_sums, target_sums = group.all_reduce_sum(image_sums), group.all_reduce_sum(target_sums)
    mean_images = image_sums / counts.view(-1, *([1] * (image_sums.dim() - 1)))
    mean_targets = target_sums / counts[:, None]
    if restore_contrast:
        mean_images = match_contrast(mean_images, group.all_reduce_sum(spread_sums) / counts[:, None])
    return mean_images.float(), mean_targets.float()


def match_contrast(images: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """``images`` (N, C, ...) with each channel's deviation from its own mean scaled so that its standard
    deviation over the pixels equals ``spread`` (N, C); each channel's mean (its brightness) is kept. A flat
    channel (no deviation to scale) stays as it is."""
    flat = images.flatten(2)
    centre = flat.mean(2, keepdim=True)
    current = flat.std(2, keepdim=True)
    gain = torch.where(current > 1e-12, spread.to(flat.dtype)[..., None] / current.clamp_min(1e-12), 1.0)
    return (centre + gain * (flat - centre)).view_as(images)
