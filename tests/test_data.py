"""Dataset loaders on tiny fixtures made in tmp_path, their errors, and the shared data sets."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from devs import data
from devs.data import (
    DATASETS,
    ImageDataset,
    ImageSplit,
    list_datasets,
    load_dataset,
    register_dataset,
)
from devs.errors import DatasetError, UnknownNameError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep caches and downloads of every test inside its tmp_path."""
    monkeypatch.setenv("DEVS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DEVS_DATA_DIR", str(tmp_path / "data-dir"))
    return tmp_path / "cache"


# --------------------------------------------------------------------------------------------
# Fixture writers
# --------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write a uint8 array as an IDX file (magic 0x08 type, ndim, big-endian dims, data)."""
    payload = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def make_fashion(root: Path, compress: bool = True) -> dict[str, np.ndarray]:
    """Tiny Fashion-MNIST: 20 train and 10 test 28x28 images."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(20, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8)[::-1].copy(),
    }
    root.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(root / (f"{stem}.gz" if compress else stem), array, compress)
    return arrays


def cifar_batches(n_train: int = 4, n_test: int = 6) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny CIFAR-10 batches: name -> (uint8 images [n, 3, 32, 32], labels [n])."""
    rng = np.random.default_rng(1)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else n_train
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        batches[name] = images, (np.arange(n) + i) % 10
    return batches


def make_cifar_bin(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Official binary layout: records of 1 label byte + 3072 pixel bytes, plus batches.meta.txt."""
    batches = cifar_batches()
    directory = root / "cifar-10-batches-bin"
    directory.mkdir(parents=True)
    for name, (images, labels) in batches.items():
        records = np.concatenate([labels[:, None].astype(np.uint8), images.reshape(len(images), -1)], 1)
        (directory / f"{name}.bin").write_bytes(records.tobytes())
    (directory / "batches.meta.txt").write_text("\n".join(data.CIFAR10_CLASSES) + "\n\n")
    return batches


def make_cifar_py(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Python-version layout: pickled dicts with bytes keys (protocol 4: numpy globals only)."""
    batches = cifar_batches()
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    for name, (images, labels) in batches.items():
        batch = {b"data": images.reshape(len(images), -1), b"labels": labels.tolist()}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=4))
    meta = {b"label_names": [c.encode() for c in data.CIFAR10_CLASSES]}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=4))
    return batches


def png_bytes(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_imagefolder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog", "emu"), per_class: int = 2
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """ROOT/{train,test}/<class>/<n>.png with 5x4 (W x H) RGB images; returns the pixels."""
    rng = np.random.default_rng(2)
    written: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    for split in ("train", "test"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for k in range(per_class):
                pixels = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
                (root / split / cls / f"{k:02d}.png").write_bytes(png_bytes(pixels))
                written[split].append((cls, pixels))
    return written


def tar_dir(source: Path, archive: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source, arcname=arcname)
    return archive


def as_uint8(images: torch.Tensor) -> np.ndarray:
    return (images * 255).round().to(torch.uint8).numpy()


# --------------------------------------------------------------------------------------------
# The types and the registry
# --------------------------------------------------------------------------------------------


def tiny_dataset() -> ImageDataset:
    train = ImageSplit(torch.tensor([[[[0.0, 1.0]]], [[[0.5, 0.5]]]]), torch.tensor([0, 1]))
    return ImageDataset("tiny", ("a", "b"), train, train)


def test_dataset_properties() -> None:
    dataset = tiny_dataset()
    assert len(dataset.train) == 2
    assert dataset.num_classes == 2
    assert dataset.image_shape == (1, 1, 2)
    mean, std = dataset.channel_stats()
    assert mean == pytest.approx([0.5])
    assert std == pytest.approx([np.std([0.0, 1.0, 0.5, 0.5])])


def test_split_rejects_mismatched_lengths() -> None:
    with pytest.raises(DatasetError, match="3 images but 2 labels"):
        ImageSplit(torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.int64))


def test_registry_lists_the_builtin_datasets() -> None:
    assert {"digits", "fashion-mnist", "cifar10"} <= set(list_datasets())
    assert list_datasets("cifar*") == ["cifar10"]
    assert DATASETS.get("digits") is data.load_digits


def test_unknown_name_lists_valid_names_and_mentions_paths() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_dataset("digitz")
    message = str(info.value)
    assert "digits, fashion-mnist, cifar10" in message
    assert "did you mean 'digits'?" in message
    assert "ImageFolder" in message and ".npz" in message and ".tar.gz" in message
    assert isinstance(info.value, KeyError)


def test_missing_path_says_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found; give an existing ImageFolder directory"):
        load_dataset(tmp_path / "missing.tar.gz")


def test_unsupported_file_type(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(DatasetError, match="not a directory, tarball"):
        load_dataset(path)


def test_registered_loaders_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))  # undo the registration

    @register_dataset("broken-for-test")
    def broken(root: Path | None, download: bool) -> ImageDataset:
        split = ImageSplit(torch.zeros(2, 1, 2, 2), torch.tensor([0, 5]))
        return ImageDataset("broken", ("a", "b"), split, split)

    with pytest.raises(DatasetError, match=r"labels span \[0, 5\] but there are 2 classes"):
        load_dataset("broken-for-test")


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------


