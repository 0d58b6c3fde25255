"""The eval's generation limit follows the base profile in use, through the one switch."""
from __future__ import annotations

from pathlib import Path

from qlora.evaluation.config import load_eval_settings

REPO = Path(__file__).resolve().parents[2]


def test_the_selected_base_gets_its_own_limit(monkeypatch):
    monkeypatch.setenv("QLORA_BASE_PROFILE", "smollm2-135m")
    assert load_eval_settings(REPO / "configs" / "eval.yaml").max_tokens == 160
    monkeypatch.setenv("QLORA_BASE_PROFILE", "tiny")
    assert load_eval_settings(REPO / "configs" / "eval.yaml").max_tokens == 256


def test_an_explicit_profile_wins_and_unknown_profiles_keep_the_default(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("max_tokens: 64\nmax_tokens_by_base: {llama3-8b: 512}\nrefusal_phrases: {en: [sorry]}\n")
    assert load_eval_settings(path, base_profile="llama3-8b").max_tokens == 512
    assert load_eval_settings(path, base_profile="smollm2-135m").max_tokens == 64
