"""Can this adapter be served? vLLM's rules, checked before any weights are read.

Used by the embedded server at load time, by the router in front of vLLM, and by
``qlora serve --backend vllm --check-adapter`` so a deploy learns why an adapter
would be refused before vLLM refuses it. Messages are vLLM's (vllm/lora/peft_helper.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qlora.core.io import JsonInputError, read_json

# vLLM's LoRAConfig accepts only these values for --max-lora-rank.
ALLOWED_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class AdapterPathError(FileNotFoundError):
    """No adapter_config.json at the path (vLLM answers 404)."""


class AdapterRefused(ValueError):
    """The adapter exists but cannot be served; ``reasons`` names each rule it breaks (vLLM answers 400)."""

    def __init__(self, reasons: list[str]):
        super().__init__(" ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class AdapterFacts:
    path: str
    rank: int
    target_modules: list[str] | str
    modules_to_save: list[str] = field(default_factory=list)
    use_dora: bool = False
    bias: str = "none"
    base_model: str = ""


def check_max_lora_rank(value: int, where: str = "max_lora_rank") -> int:
    if value not in ALLOWED_MAX_LORA_RANKS:
        raise ValueError(f"{where}: {value} is not allowed; vLLM accepts one of {list(ALLOWED_MAX_LORA_RANKS)}")
    return value


def read_adapter(path: str | Path) -> AdapterFacts:
    """Read ``adapter_config.json`` of a peft LoRA folder."""
    config_file = Path(path) / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterPathError(str(path))
    try:
        config = read_json(config_file, "adapter config")
    except JsonInputError as exc:
        raise AdapterRefused([f"{exc}."]) from None
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterRefused([f"{config_file}: peft_type {config.get('peft_type')!r} is not LORA."])
    ranks = [int(config.get("r", 0)), *(int(v) for v in (config.get("rank_pattern") or {}).values())]
    return AdapterFacts(
        path=str(path),
        rank=max(ranks),
        target_modules=config.get("target_modules") or [],
        modules_to_save=list(config.get("modules_to_save") or []),
        use_dora=bool(config.get("use_dora")),
        bias=str(config.get("bias") or "none"),
        base_model=str(config.get("base_model_name_or_path") or ""),
    )


def refusal_reasons(facts: AdapterFacts, max_lora_rank: int) -> list[str]:
    """Every rule the adapter breaks, in vLLM's words; empty when it can be served."""
    reasons = []
    if facts.modules_to_save:
        reasons.append(
            "vLLM only supports modules_to_save being None."
            f" (this adapter saves {facts.modules_to_save}; train without modules_to_save)"
        )
    if facts.use_dora:
        reasons.append("vLLM does not yet support DoRA.")
    if facts.rank > max_lora_rank:
        reasons.append(f"LoRA rank {facts.rank} is greater than max_lora_rank {max_lora_rank}.")
    if facts.bias != "none":
        reasons.append("Adapter bias is not supported.")
    return reasons


def validate_adapter(path: str | Path, max_lora_rank: int) -> AdapterFacts:
    """Raise AdapterPathError (404) or AdapterRefused (400) as vLLM would; return the facts otherwise."""
    facts = read_adapter(path)
    reasons = refusal_reasons(facts, max_lora_rank)
    if reasons:
        raise AdapterRefused(reasons)
    return facts


class AdapterOutsideRoot(PermissionError):
    """The path escapes the adapters root (``..`` or a symlink): nothing is read from it (403)."""


def adapter_path_under_root(lora_path: str, root: Path) -> Path:
    """Resolve symlinks and refuse anything outside the adapters root (no '..', no symlink escape)."""
    raw = Path(lora_path)
    if ".." in raw.parts:
        raise AdapterOutsideRoot(f"lora_path {lora_path!r} must not contain '..'")
    resolved = (raw if raw.is_absolute() else root / raw).resolve()
    if not resolved.is_relative_to(Path(root).resolve()):
        raise AdapterOutsideRoot(f"lora_path {lora_path!r} is outside the adapters root {root}")
    return resolved