def test_digits_shapes_split_and_stratification() -> None:
    dataset = load_dataset("digits")
    assert dataset.name == "digits"
    assert dataset.classes == tuple(str(k) for k in range(10))
    assert dataset.train.images.shape == (1347, 1, 8, 8)
    assert dataset.test.images.shape == (450, 1, 8, 8)
    assert dataset.train.images.dtype == torch.float32 and dataset.train.labels.dtype == torch.int64
    assert 0.0 <= float(dataset.train.images.min()) and float(dataset.train.images.max()) == 1.0
    total = torch.bincount(dataset.train.labels, minlength=10) + torch.bincount(dataset.test.labels)
    test_share = torch.bincount(dataset.test.labels, minlength=10) / total
    assert torch.all((test_share - 0.25).abs() < 0.01)  # stratified: 25% of every class
    again = load_dataset("digits")
    assert torch.equal(again.test.labels, dataset.test.labels)  # a fixed split


# --------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_idx_files(tmp_path: Path, compress: bool) -> None:
    arrays = make_fashion(tmp_path / "fm", compress=compress)
    dataset = load_dataset("fashion-mnist", root=tmp_path / "fm")
    assert dataset.classes[0] == "T-shirt/top" and dataset.classes[-1] == "Ankle boot"
    assert dataset.train.images.shape == (20, 1, 28, 28)
    assert dataset.test.images.shape == (10, 1, 28, 28)
    assert np.array_equal(as_uint8(dataset.train.images)[:, 0], arrays["train-images-idx3-ubyte"])
    assert dataset.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_fashion_mnist_missing_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist", root=tmp_path / "empty")
    message = str(info.value)
    assert f"not found or corrupted in {tmp_path / 'empty'}" in message
    assert "dataset-fashion-mnist" in message and "--data-root" in message
    assert "--download" in message


