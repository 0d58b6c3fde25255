"""The data area's Dagster definitions: the three data assets (their checks ride on them)."""
import dagster as dg

from qlora_assets.data.assets import cleaned_dataset, raw_instructions, train_eval_split

defs = dg.Definitions(assets=[raw_instructions, cleaned_dataset, train_eval_split])
