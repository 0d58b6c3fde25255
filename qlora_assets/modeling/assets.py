"""The `base_model` asset: the chosen base (resource `base_checkpoint`) built or verified, fingerprinted."""
from pathlib import Path

import dagster as dg

from qlora.modeling.base_checks import chat_template_check, quantization_gap
from qlora.modeling.base_model import TINY, param_count
from qlora.modeling.corpus import collect_corpus
from qlora.core.paths import paths
from resources.base_model import BaseModelResource

TEMPLATE_CHECK = "chat_template_matches_tokenizer"
CPU_GAP_MAX_PARAMS = 300_000_000  # above this, the NF4-vs-bf16 perplexity waits for a GPU


def _quantization_metadata(model_path: Path, profile: str, parameters: int, wanted: bool) -> dict:
    import torch

    if not wanted:
        return {"quantization_gap": "not measured: disabled on the resource"}
    if parameters > CPU_GAP_MAX_PARAMS and not torch.cuda.is_available():
        return {"quantization_gap": f"not measured: a {parameters:,}-parameter base needs CUDA for this"}
    _, documents = collect_corpus([paths().eval_dir])
    gap = quantization_gap(model_path, documents, max_docs=48 if profile == TINY else 16)
    return {
        "ppl_bf16": dg.MetadataValue.float(gap["ppl_bf16"]),
        "ppl_nf4": dg.MetadataValue.float(gap["ppl_nf4"]),
        "nf4_ppl_gap_pct": dg.MetadataValue.float(gap["gap_pct"]),
    }


@dg.asset(
    kinds={"pytorch", "huggingface"},
    group_name="modeling",
    description="The chosen base checkpoint + tokenizer + chat template, fingerprinted (tiny built, SmolLM2 converted).",
    check_specs=[dg.AssetCheckSpec(TEMPLATE_CHECK, asset="base_model", blocking=True,
                                   description="Chat template, its special tokens and end-of-turn token match the tokenizer.")],
)
def base_model(context: dg.AssetExecutionContext, base_checkpoint: BaseModelResource) -> dg.MaterializeResult:
    from transformers import AutoTokenizer

    record, reused = base_checkpoint.materialize(log=context.log.info)
    model_path = Path(record["model_path"])
    template = chat_template_check(AutoTokenizer.from_pretrained(model_path))
    parameters = param_count(model_path)
    metadata = {
        "profile": record["profile"],
        "fingerprint": record["fingerprint"],
        "path": dg.MetadataValue.path(str(model_path)),
        "parameters": dg.MetadataValue.int(parameters),
        "chat_template": template["family"],
        "reused_cached_build": reused,
        **_quantization_metadata(model_path, record["profile"], parameters, base_checkpoint.measure_quantization_gap),
    }
    if "source_gguf" in record:
        metadata["converted_from"] = dg.MetadataValue.path(record["source_gguf"])
    if "pretrain_loss_last" in record:
        metadata["pretrain_loss_first"] = dg.MetadataValue.float(record["pretrain_loss_first"])
        metadata["pretrain_loss_last"] = dg.MetadataValue.float(record["pretrain_loss_last"])
    check = dg.AssetCheckResult(
        check_name=TEMPLATE_CHECK,
        passed=template["passed"],
        metadata={"problems": "; ".join(template["problems"]) or "none",
                  "rendered_probe": dg.MetadataValue.md(f"```\n{template['rendered_probe']}\n```")},
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])
