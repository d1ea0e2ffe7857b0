"""benchmarks/check_claims.py: BENCHMARKS.md's accuracies agree with the records each table cites."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_claims", ROOT / "benchmarks" / "check_claims.py")
check_claims = sys.modules.setdefault("check_claims", importlib.util.module_from_spec(spec))
spec.loader.exec_module(check_claims)


def test_benchmarks_md_matches_its_records():
    failures = check_claims.check(ROOT / "BENCHMARKS.md")
    assert not failures, "\n".join(map(str, failures))


def _notebook(tmp_path, cell: str, records: str | None) -> Path:
    (tmp_path / "r.jsonl").write_text(json.dumps({"devs": {"accuracies": [30.0, 31.0, 32.5]}}) + "\n")
    lines = [] if records is None else [f"<!-- records: {records} -->", ""]
    text = "\n".join(lines + ["| setting | accuracy | paper |", "|---|---|---|", f"| x | {cell} | 52.41 ± 1.0 |", ""])
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(text)
    return path


def test_the_check_catches_a_drifted_number_and_an_unsourced_table(tmp_path, monkeypatch):
    monkeypatch.setattr(check_claims, "ROOT", tmp_path)
    # mean 31.1667, population std 1.0274: shown as 31.2 ± 1.0 (the paper's column is not ours to check)
    assert check_claims.check(_notebook(tmp_path, "31.2 ± 1.0", "r.jsonl")) == []
    assert check_claims.check(_notebook(tmp_path, "31.17 ± 1.03", "r.jsonl")) == []
    for drifted in ("31.3 ± 1.0", "31.2 ± 1.2", "31.2 ± 1.3"):  # 1.3: the sample std, not the population's
        assert len(check_claims.check(_notebook(tmp_path, drifted, "r.jsonl"))) == 1, drifted
    assert "without a" in str(check_claims.check(_notebook(tmp_path, "31.2 ± 1.0", None))[0])
    assert "missing records" in str(check_claims.check(_notebook(tmp_path, "31.2 ± 1.0", "gone.jsonl"))[0])
    assert check_claims.check(_notebook(tmp_path, "99.0 ± 9.0", "none: unrecorded, said in the text")) == []