def test_fashion_mnist_bad_magic(tmp_path: Path) -> None:
    make_fashion(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros((2, 2), np.uint8))  # 2-D labels
    with pytest.raises(DatasetError, match="magic number 0x00000802; expected 0x00000801"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_truncated(tmp_path: Path) -> None:
    make_fashion(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-10]))
    with pytest.raises(DatasetError, match="truncated or corrupted"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_broken_gzip(tmp_path: Path) -> None:
    make_fashion(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match="not a valid gzip file"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_count_mismatch(tmp_path: Path) -> None:
    make_fashion(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(DatasetError, match="20 images but .* 19 labels"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_download_fetches_missing_files_with_pinned_md5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "source"
    make_fashion(source)
    root = tmp_path / "root"
    root.mkdir()
    (source / "train-images-idx3-ubyte.gz").replace(root / "train-images-idx3-ubyte.gz")
    calls = []

    def fake_download(url: str, dest: Path, *, md5: str | None = None, **_: object) -> Path:
        calls.append((url, dest.name, md5))
        (source / dest.name).replace(dest)
        return dest

    monkeypatch.setattr(data.idx, "download_file", fake_download)
    dataset = load_dataset("fashion-mnist", root=root, download=True)
    assert len(dataset.train) == 20
    assert sorted(calls) == sorted(
        (f"{data.FASHION_MNIST_URL}{stem}.gz", f"{stem}.gz", md5)
        for stem, md5 in data.FASHION_MNIST_FILES.items()
        if stem != "train-images-idx3-ubyte"
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------


def check_cifar(dataset: ImageDataset, batches: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    assert dataset.name == "cifar10"
    assert dataset.classes == data.CIFAR10_CLASSES
    assert dataset.train.images.shape == (20, 3, 32, 32)
    assert dataset.test.images.shape == (6, 3, 32, 32)
    train_images = np.concatenate([batches[f"data_batch_{k}"][0] for k in range(1, 6)])
    assert np.array_equal(as_uint8(dataset.train.images), train_images)
    assert dataset.test.labels.tolist() == batches["test_batch"][1].tolist()


def test_cifar10_binary_batches(tmp_path: Path) -> None:
    batches = make_cifar_bin(tmp_path)
    check_cifar(load_dataset("cifar10", root=tmp_path), batches)


def test_cifar10_default_root_is_under_devs_data_dir(tmp_path: Path) -> None:
    batches = make_cifar_bin(tmp_path / "data-dir" / "cifar10")
    check_cifar(load_dataset("cifar10"), batches)


def test_cifar10_python_batches_through_the_restricted_unpickler(tmp_path: Path) -> None:
    batches = make_cifar_py(tmp_path)
    check_cifar(load_dataset("cifar10", root=tmp_path), batches)


class _Exploit:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_code_execution(tmp_path: Path) -> None:
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_Exploit(control)))  # the payload works with a plain unpickler
    assert control.exists()

    make_cifar_py(tmp_path)
    marker = tmp_path / "pwned-marker"
    payload = {b"data": _Exploit(marker), b"labels": [0]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(DatasetError, match="refusing to unpickle .*system"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def test_cifar10_missing_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="CIFAR-10 not found or corrupted in .*--download"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar10_truncated_batch(tmp_path: Path) -> None:
    make_cifar_bin(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DatasetError, match="data_batch_2.bin .* truncated or corrupted"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar10_download_verifies_then_extracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = make_cifar_bin(tmp_path / "official")
    archive = tar_dir(
        tmp_path / "official" / "cifar-10-batches-bin", tmp_path / "official.tar.gz",
        "cifar-10-batches-bin",
    )  # fmt: skip
    calls = []

    def fake_download(url: str, dest: Path, *, md5: str | None = None, **_: object) -> Path:
        calls.append((url, md5))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(archive.read_bytes())
        return dest

    monkeypatch.setattr(data.cifar, "download_file", fake_download)
    root = tmp_path / "root"
    check_cifar(load_dataset("cifar10", root=root, download=True), batches)
    assert calls == [(data.CIFAR10_URL, data.CIFAR10_MD5)]
    assert (root / "cifar-10-batches-bin" / "test_batch.bin").is_file()


# --------------------------------------------------------------------------------------------
# .npz
# --------------------------------------------------------------------------------------------


def test_npz_channels_last_rgb_with_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x_train = rng.integers(0, 256, (6, 4, 5, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    path = tmp_path / "toy.npz"
    np.savez(
        path, x_train=x_train, y_train=np.array([0, 1, 2, 0, 1, 2], np.uint8),
        x_test=x_test, y_test=np.array([2, 1, 0]), classes=np.array(["a", "b", "c"]),
    )  # fmt: skip
    dataset = load_dataset(path)
    assert dataset.name == "toy"
    assert dataset.classes == ("a", "b", "c")
    assert dataset.image_shape == (3, 4, 5)
    assert np.array_equal(as_uint8(dataset.train.images), x_train.transpose(0, 3, 1, 2))
    assert dataset.train.labels.dtype == torch.int64


def test_npz_grayscale_without_classes(tmp_path: Path) -> None:
    path = tmp_path / "gray.npz"
    x = np.zeros((4, 3, 3), np.uint8)
    np.savez(path, x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x, y_test=np.array([1, 1, 0, 0]))
    dataset = load_dataset(str(path))
    assert dataset.classes == ("0", "1")
    assert dataset.image_shape == (1, 3, 3)


def test_npz_wrong_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 3, 3), np.uint8), labels=np.zeros(2))
    with pytest.raises(DatasetError, match="lacks x_train, y_train, x_test, y_test") as info:
        load_dataset(path)
    assert "uint8 [N, H, W] or [N, H, W, C]" in str(info.value)


def test_npz_wrong_dtype_and_shape(tmp_path: Path) -> None:
    path = tmp_path / "float.npz"
    x = np.zeros((2, 3, 3), np.float32)
    np.savez(path, x_train=x, y_train=np.array([0, 1]), x_test=x, y_test=np.array([0, 1]))
    with pytest.raises(DatasetError, match="x_train is float32"):
        load_dataset(path)
    x = np.zeros((2, 3, 3), np.uint8)
    np.savez(path, x_train=x, y_train=np.array([0, 1, 1]), x_test=x, y_test=np.array([0, 1]))
    with pytest.raises(DatasetError, match=r"y_train is int64 \(3,\) for 2 images"):
        load_dataset(path)


def test_npz_labels_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "range.npz"
    x = np.zeros((2, 3, 3), np.uint8)
    np.savez(
        path, x_train=x, y_train=np.array([0, 2]), x_test=x, y_test=np.array([0, 1]),
        classes=np.array(["a", "b"]),
    )  # fmt: skip
    with pytest.raises(DatasetError, match="labels span"):
        load_dataset(path)


def test_npz_with_an_object_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    x = np.zeros((2, 3, 3), np.uint8)
    objects = np.array([{"a": 1}, None], dtype=object)
    np.savez(path, x_train=x, y_train=objects, x_test=x, y_test=np.array([0, 1]))
    with pytest.raises(DatasetError, match="pickled object arrays"):
        load_dataset(path)


def test_npz_empty_test_split(tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"
    x = np.zeros((2, 3, 3), np.uint8)
    np.savez(
        path, x_train=x, y_train=np.array([0, 1]),
        x_test=np.zeros((0, 3, 3), np.uint8), y_test=np.zeros(0, np.int64),
    )  # fmt: skip
    with pytest.raises(DatasetError, match="the test split is empty"):
        load_dataset(path)


# --------------------------------------------------------------------------------------------
# ImageFolder: directory and tarball
# --------------------------------------------------------------------------------------------


def check_folder(dataset: ImageDataset, written: dict[str, list[tuple[str, np.ndarray]]]) -> None:
    assert dataset.classes == ("cat", "dog", "emu")
    assert dataset.image_shape == (3, 4, 5)
    for split in (dataset.train, dataset.test):
        assert split.labels.tolist() == [0, 0, 1, 1, 2, 2]
    expected = np.stack([pixels for _, pixels in written["train"]]).transpose(0, 3, 1, 2)
    assert np.array_equal(as_uint8(dataset.train.images), expected)


def test_imagefolder_directory(tmp_path: Path) -> None:
    written = make_imagefolder(tmp_path / "pets")
    (tmp_path / "pets" / "README.md").write_text("ignored")
    (tmp_path / "pets" / "train" / "cat" / ".DS_Store").write_bytes(b"ignored")
    dataset = load_dataset(tmp_path / "pets")
    assert dataset.name == "pets"
    check_folder(dataset, written)


@pytest.mark.parametrize("arcname", ["pets", "."])
def test_imagefolder_tarball(tmp_path: Path, arcname: str) -> None:
    written = make_imagefolder(tmp_path / "pets")
    archive = tar_dir(tmp_path / "pets", tmp_path / "pets-archive.tar.gz", arcname)
    dataset = load_dataset(str(archive))
    assert dataset.name == "pets-archive"
    check_folder(dataset, written)


def test_imagefolder_grayscale_tgz(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for cls in ("0", "1"):
            (tmp_path / "g" / split / cls).mkdir(parents=True)
            (tmp_path / "g" / split / cls / "a.png").write_bytes(png_bytes(np.full((3, 3), 7, np.uint8)))
    dataset = load_dataset(tar_dir(tmp_path / "g", tmp_path / "gray.tgz", "g"))
    assert dataset.name == "gray"
    assert dataset.image_shape == (1, 3, 3)
    assert float(dataset.train.images[0, 0, 0, 0]) == pytest.approx(7 / 255)


def test_imagefolder_cache_hit_skips_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_dirs: Path
) -> None:
    written = make_imagefolder(tmp_path / "pets")
    archive = tar_dir(tmp_path / "pets", tmp_path / "pets.tar.gz", "pets")
    first = load_dataset(archive)
    cached = list((private_dirs / "imagefolder").iterdir())
    assert len(cached) == 1 and cached[0].name.startswith("pets-") and cached[0].suffix == ".npz"

    def no_decoding(path: Path) -> dict[str, np.ndarray]:
        raise AssertionError("decoded although the cache holds this dataset")

    monkeypatch.setattr(data.cache, "_decode_imagefolder", no_decoding)
    second = load_dataset(archive)
    assert torch.equal(second.train.images, first.train.images)
    assert second.classes == first.classes and second.name == "pets"
    check_folder(second, written)

    os.utime(archive, ns=(0, 0))  # a changed file must not hit the old cache entry
    with pytest.raises(AssertionError, match="decoded although"):
        load_dataset(archive)


def test_imagefolder_directory_cache_sees_changed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_imagefolder(tmp_path / "pets")
    load_dataset(tmp_path / "pets")
    decoded = []
    real_decode = data.cache._decode_imagefolder
    monkeypatch.setattr(data.cache, "_decode_imagefolder", lambda p: decoded.append(p) or real_decode(p))
    load_dataset(tmp_path / "pets")
    assert decoded == []
    (tmp_path / "pets" / "train" / "cat" / "02.png").write_bytes(png_bytes(np.zeros((4, 5, 3), np.uint8)))
    assert len(load_dataset(tmp_path / "pets").train) == 7
    assert len(decoded) == 1


def test_imagefolder_corrupt_cache_is_rebuilt(tmp_path: Path, private_dirs: Path) -> None:
    written = make_imagefolder(tmp_path / "pets")
    load_dataset(tmp_path / "pets")
    (cache,) = (private_dirs / "imagefolder").iterdir()
    cache.write_bytes(b"not a zip file")
    check_folder(load_dataset(tmp_path / "pets"), written)
    assert cache.stat().st_size > 100


def test_imagefolder_mixed_sizes(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "pets")
    odd = tmp_path / "pets" / "test" / "dog" / "odd.png"
    odd.write_bytes(png_bytes(np.zeros((6, 6, 3), np.uint8)))
    with pytest.raises(DatasetError) as info:
        load_dataset(tmp_path / "pets")
    assert str(odd) in str(info.value)
    assert "is 6x6 RGB but" in str(info.value) and "is 5x4 RGB" in str(info.value)


def test_imagefolder_mixed_modes(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "pets")
    gray = tmp_path / "pets" / "train" / "emu" / "gray.png"
    gray.write_bytes(png_bytes(np.zeros((4, 5), np.uint8)))
    with pytest.raises(DatasetError, match=f"{gray} is 5x4 L but .* is 5x4 RGB"):
        load_dataset(tmp_path / "pets")


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA"])
def test_imagefolder_refuses_other_modes(tmp_path: Path, mode: str) -> None:
    make_imagefolder(tmp_path / "pets")
    odd = tmp_path / "pets" / "train" / "dog" / "odd.png"
    odd.write_bytes(png_bytes(np.zeros((4, 5, 3), np.uint8), mode=mode))
    with pytest.raises(DatasetError, match=f"{odd} has mode {mode}; expected L .* or RGB"):
        load_dataset(tmp_path / "pets")


def test_imagefolder_corrupt_image(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "pets")
    broken = tmp_path / "pets" / "train" / "cat" / "01.png"
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(DatasetError, match=f"cannot decode image {broken}"):
        load_dataset(tmp_path / "pets")


def test_imagefolder_corrupt_image_in_tarball(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "pets")
    (tmp_path / "pets" / "test" / "emu" / "00.png").write_bytes(b"not an image")
    archive = tar_dir(tmp_path / "pets", tmp_path / "pets.tar.gz", "pets")
    with pytest.raises(DatasetError, match="cannot decode image pets/test/emu/00.png"):
        load_dataset(archive)


def test_imagefolder_empty_class_folder(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "pets")
    (tmp_path / "pets" / "test" / "yak").mkdir()
    (tmp_path / "pets" / "train" / "yak").mkdir()
    with pytest.raises(DatasetError, match="class folder (train|test)/yak has no images"):
        load_dataset(tmp_path / "pets")


def test_imagefolder_empty_class_folder_in_tarball(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "pets")
    (tmp_path / "pets" / "train" / "yak").mkdir()
    with pytest.raises(DatasetError, match="class folder train/yak has no images"):
        load_dataset(tar_dir(tmp_path / "pets", tmp_path / "pets.tar.gz", "pets"))


def test_imagefolder_single_class(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "one", classes=("cat",))
    with pytest.raises(DatasetError, match="1 class folder.*at least 2"):
        load_dataset(tmp_path / "one")


def test_imagefolder_test_classes_must_match(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "pets")
    for image in (tmp_path / "pets" / "test" / "emu").iterdir():
        image.unlink()
    (tmp_path / "pets" / "test" / "emu").rmdir()
    with pytest.raises(DatasetError, match=r"same class folders .*only in train: \['emu'\]"):
        load_dataset(tmp_path / "pets")


def test_imagefolder_without_test_folder(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "pets")
    archive = tar_dir(tmp_path / "pets" / "train", tmp_path / "train-only.tar.gz", "x/train")
    with pytest.raises(DatasetError, match="no test/ folder"):
        load_dataset(archive)


def test_imagefolder_tar_member_with_dotdot_is_unsafe(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "pets")
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "pets", arcname="pets")
        payload = png_bytes(np.zeros((4, 5, 3), np.uint8))
        info = tarfile.TarInfo("pets/train/cat/../../../evil.png")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    with pytest.raises(DatasetError, match="unsafe path"):
        load_dataset(archive)
    assert not (tmp_path / "evil.png").exists()


def test_imagefolder_nested_folder_is_refused(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "pets")
    (tmp_path / "pets" / "train" / "cat" / "more").mkdir()
    with pytest.raises(DatasetError, match="nested folder"):
        load_dataset(tmp_path / "pets")


# --------------------------------------------------------------------------------------------
# The shared data sets (skipped where absent)
# --------------------------------------------------------------------------------------------


def test_shared_mnist_png_tarball(pytestconfig: pytest.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = SHARED_DATA / "mnist-png.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent (the shared data sets are not on this machine)")
    # Decoding all 70,000 PNGs takes about 17 s on the 2-core dev machine, so the decoded arrays
    # are cached in pytest's own cache directory (.pytest_cache, git-ignored): the first run
    # decodes, later runs check the same arrays through the cache in about 2 s.
    monkeypatch.setenv("DEVS_CACHE_DIR", str(pytestconfig.cache.mkdir("devs-cache")))
    dataset = load_dataset(archive)
    assert dataset.name == "mnist-png"
    assert (len(dataset.train), len(dataset.test)) == (60000, 10000)
    assert dataset.classes == tuple(str(k) for k in range(10))
    assert dataset.image_shape == (1, 28, 28)
    assert torch.bincount(dataset.test.labels).tolist()[:2] == [980, 1135]  # MNIST's test counts


def test_shared_fashion_mnist() -> None:
    if not all((SYSTEM_FASHION_MNIST / f"{stem}.gz").is_file() for stem in data.FASHION_MNIST_FILES):
        pytest.skip(
            f"Fashion-MNIST is not in {SYSTEM_FASHION_MNIST} (apt-get install dataset-fashion-mnist)"
        )
    dataset = load_dataset("fashion-mnist")
    assert (len(dataset.train), len(dataset.test)) == (60000, 10000)
    assert dataset.num_classes == 10 and dataset.image_shape == (1, 28, 28)
    assert torch.bincount(dataset.train.labels).tolist() == [6000] * 10
    assert float(dataset.train.images.max()) == 1.0
