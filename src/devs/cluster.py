"""Clustering of feature vectors and per-cluster means (the DEvS "crossover").

k-means comes from scikit-learn's MiniBatchKMeans (the paper's choice) or, optionally, faiss.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .distributed import Group
from .errors import InvalidParameterError
from .registry import Registry
from .store import ArrayStore

logger = logging.getLogger(__name__)

KMEANS_BACKENDS: Registry = Registry("k-means backend")


@KMEANS_BACKENDS.register("sklearn")
def _sklearn_kmeans(features: np.ndarray, k: int, seed: int, batch_size: int, max_iter: int, tol: float) -> np.ndarray:
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
def _faiss_kmeans(features: np.ndarray, k: int, seed: int, batch_size: int, max_iter: int, tol: float) -> np.ndarray:
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
        features.shape[1], k, niter=min(max_iter, 50), seed=seed, max_points_per_centroid=len(features),
        verbose=False, gpu=on_gpu,
    )
    kmeans.train(features)
    _, assignments = kmeans.index.search(features, 1)
    return assignments[:, 0].astype(np.int64)


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
    batch_size: int = 1028,
    max_iter: int = 200,
    tol: float = 1e-4,
) -> np.ndarray:
    """Cluster ``features`` [N, D] into exactly ``k`` non-empty clusters; returns int64 labels [N]."""
    features = np.ascontiguousarray(torch.as_tensor(features).float().cpu().numpy())
    n = len(features)
    if not 1 <= k <= n:
        raise InvalidParameterError(f"Cannot make {k} clusters from {n} samples; k must be in [1, {n}].")
    if k == n:
        return np.arange(n, dtype=np.int64)
    assignments = KMEANS_BACKENDS.get(backend)(features, k, seed, batch_size, max_iter, tol)
    return _fill_empty_clusters(features, np.asarray(assignments, dtype=np.int64), k)


def cluster_means(
    images: torch.Tensor | ArrayStore,
    targets: torch.Tensor,
    assignments: np.ndarray | torch.Tensor,
    k: int,
    group: Group | None = None,
    chunk_rows: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean image and mean label row of each of the ``k`` clusters (every cluster must be non-empty).

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
    mine = group.rows(len(index))
    for start in range(mine.start, mine.stop, chunk_rows):
        rows = slice(start, min(start + chunk_rows, mine.stop))
        image_sums.index_add_(0, index[rows], images[rows].cpu().double())
        target_sums.index_add_(0, index[rows], targets[rows].cpu().double())
    image_sums, target_sums = group.all_reduce_sum(image_sums), group.all_reduce_sum(target_sums)
    mean_images = image_sums / counts.view(-1, *([1] * (image_sums.dim() - 1)))
    mean_targets = target_sums / counts[:, None]
    return mean_images.float(), mean_targets.float()
