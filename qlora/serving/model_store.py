"""One base model (NF4 or plain) and the LoRA adapters loaded on it, with one forward for mixed batches.

peft keeps every loaded adapter on the same module tree; ``adapter_names=[...]`` in the
forward picks an adapter per row (``"__base__"`` for the base), so requests for different
adapters share one forward pass, as vLLM's punica kernels do on GPU.
"""
from __future__ import annotations

from pathlib import Path

import torch

from qlora.serving.adapters import validate_adapter
from qlora.serving.attention import use_grouped_attention

BASE_ROW = "__base__"  # peft's name for "no adapter" in a mixed batch
NF4_DEQUANTIZED = "nf4-dequantized"


def hold_dequantized(model, dtype) -> None:
    """Swap every 4-bit linear for a plain one holding its dequantised weight: the very values
    training's NF4 base computed with, without dequantising them again on every call (offline,
    bitsandbytes' CPU fallback does that per forward, most of a decode step's time)."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                plain = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                        dtype=dtype, device=child.weight.device)
                with torch.no_grad():
                    plain.weight.copy_(dequantize_4bit(child.weight.data, child.weight.quant_state).to(dtype))
                    if child.bias is not None:
                        plain.bias.copy_(child.bias.to(dtype))
                setattr(parent, name, plain.eval())
    # The model is no longer quantised: peft wraps plain linears and transformers' checks agree.
    model.is_loaded_in_4bit = False
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.config.quantization_config = None


def contiguous_head_input(model) -> None:
    """Hand the output head a contiguous input. With ``logits_to_keep=1`` transformers slices the
    last position out of a prefill's hidden states, a strided view; ``linear`` on a strided 3-D
    input falls back to a batched matmul that first copies the head's weight once per row
    (SmolLM2, 32 prompts: a 1.8 GB copy, a third of the prefill). Copying the slice costs one row."""
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(lambda _module, args: (args[0].contiguous(), *args[1:]))


def load_base(path: Path, quantization: str, compute_dtype: str):
    from qlora.core import bnb_notice  # noqa: F401  (before bitsandbytes loads)
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    dtype = getattr(torch, compute_dtype)
    kwargs = {"dtype": dtype}
    if quantization in ("nf4", NF4_DEQUANTIZED):
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()
    if quantization == NF4_DEQUANTIZED:
        hold_dequantized(model, dtype)
    contiguous_head_input(model)
    use_grouped_attention(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None:
        raise ValueError(f"{path}: the tokenizer has no chat_template; the server applies the base's template")
    return model, tokenizer


class ModelStore:
    """Not thread-safe: only the engine thread calls it, so loads never race a forward pass."""

    def __init__(self, base_path: Path, quantization: str = "nf4", compute_dtype: str = "float32",
                 max_lora_rank: int = 64, max_loras: int = 16):
        self.base_path = Path(base_path)
        self.base, self.tokenizer = load_base(self.base_path, quantization, compute_dtype)
        self.peft = None  # a PeftModel once the first adapter is loaded
        self.adapter_paths: dict[str, str] = {}
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras

    @property
    def config(self):
        return self.base.config

    def load_adapter(self, name: str, path: str) -> None:
        """Raises AdapterPathError / AdapterRefused (vLLM's rules) or ValueError (peft could not load it)."""
        if name in self.adapter_paths:  # two concurrent loads of one name: the second one loses
            raise ValueError(f"The lora adapter '{name}' has already been loaded.")
        validate_adapter(path, self.max_lora_rank)
        if len(self.adapter_paths) >= self.max_loras:
            raise ValueError(
                f"Cannot load adapter {name!r}: {len(self.adapter_paths)} adapters are loaded and max_loras is "
                f"{self.max_loras}. Unload one first."
            )
        from peft import PeftModel

        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, path, adapter_name=name, is_trainable=False)
            else:
                self.peft.load_adapter(path, adapter_name=name, is_trainable=False)
        except Exception as exc:  # shape mismatch, missing weights: the adapter is not for this base
            if self.peft is not None and name in self.peft.peft_config:
                self._delete(name)
            raise ValueError(f"Loading lora {name} failed: {exc}") from exc
        self.peft.eval()
        self.adapter_paths[name] = str(path)

    def unload_adapter(self, name: str) -> None:
        self._delete(name)
        self.adapter_paths.pop(name, None)

    def _delete(self, name: str) -> None:
        if len(self.peft.peft_config) == 1:
            # peft cannot run with zero adapters; strip the LoRA layers and go back to the plain base.
            self.base = self.peft.unload()
            self.peft = None
        else:
            self.peft.delete_adapter(name)

    @torch.inference_mode()
    def forward(self, input_ids, attention_mask, position_ids, cache, adapters: list[str | None]):
        """Logits of the last position for each row; ``adapters[i]`` None means the base."""
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      past_key_values=cache, use_cache=True, logits_to_keep=1)
        if self.peft is None:
            out = self.base(**kwargs)
        elif len(set(adapters)) == 1:
            # One model for the whole batch (an eval run, most traffic): peft's plain path. Its
            # mixed-batch path splits every LoRA layer's input by adapter, even into one group.
            out = self._forward_one(adapters[0], kwargs)
        else:
            out = self.peft(**kwargs, adapter_names=[a or BASE_ROW for a in adapters])
        return out.logits[:, -1, :].float()

    def _forward_one(self, adapter: str | None, kwargs: dict):
        if adapter is None:
            with self.peft.disable_adapter():
                return self.peft(**kwargs)
        if self.peft.active_adapter != adapter:
            self.peft.set_adapter(adapter, inference_mode=True)
        return self.peft(**kwargs)
