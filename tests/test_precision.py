"""bf16 autocast for the judging nets: the auto rule, the records, and nets that still learn."""

import json

import pytest
import torch

import devs.runtime as runtime
from devs import RandomSubset, evaluate, evaluate_random_baseline
from devs.cli import main
from devs.errors import InvalidParameterError
from devs.train import resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("flags, expected", [({"avx2", "avx512f", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16"),
                                             ({"avx2", "avx512f"}, "fp32"), (set(), "fp32")])
def test_auto_takes_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, flags, expected):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"  # as asked


def test_unknown_precision_is_refused():
    with pytest.raises(InvalidParameterError, match="fp32, bf16, auto"):
        resolve_precision("fp16", CPU)


def test_bf16_nets_learn_and_say_so(digits):
    subset = RandomSubset(ipc=5, random_state=0).fit(digits).distilled_
    half = evaluate(subset, digits, protocol="dc", runs=1, epochs=30, progress=False, precision="bf16")
    full = evaluate(subset, digits, protocol="dc", runs=1, epochs=30, progress=False)
    assert half.precision == "bf16" and full.precision == "fp32"
    assert 40 < half.mean <= 100  # far above the 10 % of chance
    baseline = evaluate_random_baseline(digits, 20, runs=1, epochs=5, progress=False, precision="bf16")
    assert baseline.precision == "bf16" and baseline.to_dict()["precision"] == "bf16"


def test_cli_records_the_precision_it_used(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: set())  # a CPU without bf16 units
    code = main(["distill", "--ipc", "1", "--epochs", "1", "--eval-epochs", "2", "--runs", "1", "--precision", "auto",
                 "--out", str(tmp_path / "d.safetensors"), "--json", "-q"])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert {result["precision"] for result in record["evaluation"]} == {"fp32"}


def test_devs_extractor_in_bf16_records_it_and_keeps_its_own_checkpoints(digits, tmp_path, caplog):
    from dataclasses import asdict

    from devs import DEvS
    from devs.methods.extractor import ExtractorSpec, content_hash

    fast = dict(ipc=2, epochs=2, width=16, progress=False, checkpoint_dir=tmp_path, resume=True)
    half = DEvS(precision="bf16", **fast).fit(digits)
    assert half.precision_ == "bf16" and half.distilled_.config["precision"] == "bf16"
    caplog.set_level("INFO", logger="devs")
    full = DEvS(**fast).fit(digits)  # same folder: the bf16 stage and extractor must not be reused
    assert "resumed" not in caplog.text and "Reusing" not in caplog.text
    assert "precision" not in full.distilled_.config  # fp32 files read as they did before the parameter
    # fp32 extractor keys are those of before the field existed
    spec = ExtractorSpec()
    before = {name: value for name, value in asdict(spec).items() if name != "precision"}
    assert spec.key("x", 3, 0) == content_hash({"input": "x", "params": before, "epochs": 3, "seed": 0})
    assert ExtractorSpec(precision="bf16").key("x", 3, 0) != spec.key("x", 3, 0)


def test_cli_precision_reaches_the_method(tmp_path, capsys):
    code = main(["distill", "--ipc", "1", "--epochs", "1", "--precision", "bf16", "--no-evaluate", "--json", "-q",
                 "--out", str(tmp_path / "d.safetensors")])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["config"]["precision"] == "bf16" and record["fit"]["precision_"] == "bf16"


def test_dm_embeds_in_bf16_with_its_own_progress_key(digits, tmp_path, caplog):
    from devs import get_method

    fast = dict(ipc=1, iterations=2, width=16, batch_real=32, device="cpu", progress=False, checkpoint_dir=tmp_path)
    half = get_method("dm", precision="bf16", **fast).fit(digits)
    full = get_method("dm", **fast).fit(digits)
    assert half.distilled_.config["precision"] == "bf16" and "precision" not in full.distilled_.config
    assert not torch.equal(half.distilled_.images, full.distilled_.images)  # the embeddings were rounded
    assert torch.isfinite(half.distilled_.images).all() and all(torch.isfinite(torch.tensor(half.loss_history_)))
    assert len(list(tmp_path.glob("dm-ipc1-*.progress.safetensors"))) == 2  # neither resumes the other


def test_auto_keeps_dm_in_fp32_on_a_cpu_even_with_bf16_units(monkeypatch, digits):
    from devs import get_method

    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx512_bf16"})
    assert resolve_precision("auto", CPU, pays_on_cpu=False) == "fp32" and resolve_precision("auto", CPU) == "bf16"
    dm = get_method("dm", ipc=1, iterations=1, width=16, batch_real=16, device="cpu", progress=False,
                    precision="auto").fit(digits)
    assert dm.precision_ == "fp32" and dm.distilled_.config["precision"] == "fp32"
