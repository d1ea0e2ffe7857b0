"""ZCA whitening (devs.zca): exact inverse, the whitened covariance, descriptions and refusals."""

import json

import pytest
import torch

import devs
from devs.data import ImageDataset, ImageSplit
from devs.errors import DistilledFileError, InvalidParameterError
from devs.zca import RULE, ZCA, ZCAMismatchError, _canonical, check_matches, clear_cache


def _random_dataset(n=300, shape=(3, 4, 4), seed=0, name="random"):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, *shape, generator=g) ** 2  # not symmetric around its mean
    labels = torch.arange(n) % 2
    split = ImageSplit(images, labels)
    return ImageDataset(name=name, classes=("a", "b"), train=split, test=split)


def _expected_whitened_covariance(images, regularization):
    """U diag(S / (S + r)) U^T from an independent float64 covariance of the flattened images."""
    flat = images.reshape(len(images), -1).double()
    s, u = torch.linalg.eigh(torch.cov(flat.T))  # torch.cov: centred, N - 1
    s = s.clamp_min(0)
    return (u * (s / (s + regularization))) @ u.T


@pytest.mark.parametrize("normalize", [False, True])
def test_whiten_then_unwhiten_is_the_identity(digits, normalize):
    data = _random_dataset()
    for dataset, others in ((data, torch.rand(50, 3, 4, 4)), (digits, digits.test.images)):
        zca = ZCA.from_dataset(dataset, normalize=normalize)
        for images in (dataset.train.images, others):
            white = zca.whiten(images, batch_size=64)  # several batches
            assert white.shape == images.shape and white.dtype == torch.float32
            torch.testing.assert_close(zca.unwhiten(white), images, atol=1e-4, rtol=0)
            torch.testing.assert_close(zca(images), white)  # __call__ is whiten


