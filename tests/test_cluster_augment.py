import numpy as np
import pytest
import torch

from devs.augment import mixup, random_flip, random_shift
from devs.cluster import _fill_empty_clusters, cluster_means, kmeans_assign, match_contrast
from devs.errors import InvalidParameterError


def test_kmeans_gives_exactly_k_nonempty_clusters_and_is_seeded():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(c, 0.1, size=(30, 5)) for c in range(4)]).astype(np.float32)
    labels = kmeans_assign(features, 4, seed=0)
    assert labels.shape == (120,) and sorted(np.unique(labels)) == [0, 1, 2, 3]
    # well separated blobs: every blob lands in one cluster
    assert all(len(np.unique(labels[i * 30 : (i + 1) * 30])) == 1 for i in range(4))
    assert np.array_equal(labels, kmeans_assign(features, 4, seed=0))
    assert np.array_equal(kmeans_assign(features, 120, seed=0), np.arange(120))
    with pytest.raises(InvalidParameterError, match="Cannot make 121 clusters"):
        kmeans_assign(features, 121, seed=0)


def test_fill_empty_clusters_moves_the_farthest_point():
    features = np.array([[0.0], [0.1], [0.2], [5.0]], dtype=np.float32)
    filled = _fill_empty_clusters(features, np.zeros(4, dtype=np.int64), 2)
    assert filled.tolist() == [0, 0, 0, 1]


def test_cluster_means_are_means():
    images = torch.arange(24, dtype=torch.float32).reshape(4, 1, 2, 3)
    targets = torch.eye(2)[[0, 0, 1, 1]]
    means, labels = cluster_means(images, targets, np.array([1, 0, 1, 0]), 2)
    assert torch.allclose(means[0], (images[1] + images[3]) / 2)
    assert torch.allclose(means[1], (images[0] + images[2]) / 2)
    assert torch.allclose(labels, torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    with pytest.raises(InvalidParameterError, match="empty cluster"):
        cluster_means(images, targets, np.array([0, 0, 0, 0]), 2)


def test_restored_contrast_is_the_members_average_and_keeps_brightness():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 8, 8, generator=generator)
    targets = torch.eye(2)[[0, 0, 0, 1, 1, 1]]
    assignments = np.array([0, 0, 0, 1, 1, 2])
    plain, labels = cluster_means(images, targets, assignments, 3)
    restored, same_labels = cluster_means(images, targets, assignments, 3, restore_contrast=True)
    assert torch.equal(labels, same_labels)
    spread = lambda x: x.flatten(2).std(2)  # noqa: E731 (per image and channel)
    # a mean of independent noise images is flatter than its members; restored, it has their average spread
    assert bool((spread(plain[:1]) < 0.8 * spread(images[:3]).mean(0)).all())
    assert torch.allclose(spread(restored[:1]), spread(images[:3]).mean(0, keepdim=True), atol=1e-5)
    assert torch.allclose(spread(restored[1:2]), spread(images[3:5]).mean(0, keepdim=True), atol=1e-5)
    assert torch.allclose(restored.mean((2, 3)), plain.mean((2, 3)), atol=1e-6)  # brightness kept
    assert torch.allclose(restored[2], images[5], atol=1e-6)  # a cluster of one is its member
    # the pattern is the mean's, only stretched: perfectly correlated with it
    centred = lambda x: (x - x.mean()).flatten()  # noqa: E731
    assert torch.corrcoef(torch.stack([centred(plain[0, 0]), centred(restored[0, 0])]))[0, 1] > 0.9999


def test_match_contrast_leaves_a_flat_channel_alone():
    flat = torch.full((1, 2, 4, 4), 0.3)
    assert torch.equal(match_contrast(flat, torch.tensor([[0.2, 0.1]])), flat)


def test_random_shift_moves_content_by_at_most_max_shift():
    generator = torch.Generator().manual_seed(0)
    image = torch.zeros(64, 1, 16, 16)
    image[:, :, 8, 8] = 1.0
    shifted = random_shift(image, 3, generator)
    positions = torch.nonzero(shifted[:, 0] == 1.0)
    assert len(positions) == 64  # the bright pixel is never shifted out of a 16x16 image by <= 3 px
    assert (positions[:, 1:] - 8).abs().max() <= 3
    assert len({tuple(p[1:].tolist()) for p in positions}) > 5  # offsets differ per image
    assert random_shift(image, 0, generator) is image


def test_random_flip_flips_about_half():
    generator = torch.Generator().manual_seed(0)
    images = torch.arange(4.0).repeat(200, 1, 4, 1)  # rows 0 1 2 3
    flipped = random_flip(images, generator)
    was_flipped = flipped[:, 0, 0, 0] == 3.0
    assert 60 < int(was_flipped.sum()) < 140
    assert torch.equal(flipped[was_flipped], images[was_flipped].flip(-1))


def test_mixup_is_a_convex_combination_with_matching_labels():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(32, 3, 4, 4)
    targets = torch.eye(4)[torch.arange(32) % 4]
    mixed, mixed_targets = mixup(images, targets, 0.4, generator, np.random.default_rng(0))
    assert torch.allclose(mixed_targets.sum(1), torch.ones(32))
    assert mixed.min() >= images.min() - 1e-6 and mixed.max() <= images.max() + 1e-6
    assert mixup(images, targets, 0.0, generator, np.random.default_rng(0))[0] is images


@pytest.mark.parametrize("backend, setting", [("torch", {"batch_size": 64}), ("faiss", {"tol": 1e-3}),
                                              ("faiss", {"batch_size": 64})])
def test_a_backend_warns_about_a_setting_it_does_not_use(backend, setting):
    if backend == "faiss":
        pytest.importorskip("faiss")
    features = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match=f"ignores {next(iter(setting))}"):
        kmeans_assign(features, 3, seed=0, backend=backend, **setting)


def test_the_default_settings_and_the_honoured_ones_do_not_warn(recwarn):
    features = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    kmeans_assign(features, 3, seed=0, backend="torch", max_iter=5, tol=1e-2)
    kmeans_assign(features, 3, seed=0, backend="sklearn", batch_size=64, tol=1e-2)
    assert not [w for w in recwarn if "ignores" in str(w.message)]


def test_faiss_runs_the_iterations_asked_for(monkeypatch):
    faiss = pytest.importorskip("faiss")
    asked = {}
    original = faiss.Kmeans

    def spy(*args, **kwargs):
        asked.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(faiss, "Kmeans", spy)
    kmeans_assign(np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32), 3, seed=0, backend="faiss",
                  max_iter=300)
    assert asked["niter"] == 300  # no silent cap


def test_mixup_mixes_images_and_labels_with_one_weight_and_one_partner():
    # image i is the constant i and its label is class i, so each mixed label row says which two images,
    # in which proportions, its image must be made of
    images = torch.arange(32, dtype=torch.float32).view(32, 1, 1, 1).expand(32, 3, 4, 4).contiguous()
    targets = torch.eye(32)
    for seed in range(5):
        mixed, mixed_targets = mixup(images, targets, 0.4, torch.Generator().manual_seed(seed),
                                     np.random.default_rng(seed))
        expected = mixed_targets @ torch.arange(32, dtype=torch.float32)
        assert torch.allclose(mixed[:, 0, 0, 0], expected, atol=1e-5)
        assert torch.allclose(mixed.flatten(1), mixed[:, :1, :1, :1].flatten(1).expand(32, 48), atol=1e-6)
        partners = (mixed_targets > 0).sum(1)
        assert bool((partners <= 2).all()) and len(set(mixed_targets.max(1).values.round(decimals=5).tolist())) <= 2
