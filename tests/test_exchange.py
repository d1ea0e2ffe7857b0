"""devs inspect, devs export and devs import: describe(), the ImageFolder export and its round trip."""

import csv
import json
import math
import re

import pytest
import torch
from PIL import Image

import devs
from devs.cli import main
from devs.errors import DistilledFileError, OutputError
from devs.exchange import LABELS_CSV, LABELS_JSON, class_folders, export_distilled, import_distilled
from devs.inspection import describe, format_description
from devs.io import DistilledSet, load_distilled

ODD_CLASSES = ["a/b", "..", "猫", "../../etc", "Cat", "cat", "CON", " spaced name "]


def make_set(n=9, k=3, channels=1, size=(5, 4), classes=None, images=None, labels=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    if labels is None:
        labels = torch.softmax(5 * torch.randn(n, k, generator=generator), 1)
    return DistilledSet(
        images=torch.rand(n, channels, *size, generator=generator) if images is None else images,
        labels=labels,
        classes=classes or [f"class {i}" for i in range(k)],
        mean=[0.5] * channels,
        std=[0.25] * channels,
        dataset="toy",
        method="devs",
        config={"ipc": 3, "schedule": [3], "stage": {"epochs": 1}},
        seed=7,
        source_train_size=100,
    )


def run_cli(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_same_set(back: DistilledSet, original: DistilledSet) -> None:
    """Labels and metadata bit for bit, images within 1/255."""
    assert back.labels.dtype == torch.float32 and torch.equal(back.labels, original.labels)
    assert back.images.shape == original.images.shape
    assert float((back.images - original.images).abs().max()) <= 1 / 255
    for name in ("classes", "mean", "std", "dataset", "method", "config", "seed", "source_train_size",
                 "devs_version", "created"):
        assert getattr(back, name) == getattr(original, name), name


@pytest.fixture(scope="module")
def digits_set(digits):
    return devs.DEvS(ipc=2, epochs=1, width=16, progress=False).fit(digits).distilled_


# --- round trip -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_round_trip_is_lossless_for_labels_and_within_1_of_255_for_images(tmp_path, channels, mode):
    original = make_set(channels=channels)
    tricky = torch.zeros(3)
    tricky[0], tricky[1], tricky[2] = 1 - 2**-24, 2**-25, 1e-40  # a float32 just below 1 and a denormal
    original.labels[0] = tricky
    export_distilled(original, tmp_path / "out")
    back = import_distilled(tmp_path / "out")
    assert_same_set(back, original)
    pngs = sorted((tmp_path / "out").rglob("*.png"))
    assert len(pngs) == len(original) and {Image.open(p).mode for p in pngs} == {mode}
    assert not [p for p in tmp_path.iterdir() if p.name != "out"]  # no staging folder left behind


def test_round_trip_of_a_digits_devs_run_through_the_cli(tmp_path, capsys, digits_set):
    source = digits_set.save(tmp_path / "digits.safetensors")
    code, stdout, stderr = run_cli(capsys, "export", source, "--to", tmp_path / "exported")
    assert code == 0 and "wrote" in stdout, stderr
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == [*digits_set.classes, LABELS_CSV, LABELS_JSON]
    code, stdout, stderr = run_cli(capsys, "import", tmp_path / "exported", "--out", tmp_path / "back.safetensors")
    assert code == 0, stderr
    assert_same_set(load_distilled(tmp_path / "back.safetensors"), digits_set)


def test_labels_csv_has_file_then_one_column_per_class(tmp_path):
    original = make_set(classes=["x,y", 'say "hi"', "new\nline"])
    export_distilled(original, tmp_path / "out")
    with open(tmp_path / "out" / LABELS_CSV, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["file", "x,y", 'say "hi"', "new\nline"]
    labels = torch.tensor([[float(value) for value in row[1:]] for row in rows[1:]], dtype=torch.float32)
    assert torch.equal(labels, original.labels)
    for row, k in zip(rows[1:], original.hard_labels.tolist()):
        assert (tmp_path / "out" / row[0]).is_file() and row[0].split("/")[0] == class_folders(original.classes)[k]


def test_odd_class_names_give_safe_unique_folders_and_come_back_unchanged(tmp_path):
    k = len(ODD_CLASSES)
    original = make_set(n=3 * k, k=k, classes=ODD_CLASSES, labels=torch.eye(k).repeat(3, 1))
    export_distilled(original, tmp_path / "out")
    root = (tmp_path / "out").resolve()
    folders = [p for p in root.iterdir() if p.is_dir()]
    assert len(folders) == k and len({p.name.casefold() for p in folders}) == k
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", p.name) and p.name != ".." for p in folders)
    assert all(p.resolve().parent.parent == root for p in root.rglob("*.png"))
    assert json.loads((root / LABELS_JSON).read_text(encoding="utf-8"))["classes"] == ODD_CLASSES
    assert import_distilled(root).classes == tuple(ODD_CLASSES)


def test_plain_class_names_keep_their_folder_names():
    assert class_folders(["airplane", "café", "dog"]) == ["airplane", "cafe", "dog"]
    assert class_folders(["Cat", "cat"]) == ["0-Cat", "1-cat"]  # a clash on a case-insensitive disk


def test_clipping_is_recorded_in_labels_json(tmp_path):
    images = torch.rand(9, 1, 5, 4, generator=torch.Generator().manual_seed(1))
    images[0, 0, 0, :2] = torch.tensor([-0.5, 1.5])
    export_distilled(make_set(images=images), tmp_path / "out")
    document = json.loads((tmp_path / "out" / LABELS_JSON).read_text())
    assert document["clipped_pixels"] == 2 and document["pixel_range"] == [-0.5, 1.5]
    back = import_distilled(tmp_path / "out")
    assert float((back.images - images.clamp(0, 1)).abs().max()) <= 1 / 255
    export_distilled(make_set(), tmp_path / "in-range")
    assert json.loads((tmp_path / "in-range" / LABELS_JSON).read_text())["clipped_pixels"] == 0


def test_overwrite_replaces_an_earlier_export_only(tmp_path):
    export_distilled(make_set(n=9), tmp_path / "out")
    with pytest.raises(OutputError, match="--overwrite"):
        export_distilled(make_set(n=4), tmp_path / "out")
    export_distilled(make_set(n=4), tmp_path / "out", overwrite=True)
    assert len(import_distilled(tmp_path / "out")) == 4 and len(list((tmp_path / "out").rglob("*.png"))) == 4
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a devs export"):
        export_distilled(make_set(), tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_failed_export_leaves_no_partial_folder(tmp_path, monkeypatch):
    import devs.exchange

    export_distilled(make_set(n=9), tmp_path / "out")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(devs.exchange, "_write_csv", fail)
    with pytest.raises(OSError):
        export_distilled(make_set(n=4), tmp_path / "new")
    with pytest.raises(OSError):
        export_distilled(make_set(n=4), tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no "new", no staging folders
    assert len(import_distilled(tmp_path / "out")) == 9  # the earlier export is intact


# --- import validation ----------------------------------------------------------------------------------


def _edit_json(directory, change):
    path = directory / LABELS_JSON
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document), encoding="utf-8")


def _first_png(directory):
    return directory / json.loads((directory / LABELS_JSON).read_text())["images"][0]["file"]


def _set_label(document, index, row):
    document["images"][index]["label"] = row


def _relabel_first_image(document):
    """Make image 0's most likely class one other than the class folder it sits in."""
    folder = document["images"][0]["file"].split("/")[0]
    other = (document["class_folders"].index(folder) + 1) % len(document["classes"])
    _set_label(document, 0, [float(k == other) for k in range(len(document["classes"]))])


TAMPERINGS = {
    "labels not summing to 1": (lambda d: _edit_json(d, lambda doc: _set_label(doc, 0, [0.5, 0.5, 0.5])), "sum to 1"),
    "renamed class": (lambda d: _edit_json(d, lambda doc: doc["classes"].__setitem__(0, "other")), "do not match"),
    "label of another class": (lambda d: _edit_json(d, _relabel_first_image), "move the file there"),
    "short label row": (lambda d: _edit_json(d, lambda doc: _set_label(doc, 0, [1.0])), "one probability per class"),
    "path out of the folder": (lambda d: _edit_json(d, lambda doc: doc["images"][0].__setitem__("file", "../x.png")),
                               "not a <class folder>/<name>.png path"),
    "missing field": (lambda d: _edit_json(d, lambda doc: doc.pop("mean")), "'mean' is missing"),
    "wrong format": (lambda d: _edit_json(d, lambda doc: doc.__setitem__("format", "x")), "'devs.imagefolder.v1'"),
    "not JSON": (lambda d: (d / LABELS_JSON).write_text("{nope"), "not valid JSON"),
    "no labels.json": (lambda d: (d / LABELS_JSON).unlink(), "has no labels.json"),
    "missing PNG": (lambda d: _first_png(d).unlink(), "is missing"),
    "wrong size": (lambda d: Image.new("L", (9, 9)).save(_first_png(d), format="PNG"), "must share one size"),
    "mixed modes": (lambda d: Image.new("RGB", (4, 5)).save(_first_png(d), format="PNG"), "must share one mode"),
    "not a PNG": (lambda d: _first_png(d).write_bytes(b"GIF89a garbage"), "cannot decode"),
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_import_of_a_tampered_folder_fails_with_one_line_and_writes_nothing(tmp_path, capsys, tamper):
    change, message = tamper
    export_distilled(make_set(), tmp_path / "out")
    change(tmp_path / "out")
    with pytest.raises(DistilledFileError, match=re.escape(message)):
        import_distilled(tmp_path / "out")
    code, stdout, stderr = run_cli(capsys, "import", tmp_path / "out", "--out", tmp_path / "back.safetensors")
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("devs: error:") and message in lines[0]
    assert "Traceback" not in stderr and not (tmp_path / "back.safetensors").exists()
    assert not list(tmp_path.glob(".back.safetensors*"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["import", "{tmp}/missing", "--out", "{tmp}/back.safetensors"], "not found"),
        (["export", "{tmp}/set.safetensors", "--to", "{tmp}/full"], "not empty"),
        (["export", "{tmp}/set.safetensors", "--to", "{tmp}/full", "--overwrite"], "not a devs export"),
        (["export", "{tmp}/missing.safetensors", "--to", "{tmp}/new"], "not found"),
        (["inspect", "{tmp}/missing.safetensors"], "not found"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_1(tmp_path, capsys, argv, message):
    make_set().save(tmp_path / "set.safetensors")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, stderr = run_cli(capsys, *[arg.format(tmp=tmp_path) for arg in argv])
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("devs: error:") and message in lines[0], stderr
    assert "Traceback" not in stderr and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no staging folder left
    assert (tmp_path / "full" / "notes.txt").read_text() == "keep me"


def test_import_out_must_be_a_safetensors_file(tmp_path, capsys):
    export_distilled(make_set(), tmp_path / "out")
    code, _, stderr = run_cli(capsys, "import", tmp_path / "out", "--out", tmp_path / "back.npz")
    assert code == 2 and ".safetensors" in stderr and not (tmp_path / "back.npz").exists()


# --- inspect --------------------------------------------------------------------------------------------


def test_describe_counts_and_pixel_range():
    distilled = make_set(n=9, k=3)
    description = describe(distilled)
    assert description["format"] == "devs.distilled.v1" and description["images"] == 9
    assert description["image_shape"] == [1, 5, 4] and description["classes"] == ["class 0", "class 1", "class 2"]
    assert [row["count"] for row in description["class_counts"]] == distilled.class_counts()
    assert sum(row["count"] for row in description["class_counts"]) == 9
    assert description["pixels"]["min"] == pytest.approx(float(distilled.images.min()))
    assert description["pixels"]["max"] == pytest.approx(float(distilled.images.max()))
    assert description["pixels"]["mean"] == pytest.approx(float(distilled.images.mean()))
    assert description["metadata"]["seed"] == 7 and description["metadata"]["method"] == "devs"
    assert description["config"]["stage"] == {"epochs": 1}


@pytest.mark.parametrize("k", [2, 10])
def test_label_entropy_is_0_for_one_hot_and_log_k_for_uniform(k):
    one_hot = describe(make_set(n=2 * k, k=k, labels=torch.eye(k).repeat(2, 1)))["label_entropy"]
    assert one_hot["mean"] == 0.0 and one_hot["max"] == 0.0 and one_hot["unit"] == "nats"
    uniform = describe(make_set(n=4, k=k, labels=torch.full((4, k), 1 / k)))["label_entropy"]
    assert uniform["uniform"] == math.log(k)
    assert uniform["mean"] == pytest.approx(math.log(k), rel=1e-6)
    assert uniform["max"] == pytest.approx(math.log(k), rel=1e-6)


def test_inspect_prints_an_aligned_table_and_json(tmp_path, capsys, digits_set):
    path = digits_set.save(tmp_path / "digits.safetensors")
    code, stdout, stderr = run_cli(capsys, "inspect", path)
    assert code == 0, stderr
    for field in ("devs.distilled.v1", "20 x 1x8x8", "label entropy", "nats", "pixels", "devs version",
                  "source train size", "images per class", "config:", "resolved_schedule"):
        assert field in stdout, field
    counts = [line.split() for line in stdout.splitlines() if re.fullmatch(r"  \d  +\d+", line)]
    assert [int(count) for _, count in counts] == digits_set.class_counts()
    assert stdout == format_description({"file": str(path), **describe(load_distilled(path))}) + "\n"
    code, stdout, _ = run_cli(capsys, "inspect", path, "--json")
    description = json.loads(stdout)
    assert code == 0 and description["file"] == str(path) and description["images"] == 20
    assert [row["count"] for row in description["class_counts"]] == digits_set.class_counts()
    assert description["metadata"]["dataset"] == "digits" and description["config"]["width"] == 16
