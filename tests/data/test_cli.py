"""`qlora validate-data` exit codes (0 pass, 1 blocking check fails, 2 unreadable) and `qlora sample-data`."""
import json
from pathlib import Path

from typer.testing import CliRunner

from qlora.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_sample_file_passes_and_prints_the_accounting():
    done = runner.invoke(app, ["validate-data", "--input", str(REPO / "data/training/legal-ko/alpaca.jsonl"), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    acc = report["accounting"]
    assert acc["balanced"] and acc["quarantined"]["bad_encoding"] == 1 and acc["quarantined"]["malformed_json"] == 1
    assert acc["rows_read"] == acc["kept"] + acc["duplicates_removed"] + sum(acc["quarantined"].values())
    assert report["passed"] and {c["check"] for c in report["checks"]} >= {"duplicates", "pii_residual", "target_language"}


def test_a_blocking_check_failure_exits_1(tmp_path):
    rows = [{"instruction": "Please explain what a lease contract means in one simple sentence.",
             "output": "A lease lets someone use a thing for rent.", "license": "internal"}] * 3
    path = tmp_path / "legal-ko.json"
    path.write_text(json.dumps(rows))
    done = runner.invoke(app, ["validate-data", "--input", str(path), "--domain", "legal-ko"])
    assert done.exit_code == 1, done.output
    assert "[FAIL] duplicates" in done.output


def test_unreadable_input_exits_2(tmp_path):
    assert runner.invoke(app, ["validate-data", "--input", str(tmp_path / "missing.jsonl")]).exit_code == 2
    (tmp_path / "notes.txt").write_text("hello")
    assert runner.invoke(app, ["validate-data", "--input", str(tmp_path / "notes.txt")]).exit_code == 2


def test_sample_data_is_deterministic(tmp_path):
    assert runner.invoke(app, ["sample-data", "--data-dir", str(tmp_path)]).exit_code == 0
    generated = [p for d in ("training", "eval") for p in (REPO / "data" / d).rglob("*") if p.is_file()]
    assert len(generated) >= 3 * 5 + 3
    for path in generated:
        if path.suffix in (".json", ".jsonl", ".license"):
            assert (tmp_path / path.relative_to(REPO / "data")).read_bytes() == path.read_bytes(), path


def test_a_10000_deep_row_is_quarantined_and_an_empty_result_fails_only_has_rows(tmp_path):
    folder = tmp_path / "deep-ko"
    folder.mkdir()
    (folder / "rows.jsonl").write_text("[" * 10_000 + "]" * 10_000 + "\n{broken\n")
    done = runner.invoke(app, ["validate-data", "--input", str(folder), "--domain", "legal-ko", "--json"])
    assert done.exit_code == 1, done.output
    report = json.loads(done.output)
    assert report["accounting"]["quarantined"] == {"too_deep": 1, "malformed_json": 1}
    assert report["accounting"]["balanced"] and report["accounting"]["kept"] == 0
    failed = {c["check"] for c in report["checks"] if not c["passed"]}
    assert failed == {"has_rows"}  # pii_residual passes on 0 rows: an empty set has no residual PII
