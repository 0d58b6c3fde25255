"""The `base_model` asset: a fingerprinted base checkpoint + tokenizer + chat template."""
from pathlib import Path

import dagster as dg

from qlora.modeling.base_checks import chat_template_check, quantization_gap
from qlora.modeling.base_model import TINY, param_count
from qlora.modeling.corpus import collect_corpus
from qlora.core.paths import paths
from resources.base_model import BaseModelResource

TEMPLATE_CHECK = "chat_template_matches_tokenizer"


def _quantization_metadata(model_path: Path, profile: str, wanted: bool) -> dict:
    import torch

    if not wanted:
        return {"quantization_gap": "not measured: disabled on the resource"}
    if profile != TINY and not torch.cuda.is_available():
        return {"quantization_gap": "not measured: a full-size base needs CUDA for this"}
    _, documents = collect_corpus([paths().eval_dir])
    gap = quantization_gap(model_path, documents)
    return {
        "ppl_bf16": dg.MetadataValue.float(gap["ppl_bf16"]),
        "ppl_nf4": dg.MetadataValue.float(gap["ppl_nf4"]),
        "nf4_ppl_gap_pct": dg.MetadataValue.float(gap["gap_pct"]),
    }


@dg.asset(
    kinds={"pytorch", "huggingface"},
    group_name="modeling",
    description="Base checkpoint + tokenizer + Llama-3 chat template, fingerprinted (tiny profile built locally).",
    check_specs=[dg.AssetCheckSpec(TEMPLATE_CHECK, asset="base_model", blocking=True,
                                   description="Chat template and its special tokens match the tokenizer.")],
)
def base_model(context: dg.AssetExecutionContext, base_checkpoint: BaseModelResource) -> dg.MaterializeResult:
    from transformers import AutoTokenizer

    record, reused = base_checkpoint.materialize(log=context.log.info)
    model_path = Path(record["model_path"])
    template = chat_template_check(AutoTokenizer.from_pretrained(model_path))
    metadata = {
        "profile": record["profile"],
        "fingerprint": record["fingerprint"],
        "path": dg.MetadataValue.path(str(model_path)),
        "parameters": dg.MetadataValue.int(param_count(model_path)),
        "reused_cached_build": reused,
        **_quantization_metadata(model_path, record["profile"], base_checkpoint.measure_quantization_gap),
    }
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
