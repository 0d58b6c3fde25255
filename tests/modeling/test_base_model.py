"""The base model: tiny profile build + cache, template check, local-checkpoint profile, corpus extraction."""
from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest

from qlora.modeling.base_checks import chat_template_check
from qlora.modeling.base_model import BaseModelError, base_model_path, materialize_base
from qlora.modeling.chat_template import EOT, LLAMA3_CHAT_TEMPLATE, SPECIAL_TOKENS, render_llama3
from qlora.modeling.corpus import as_messages, collect_corpus


def test_tiny_base_has_llama3_template_and_special_tokens(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    assert tokenizer.chat_template == LLAMA3_CHAT_TEMPLATE and tokenizer.eos_token == EOT
    assert all(len(tokenizer.encode(t, add_special_tokens=False)) == 1 for t in SPECIAL_TOKENS)
    messages = [{"role": "user", "content": "안녕하세요"}, {"role": "assistant", "content": "네, 안녕하세요."}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == render_llama3(messages)
    assert chat_template_check(tokenizer)["passed"]
    record = json.loads((tiny_base / "fingerprint.json").read_text())
    assert record["pretrain_loss_last"] < record["pretrain_loss_first"]  # pretrained, not random


def test_generation_prompt_tokenizes_as_a_prefix_of_the_trained_conversation(tiny_base):
    """What the server sends (prompt + generation header) must be token for token what training saw
    before the answer; otherwise the adapter meets an unseen token at the first step."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    turns = [{"role": "user", "content": "상속이란 무엇인가요?"},
             {"role": "assistant", "content": "상속은 재산과 채무가 상속인에게 넘어가는 것입니다."}]
    conversation = tokenizer.apply_chat_template(turns, tokenize=False)
    prompt = tokenizer.apply_chat_template(turns[:1], tokenize=False, add_generation_prompt=True)
    full_ids = tokenizer(conversation, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    assert tokenizer.decode(full_ids[len(prompt_ids):]).startswith("상속은")


def test_rebuild_with_same_inputs_reuses_the_cached_base(tiny_base):
    before = json.loads((tiny_base / "fingerprint.json").read_text())
    record, reused = materialize_base("tiny")
    assert reused and record["fingerprint"] == before["fingerprint"]
    assert base_model_path("tiny") == tiny_base


def test_template_check_fails_on_a_mismatched_tokenizer(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tokenizer.chat_template = "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}"  # not Llama-3's
    result = chat_template_check(tokenizer)
    assert not result["passed"]
    assert any("<|eot_id|>" in p for p in result["problems"])


def test_base_model_asset_reports_metadata_and_passes_template_check(tiny_base):
    from qlora_assets.modeling.assets import base_model
    from resources.base_model import BaseModelResource

    result = dg.materialize([base_model], resources={"base_checkpoint": BaseModelResource()})
    metadata = result.asset_materializations_for_node("base_model")[0].metadata
    assert metadata["reused_cached_build"].value is True
    assert metadata["parameters"].value > 100_000
    assert metadata["ppl_nf4"].value > 0 and metadata["ppl_bf16"].value > 0
    assert abs(metadata["nf4_ppl_gap_pct"].value) < 50
    assert result.get_asset_check_evaluations()[0].passed


def test_local_profile_missing_path_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("QLORA_BASE_MODEL_PATH", raising=False)
    with pytest.raises(BaseModelError, match="needs a local checkpoint path"):
        materialize_base("llama3-8b")
    with pytest.raises(BaseModelError, match="does not exist.*nothing is downloaded"):
        materialize_base("llama3-8b", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelError, match="lacks config.json"):
        materialize_base("llama3-8b", str(tmp_path / "empty"))


def test_local_profile_is_fingerprinted_and_located(tiny_base, tmp_path):
    checkpoint = tmp_path / "local-llama"
    shutil.copytree(tiny_base, checkpoint, ignore=shutil.ignore_patterns("fingerprint.json"))
    record, _ = materialize_base("llama3-8b", str(checkpoint))
    assert base_model_path("llama3-8b") == checkpoint and len(record["fingerprint"]) == 16
    (checkpoint / "config.json").write_text((checkpoint / "config.json").read_text().replace("silu", "gelu"))
    assert materialize_base("llama3-8b", str(checkpoint))[0]["fingerprint"] != record["fingerprint"]


def test_corpus_pulls_strings_from_any_format_and_skips_bad_lines(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"instruction": "질문", "input": "맥락", "output": "답변"}, ensure_ascii=False) + "\n"
        + "{not json\n"
        + json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}) + "\n"
    )
    (tmp_path / "b.json").write_text(json.dumps([{"meta": {"deep": ["nested text"]}}]))
    strings, documents = collect_corpus([tmp_path])
    assert {"질문", "맥락", "답변", "hi", "hello", "nested text"} <= set(strings)
    assert len(documents) == 2 and all(d.startswith("<|begin_of_text|>") for d in documents)
    assert as_messages({"messages": [{"role": "user", "content": "x"}]}) == [{"role": "user", "content": "x"}]
