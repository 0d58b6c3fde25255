"""Modeling area definitions: the `base_model` asset (resource `base_checkpoint` bound in definitions.py)."""
import dagster as dg

from qlora_assets.modeling.assets import base_model

defs = dg.Definitions(assets=[base_model])
