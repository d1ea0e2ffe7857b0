"""The on-disk store (devs pack) and streaming: a store gives the same results as the same data in memory."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from devs import DEvS, load_dataset
from devs.cli import main
from devs.cluster import cluster_means
from devs.data import ImageDataset, ImageSplit
from devs.errors import DatasetError, OutputError
from devs.packing import pack_store
from devs.store import ArrayStore, open_store
from devs.train import Normalizer, TrainRecipe, extract_features, train_classifier
from devs.models import build_model


def _uint8_dataset(n_train=120, n_test=40, size=12, classes=3, seed=0) -> ImageDataset:
    """Images that are exact multiples of 1/255, so a uint8 store holds them without rounding."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = np.arange(n) % classes
        pixels = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
        # a class signal: a brighter channel per class
        pixels[np.arange(n), labels % 3] = np.clip(pixels[np.arange(n), labels % 3].astype(int) + 60, 0, 255)
        return ImageSplit(torch.from_numpy(pixels).float() / 255.0, torch.from_numpy(labels).long())

    return ImageDataset("toy", tuple(f"c{i}" for i in range(classes)), split(n_train), split(n_test))


@pytest.fixture(scope="module")
def toy_and_store(tmp_path_factory):
    toy = _uint8_dataset()
    path = pack_store(toy, tmp_path_factory.mktemp("store") / "toy", shard_rows=50, progress=False)
    return toy, path


def test_store_round_trip_reads_any_rows_in_order(toy_and_store):
    toy, path = toy_and_store
    store = load_dataset(path)
    assert isinstance(store.train.images, ArrayStore) and store.classes == toy.classes
    assert tuple(store.train.images.shape) == tuple(toy.train.images.shape)
    assert torch.equal(store.train.labels, toy.train.labels) and torch.equal(store.test.labels, toy.test.labels)
    assert torch.equal(store.train.images[:], toy.train.images)  # shard_rows=50: reads cross shard borders
    rows = torch.tensor([119, 3, 50, 49, 3, 0, -1])
    assert torch.equal(store.train.images[rows], toy.train.images[rows])
    assert torch.equal(store.train.images[45:55], toy.train.images[45:55])
    assert store.channel_stats() == toy.channel_stats()
    with pytest.raises(IndexError):
        store.train.images[torch.tensor([120])]


def test_streamed_training_and_features_equal_in_memory(toy_and_store):
    toy, path = toy_and_store
    store = load_dataset(path)
    normalizer = Normalizer(*toy.channel_stats(), torch.device("cpu"))
    recipe = TrainRecipe(epochs=2, batch_size=32, max_shift=2, flip=True, mixup_alpha=0.4)
    nets = []
    for images in (toy.train.images, store.train.images):
        net = build_model("convnet", in_channels=3, num_classes=3, image_size=(12, 12), width=8, depth=2,
                          dropout=0.2, seed=0)
        train_classifier(net, images, torch.eye(3)[toy.train.labels], recipe, normalizer, 0, torch.device("cpu"))
        nets.append(net)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)
    features = [extract_features(nets[0], x, normalizer, torch.device("cpu"), batch_size=16)
                for x in (toy.train.images, store.train.images)]
    assert torch.equal(*features)


def test_devs_on_a_store_equals_devs_in_memory(toy_and_store, tmp_path):
    toy, path = toy_and_store
    params = dict(ipc=2, schedule=[10, 2], epochs=2, width=8, progress=False)
    in_memory = DEvS(**params).fit(toy).distilled_
    streamed = DEvS(**params, checkpoint_dir=tmp_path).fit(load_dataset(path)).distilled_
    assert torch.allclose(in_memory.images, streamed.images, atol=1e-6)
    assert torch.equal(in_memory.labels, streamed.labels)
    # a resumed run finds the stages through the store's digest, without reading the images again
    resumed = DEvS(**params, checkpoint_dir=tmp_path, resume=True).fit(load_dataset(path))
    assert all(stage.get("resumed") for stage in resumed.stages_)


