"""Merge an adapter into its base reloaded in bf16 (merging into the 4-bit base would bake in its rounding)."""
from __future__ import annotations

from pathlib import Path

from qlora.core.io import read_json


def adapter_base_path(adapter_dir: Path) -> Path:
    manifest = adapter_dir / "manifest.json"
    if manifest.is_file():
        return Path(read_json(manifest, "adapter manifest")["base"]["path"])
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; not a peft adapter folder")
    return Path(read_json(config, "adapter config")["base_model_name_or_path"])


def merge_adapter(adapter_dir: Path, output_dir: Path, base_path: Path | None = None) -> Path:
    import torch
    from qlora.core import bnb_notice  # noqa: F401  (before peft loads bitsandbytes)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"{output_dir} is not empty; merge writes a new folder")
    base_path = Path(base_path) if base_path else adapter_base_path(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(base_path).save_pretrained(output_dir)
    return output_dir
