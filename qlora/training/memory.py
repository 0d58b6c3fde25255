"""Peak GPU memory of a QLoRA run as a function of model shape and settings, calibrated on measurements.

Each term is an analytic byte count (what the tensors must hold); the calibration
(configs/calibration/<gpu>.json, fitted by `qlora.training.calibration`) scales the terms that
depend on kernels and allocator behaviour and adds a constant:

    peak = weights + lora + a[recipe] * activations + b[loss] * loss_buffers + e * offload_in_flight + c

- weights: the NF4 body (4 bits + 0.127 bit of double-quantised block constants per weight) and
  the embeddings/lm_head in bf16 (fp32 when the seed's `prepare_model_for_kbit_training` upcasts);
  without the input table when `speed.embedding_on_host` keeps it in host memory;
- lora: fp32 weights and gradients (the paged 8-bit optimizer's state is managed memory, outside
  PyTorch's allocator, so it is not in the measured peak and not counted here);
- activations of one micro-batch of T tokens: a kept (not recomputed) layer holds
  (6d + 2kv + 3ff) values per token (norm inputs/outputs, q/k/v, attention output, gate, up and
  their product); a recomputed layer holds only its input; one recomputed layer is live in backward;
  an offloaded layer holds nothing once copied to host memory, the copies in flight a few kept
  layers' worth (qlora/training/offload_model.py), one with eager release;
- loss buffers: full-vocabulary logits (the seed's loss), one chunk of them (chunked loss) or
  Liger's fused kernel's chunk and input gradient.
No torch import: `qlora plan` runs this on any machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GIB = 2**30
NF4_BITS = {True: 4 + 8 / 64 + 32 / (64 * 256), False: 4 + 32 / 64}  # double quant on / off
Recipe = Literal["seed", "fast"]
Loss = Literal["full", "chunked", "fused"]
LOSS_CHUNK_TOKENS = 4096
INFLIGHT_LAYERS = 3  # offload: copies pending + the layer being saved (qlora/training/fast/offload.py)
# With speed.offload_eager_release nothing offloaded is on the GPU at the forward's end and a copy back
# takes only memory the backward has freed: what remains at the peak is one layer's worth at most.
INFLIGHT_LAYERS_EAGER = 1


@dataclass(frozen=True)
class Shape:
    """A Llama-style decoder's shape (what config.json says); enough for memory and FLOPs."""

    name: str
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    tie_embeddings: bool = False

    @property
    def kv_dim(self) -> int:
        return self.hidden * self.kv_heads // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each decoder linear."""
        d, kv, ff = self.hidden, self.kv_dim, self.intermediate
        return {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
                "gate_proj": (d, ff), "up_proj": (d, ff), "down_proj": (ff, d)}

    @property
    def body_params(self) -> int:
        return self.layers * sum(i * o for i, o in self.linear_shapes().values())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tie_embeddings else 2)

    def lora_params(self, r: int, modules: list[str]) -> int:
        shapes = self.linear_shapes()
        unknown = sorted(set(modules) - set(shapes))
        if unknown:
            raise ValueError(f"target_modules {unknown} are not linears of a Llama decoder ({sorted(shapes)})")
        return self.layers * sum(r * (shapes[m][0] + shapes[m][1]) for m in modules)

    def flops_per_token(self, r: int, modules: list[str], seq_len: int) -> float:
        """Model FLOPs per token with a frozen base: 4*N_mm + 6*N_lora + 12*L*d*s."""
        n_mm = self.body_params + self.vocab * self.hidden
        return 4 * n_mm + 6 * self.lora_params(r, modules) + 12 * self.layers * self.hidden * seq_len

    @classmethod
    def from_hf_config(cls, config: dict, name: str = "config.json") -> "Shape":
        try:
            return cls(name=name, vocab=config["vocab_size"], hidden=config["hidden_size"],
                       intermediate=config["intermediate_size"], layers=config["num_hidden_layers"],
                       heads=config["num_attention_heads"],
                       kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
                       tie_embeddings=bool(config.get("tie_word_embeddings", False)))
        except KeyError as missing:
            raise ValueError(f"{name}: field {missing} missing; not a Llama-style decoder config") from None


# The published config.json values of Meta's Llama 3.x models, so planning needs no checkpoint.
KNOWN_SHAPES = {
    "llama-3.2-1b": Shape("llama-3.2-1b", 128256, 2048, 8192, 16, 32, 8, True),
    "llama-3.2-3b": Shape("llama-3.2-3b", 128256, 3072, 8192, 28, 24, 8, True),
    "llama-3.1-8b": Shape("llama-3.1-8b", 128256, 4096, 14336, 32, 32, 8, False),
    "llama-3.1-70b": Shape("llama-3.1-70b", 128256, 8192, 28672, 80, 64, 8, False),
}


def canonical(shape: Shape) -> Shape:
    """A known Llama 3.x shape under its name (its calibration applies), else the shape as given."""
    from dataclasses import replace

    return next((known for known in KNOWN_SHAPES.values() if replace(shape, name=known.name) == known), shape)


PROFILE_SHAPES = {"llama3-8b": "llama-3.1-8b", "llama3-70b": "llama-3.1-70b",
                  "llama3-1b": "llama-3.2-1b", "llama3-3b": "llama-3.2-3b"}