def test_chunked_cluster_means_match_direct_means():
    images = torch.rand(37, 2, 3, 3)
    targets = torch.eye(4)[torch.arange(37) % 4]
    assignments = torch.arange(37) % 5
    means, labels = cluster_means(images, targets, assignments, 5, chunk_rows=4)
    for k in range(5):
        assert torch.allclose(means[k], images[assignments == k].mean(0), atol=1e-6)
        assert torch.allclose(labels[k], targets[assignments == k].mean(0), atol=1e-6)


def _imagefolder_tar(path, sizes):
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for cls, (w, h) in zip(("b", "a"), sizes):
                for i in range(3):
                    buffer = io.BytesIO()
                    Image.new("RGB", (w, h), (40 * i, 100, 200)).save(buffer, "PNG")
                    info = tarfile.TarInfo(f"root/{split}/{cls}/{i}.png")
                    info.size = len(buffer.getvalue())
                    tar.addfile(info, io.BytesIO(buffer.getvalue()))


def test_pack_streams_an_imagefolder_and_resizes(tmp_path):
    _imagefolder_tar(tmp_path / "folder.tar.gz", [(10, 8), (6, 6)])  # two sizes: --size makes them one
    out = pack_store(tmp_path / "folder.tar.gz", tmp_path / "store", size=16, progress=False)
    meta, splits = open_store(out)
    assert meta["classes"] == ["a", "b"] and meta["image_shape"] == [3, 16, 16]
    assert meta["counts"] == {"train": 6, "test": 6}
    assert sorted(splits["train"].labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert splits["train"][:].shape == (6, 3, 16, 16)
    with pytest.raises(DatasetError, match="--size"):
        pack_store(tmp_path / "folder.tar.gz", tmp_path / "unsized", progress=False)
    assert not (tmp_path / "unsized").exists()  # nothing half-written under the final name
    with pytest.raises(OutputError, match="--overwrite"):
        pack_store(tmp_path / "folder.tar.gz", out, size=16, progress=False)


def test_damaged_stores_fail_with_one_clear_error(toy_and_store, tmp_path):
    _, path = toy_and_store
    import shutil

    for damage in ("truncate", "format", "pickle"):
        copy = tmp_path / damage
        shutil.copytree(path, copy)
        if damage == "truncate":
            shard = copy / "train" / "shard-00001.u8"
            shard.write_bytes(shard.read_bytes()[:-10])
        elif damage == "format":
            meta = json.loads((copy / "store.json").read_text())
            (copy / "store.json").write_text(json.dumps({**meta, "format": "other"}))
        else:
            np.save(copy / "test" / "labels.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
        with pytest.raises(DatasetError, match="devs pack"):
            load_dataset(copy)


def test_cli_pack_then_distill_from_the_store(tmp_path, capsys):
    assert main(["pack", "digits", "--out", str(tmp_path / "digits-store"), "--size", "16", "-q"]) == 0
    assert "1347 train + 450 test images of 1x16x16" in capsys.readouterr().out
    out = tmp_path / "d.safetensors"
    assert main(["distill", "--dataset", str(tmp_path / "digits-store"), "--ipc", "1", "--epochs", "1",
                 "--param", "width=8", "--out", str(out), "--runs", "1", "--eval-epochs", "2", "--no-baseline",
                 "-q", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["size"] == 10 and record["evaluation"][0]["size"] == 10
    assert main(["pack", "digits", "--out", str(tmp_path / "digits-store")]) == 1


def test_pixel_matching_reads_real_images_from_a_store(toy_and_store):
    from devs import get_method

    toy, path = toy_and_store
    params = dict(ipc=1, iterations=2, width=8, depth=2, progress=False)
    for name in ("dc", "dm"):
        in_memory = get_method(name, **params).fit(toy).distilled_
        streamed = get_method(name, **params).fit(load_dataset(path)).distilled_
        assert torch.allclose(in_memory.images, streamed.images, atol=1e-5), name
