"""The base chosen once reaches cleaning: a second local checkpoint with another tokenizer changes
the token counts that `cleaned_dataset` reports."""
from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from qlora.modeling.corpus import collect_corpus
from qlora.modeling.tiny_base import TinyBaseSpec, build_model, train_tokenizer
from qlora_assets.data.assets import cleaned_dataset, raw_instructions
from qlora_assets.modeling.assets import base_model
from resources.base_model import BaseModelResource
from resources.warehouse import WarehouseResource

REPO = Path(__file__).resolve().parents[2]
DOMAIN = "legal-ko"


def _checkpoint(folder: Path, vocab_size: int) -> Path:
    """A random 1-layer Llama (weights do not matter here) with a tokenizer of ``vocab_size``."""
    strings, _ = collect_corpus([REPO / "data" / "training" / DOMAIN])
    spec = TinyBaseSpec(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    tokenizer = train_tokenizer(strings, spec)
    build_model(tokenizer, spec).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _token_counts(instance, checkpoint: Path) -> tuple[dict, str]:
    resource = BaseModelResource(profile="llama3-8b", path=str(checkpoint), measure_quantization_gap=False)
    assert dg.materialize([base_model], instance=instance, resources={"base_checkpoint": resource}).success
    result = dg.materialize([raw_instructions, cleaned_dataset], partition_key=DOMAIN, instance=instance,
                            resources={"warehouse": WarehouseResource()}, raise_on_error=False)
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "token_lengths")
    metadata = result.asset_materializations_for_node("cleaned_dataset")[0].metadata
    counts = {k: check.metadata[k].value for k in ("instruction_tokens_max", "output_tokens_max", "output_tokens_min")}
    return counts, metadata["tokenizer"].value


@pytest.mark.slow  # two cleaning runs of a domain: ~30 s on 2 idle cores
def test_another_checkpoints_tokenizer_changes_cleaned_dataset_token_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("QLORA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QLORA_DATA_DIR", str(tmp_path / "data"))
    shutil.copytree(REPO / "data", tmp_path / "data")
    small_vocab = _checkpoint(tmp_path / "ckpt-small-vocab", 300)
    large_vocab = _checkpoint(tmp_path / "ckpt-large-vocab", 3000)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("domain", [DOMAIN])
        small, small_name = _token_counts(instance, small_vocab)
        large, large_name = _token_counts(instance, large_vocab)
    assert str(small_vocab) in small_name and str(large_vocab) in large_name
    # A larger vocabulary merges more: the same rows are fewer tokens.
    assert large["instruction_tokens_max"] < small["instruction_tokens_max"]
    assert large["output_tokens_max"] < small["output_tokens_max"]
