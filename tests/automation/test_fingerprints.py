"""Fingerprints follow file contents only (data) and contents plus names (configs)."""
from pathlib import Path

from qlora.automation.fingerprints import config_fingerprint, data_fingerprints, domain_fingerprint


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_renaming_or_adding_dotfiles_keeps_the_data_fingerprint(tmp_path):
    training = tmp_path / "training"
    rows = write(training / "legal-ko" / "a.jsonl", '{"instruction": "x", "output": "y"}\n')
    before = domain_fingerprint(training, "legal-ko")
    rows.rename(training / "legal-ko" / "renamed.jsonl")
    write(training / "legal-ko" / ".a.jsonl.swp", "editor state")
    assert domain_fingerprint(training, "legal-ko") == before


def test_nested_files_count_and_moving_bytes_between_files_is_a_change(tmp_path):
    training = tmp_path / "training"
    write(training / "d" / "one.jsonl", "AB")
    before = domain_fingerprint(training, "d")
    write(training / "d" / "2026" / "more.jsonl", "C")
    nested = domain_fingerprint(training, "d")
    assert nested != before
    write(training / "d" / "one.jsonl", "A")
    write(training / "d" / "2026" / "more.jsonl", "BC")  # same bytes overall, different rows
    assert domain_fingerprint(training, "d") not in {before, nested}


def test_every_domain_folder_gets_its_own_fingerprint(tmp_path):
    training = tmp_path / "training"
    write(training / "a" / "x.jsonl", "same")
    write(training / "b" / "x.jsonl", "same")
    (training / ".cache").mkdir()
    prints = data_fingerprints(training)
    assert set(prints) == {"a", "b"} and prints["a"] == prints["b"]
    assert data_fingerprints(tmp_path / "missing") == {}


def test_config_fingerprint_sees_profiles_and_gate_but_not_other_configs(tmp_path):
    write(tmp_path / "qlora" / "tiny-cpu.yaml", "r: 8\n")
    write(tmp_path / "quality_gate.yaml", "gates: {}\n")
    before = config_fingerprint(tmp_path)
    write(tmp_path / "serving" / "vllm.yaml", "max_lora_rank: 64\n")
    write(tmp_path / "schedule.yaml", "{}\n")
    assert config_fingerprint(tmp_path) == before
    (tmp_path / "qlora" / "tiny-cpu.yaml").rename(tmp_path / "qlora" / "other.yaml")
    assert config_fingerprint(tmp_path) != before  # a profile's name is how jobs refer to it