def test_whitened_training_data_has_the_shrunk_identity_covariance(digits):
    r = 0.1
    zca = ZCA.from_dataset(digits, regularization=r)
    white = zca.whiten(digits.train.images).reshape(len(digits.train.images), -1).double()
    expected = _expected_whitened_covariance(digits.train.images, r)
    torch.testing.assert_close(white.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cov(white.T), expected, atol=2e-5, rtol=0)
    # ... which is not the identity: the regularization shrinks the small-eigenvalue directions a lot.
    assert (torch.cov(white.T) - torch.eye(64, dtype=torch.float64)).abs().max() > 0.5
    # The matrix is kornia's U (S + eps)^-1/2 U^T (MTT's ZCAWhitening(eps=0.1)), from an SVD here.
    flat = digits.train.images.reshape(len(digits.train.images), -1).double()
    u, s, _ = torch.linalg.svd(torch.cov(flat.T))
    torch.testing.assert_close(zca.matrix.double(), (u * (s + r).rsqrt()) @ u.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(zca.inverse_matrix.double(), (u * (s + r).sqrt()) @ u.T, atol=1e-5, rtol=0)


def test_normalize_whitens_the_per_channel_normalized_images():
    data = _random_dataset()
    zca = ZCA.from_dataset(data, normalize=True)
    images = data.train.images
    std, mean = torch.std_mean(images.double(), dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(torch.tensor(zca.channel_mean, dtype=torch.float64), mean)
    torch.testing.assert_close(torch.tensor(zca.channel_std, dtype=torch.float64), std)
    normalized = (images.double() - mean[None, :, None, None]) / std[None, :, None, None]
    white = zca.whiten(images).reshape(len(images), -1).double()
    torch.testing.assert_close(torch.cov(white.T), _expected_whitened_covariance(normalized, 0.1), atol=2e-5, rtol=0)


def test_describe_and_from_dataset_round_trip(digits):
    zca = ZCA.from_dataset(digits, regularization=0.1)
    description = json.loads(json.dumps(zca.describe()))  # JSON-able
    assert description["rule"] == RULE and description["centred"] is True and description["normalize"] is False
    assert description["dataset"] == "digits" and description["train_size"] == len(digits.train.images)
    assert description["image_shape"] == [1, 8, 8] and description["regularization"] == 0.1
    assert "not normalized" in description["fitted_on"]
    clear_cache()  # a real refit, not the cached object
    again = ZCA.from_dataset(digits, regularization=0.1)
    assert again is not zca and again.describe()["sha256"] == description["sha256"]
    assert again.checks() == pytest.approx(description["checks"], rel=1e-9)
    torch.testing.assert_close(again.matrix, zca.matrix, atol=1e-6, rtol=0)
    assert check_matches(description, digits).describe() == again.describe()
    assert ZCA.from_dataset(digits, regularization=0.1) is again  # cached


def test_fitting_in_small_chunks_gives_the_same_transform(digits, monkeypatch):
    whole = ZCA.from_dataset(digits)
    clear_cache()
    monkeypatch.setattr("devs.zca.CHUNK_ROWS", 100)
    chunked = ZCA.from_dataset(digits)
    assert chunked.describe()["sha256"] == whole.describe()["sha256"]
    torch.testing.assert_close(chunked.matrix, whole.matrix, atol=1e-6, rtol=0)


def test_a_store_is_fitted_in_chunks_like_its_images_in_memory(digits, tmp_path):
    path = devs.pack_store(digits, tmp_path / "store", shard_rows=500, progress=False)
    stored = devs.load_dataset(str(path))
    from devs.store import ArrayStore

    assert isinstance(stored.train.images, ArrayStore)
    from_store = ZCA.from_dataset(stored)
    clear_cache()
    in_memory = ZCA.fit(stored.train.images[:], dataset=stored.name)
    assert from_store.describe() == in_memory.describe()
    batch = stored.train.images[0:10]
    torch.testing.assert_close(from_store.unwhiten(from_store.whiten(batch)), batch, atol=1e-4, rtol=0)
    with pytest.raises(InvalidParameterError, match="a batch at a time"):
        from_store.whiten(stored.train.images)


def test_check_matches_refuses_another_dataset_or_regularization(digits):
    description = ZCA.from_dataset(digits, regularization=0.1).describe()
    # Same name, same shape and size, other images (mirrored): the train SHA-256 differs.
    mirrored = ImageDataset(name="digits", classes=digits.classes, test=digits.test,
                            train=ImageSplit(digits.train.images.flip(-1), digits.train.labels))
    with pytest.raises(ZCAMismatchError, match="other training images"):
        check_matches(description, mirrored)
    with pytest.raises(ZCAMismatchError, match="shape"):
        check_matches(description, _random_dataset())
    with pytest.raises(ZCAMismatchError, match="regularization 0.1, not 0.2"):
        check_matches(description, digits, regularization=0.2)
    with pytest.raises(ZCAMismatchError, match="normalize"):
        check_matches(description, digits, normalize=True)
    assert check_matches(description, digits, regularization=0.1, normalize=False).regularization == 0.1
    # An edited regularization breaks the description's own fingerprint ...
    with pytest.raises(DistilledFileError, match="altered"):
        check_matches({**description, "regularization": 0.2}, digits)
    # ... and with a recomputed fingerprint, the refitted spectrum no longer matches the recorded one.
    forged = {**description, "regularization": 0.2}
    forged["sha256"] = _canonical({key: forged[key] for key in (
        "rule", "regularization", "normalize", "image_shape", "train_size", "train_sha256")})
    with pytest.raises(ZCAMismatchError, match="trace_whitening"):
        check_matches(forged, digits)
    assert issubclass(ZCAMismatchError, InvalidParameterError)


@pytest.mark.parametrize("broken", [
    {"rule": "devs.zca.v0"},
    {"train_sha256": None},
    {"normalize": 0},
    {"checks": []},
])
def test_a_malformed_description_is_a_file_error(digits, broken):
    description = {**ZCA.from_dataset(digits).describe(), **broken}
    with pytest.raises(DistilledFileError):
        check_matches(description, digits)
    with pytest.raises(DistilledFileError):
        check_matches("not a description", digits)


@pytest.mark.parametrize("regularization", [0, -0.1, float("nan"), float("inf"), True, "0.1", None])
def test_bad_regularization_is_refused(regularization):
    with pytest.raises(InvalidParameterError, match="regularization"):
        ZCA.fit(torch.rand(10, 1, 2, 2), regularization=regularization)


def test_bad_images_are_refused():
    with pytest.raises(InvalidParameterError, match=r"\[N, C, H, W\]"):
        ZCA.fit(torch.rand(10, 4, 4))
    with pytest.raises(InvalidParameterError, match="float"):
        ZCA.fit(torch.randint(0, 255, (10, 1, 4, 4), dtype=torch.uint8))
    with pytest.raises(InvalidParameterError, match="at least 2"):
        ZCA.fit(torch.rand(1, 1, 4, 4))
    with pytest.raises(InvalidParameterError, match="tensor"):
        ZCA.fit([[0.0]])
    with pytest.raises(InvalidParameterError, match="normalize"):
        ZCA.fit(torch.rand(10, 1, 2, 2), normalize="yes")
    images = torch.rand(10, 1, 4, 4)
    images[3, 0, 1, 2] = float("nan")
    with pytest.raises(InvalidParameterError, match="NaN"):
        ZCA.fit(images)
    with pytest.raises(InvalidParameterError, match="features"):
        ZCA.fit(torch.zeros(2, 3, 128, 128))  # a 49152 x 49152 covariance is refused before any work
    zca = ZCA.fit(torch.rand(10, 1, 4, 4))
    with pytest.raises(InvalidParameterError, match=r"\[N, C, H, W\]"):
        zca.whiten(torch.rand(1, 4, 4))
    with pytest.raises(InvalidParameterError, match="fitted on"):
        zca.whiten(torch.rand(3, 1, 5, 5))
    with pytest.raises(InvalidParameterError, match="NaN"):
        zca.unwhiten(torch.full((2, 1, 4, 4), float("nan")))