@dataclass(frozen=True)
class Setup:
    """What decides the peak besides the shape."""

    recipe: Recipe
    loss: Loss
    micro_batch_tokens: int
    recomputed_layers: int
    r: int = 64
    offloaded_layers: int = 0
    modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    double_quant: bool = True
    recompute_inputs: bool = False  # speed.recompute_lora_inputs
    eager_release: bool = False  # speed.offload_eager_release
    embedding_on_host: bool = False  # speed.embedding_on_host: the input table off the GPU
    compact_kv: bool = False  # speed.compact_gqa_saves: no expanded K/V kept for cuDNN's backward


def kept_layer_bytes_per_token(shape: Shape, recipe: Recipe = "fast", recompute_inputs: bool = False) -> int:
    """What a kept (not recomputed) decoder layer saves for backward, per token; with
    speed.recompute_lora_inputs the two norm outputs and the SwiGLU product are rerun instead."""
    d, kv, ff = shape.hidden, shape.kv_dim, shape.intermediate
    kept = ((4 * d + 2 * kv + 2 * ff) if recompute_inputs and recipe == "fast" else (6 * d + 2 * kv + 3 * ff)) * 2
    if recipe == "seed":  # peft's LoRA keeps a dropped-out copy + mask per module; fp32 residual and norm outputs
        kept += (6 * d + ff) * 3 + 4 * d * 2
    return kept


def gqa_expansion_bytes_per_token(shape: Shape) -> int:
    """What cuDNN's attention keeps beyond the analytic count of a kept layer: K and V expanded to
    every query head (fast/varlen_attention.py). The calibrated activation coefficient absorbed it
    (70B: the pool measured 1.16 GiB a layer, 1.05 analytic + 0.11 expansion); speed.compact_gqa_saves
    keeps the grouped heads instead (fast/gqa_saves.py), so those bytes come off."""
    return 2 * (shape.hidden - shape.kv_dim) * 2


def compact_kv_factor(shape: Shape, recompute_inputs: bool) -> float:
    """The share of an offloaded layer's copies left with speed.compact_gqa_saves."""
    kept = kept_layer_bytes_per_token(shape, "fast", recompute_inputs)
    expansion = gqa_expansion_bytes_per_token(shape)
    return kept / (kept + expansion)


def memory_terms(shape: Shape, setup: Setup) -> dict[str, float]:
    """The analytic terms in bytes (before calibration)."""
    d, tokens = shape.hidden, setup.micro_batch_tokens
    recomputed = min(max(setup.recomputed_layers, 0), shape.layers)
    offloaded = min(max(setup.offloaded_layers, 0), shape.layers - recomputed)
    kept = shape.layers - recomputed - offloaded
    seed = setup.recipe == "seed"
    tables = shape.embedding_params - (shape.vocab * d if setup.embedding_on_host and not shape.tie_embeddings else 0)
    weights = shape.body_params * NF4_BITS[setup.double_quant] / 8 + tables * (4 if seed else 2)
    lora = shape.lora_params(setup.r, list(setup.modules)) * (4 + 4)
    kept_layer = kept_layer_bytes_per_token(shape, setup.recipe, setup.recompute_inputs)
    layer_input = d * (4 if seed else 2)
    # Offload: the copies in flight, and (when no recomputed layer is live in backward already) the
    # restored layer being backpropagated.
    if setup.eager_release:
        in_flight = tokens * kept_layer * min(offloaded, INFLIGHT_LAYERS_EAGER)
    else:
        in_flight = tokens * kept_layer * (min(offloaded, INFLIGHT_LAYERS) + (1 if offloaded and not recomputed else 0))
    activations = tokens * (kept * kept_layer + recomputed * layer_input + (kept_layer if recomputed else 0))
    chunk = min(tokens, LOSS_CHUNK_TOKENS)
    loss = {
        "full": tokens * shape.vocab * (2 + 4 + 4),  # bf16 logits, their fp32 copy and its gradient
        "chunked": chunk * shape.vocab * (2 + 4 + 4),
        "fused": tokens * d * 2 + max(tokens // 32, 1) * shape.vocab * 8,
    }[setup.loss]
    workspace = 2 * max(i * o for i, o in shape.linear_shapes().values()) * 2  # dequantised bf16 weights
    compact_saving = 0.0
    if setup.compact_kv and setup.recipe == "fast":  # kept layers and those in flight no longer hold the expansion
        compact_saving = tokens * gqa_expansion_bytes_per_token(shape) * (kept + in_flight / max(tokens * kept_layer, 1))
    return {"weights": weights, "lora": lora, "activations": activations, "loss": loss, "workspace": workspace,
            "in_flight": in_flight, "compact_kv_saving": compact_saving}


DEFAULT_COEFFICIENTS = {"activations": {"seed": 1.0, "fast": 1.0},
                        "loss": {"full": 1.0, "chunked": 1.0, "fused": 1.0}, "in_flight": 1.0, "constant_gib": 1.0}


def predict_peak_gib(shape: Shape, setup: Setup, coefficients: dict | None = None) -> dict[str, float]:
    """Each calibrated term and the total, in GiB."""
    c = coefficients or DEFAULT_COEFFICIENTS
    terms = memory_terms(shape, setup)
    parts = {
        "weights": terms["weights"] / GIB,
        "lora": terms["lora"] / GIB,
        "activations": (c["activations"][setup.recipe] * terms["activations"]
                        + c.get("in_flight", 1.0) * terms["in_flight"] - terms["compact_kv_saving"]) / GIB,
        "loss": c["loss"][setup.loss] * terms["loss"] / GIB,
        "workspace": (terms["workspace"] / GIB) + c["constant_gib"],
    }
    return {k: round(v, 2) for k, v in {**parts, "total": sum(parts.values())}.items()}
