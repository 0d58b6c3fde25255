"""Dagster resource choosing the base model profile: the embedded tiny Llama, or a local checkpoint."""
import os

import dagster as dg

from qlora.modeling.base_model import TINY, materialize_base


class BaseModelResource(dg.ConfigurableResource):
    """Which base the platform fine-tunes: profile `tiny` (built locally) or e.g. `llama3-8b` at `path`."""

    profile: str = TINY
    path: str = ""  # local HF checkpoint for non-tiny profiles; default $QLORA_BASE_MODEL_PATH
    measure_quantization_gap: bool = True  # NF4-vs-bf16 perplexity (on CPU only for the tiny profile)

    def materialize(self, log=print) -> tuple[dict, bool]:
        return materialize_base(self.profile, self.path or os.environ.get("QLORA_BASE_MODEL_PATH"), log=log)
