"""Data area definitions: the three data assets, their checks riding on them (resources bound in definitions.py)."""
import dagster as dg

from qlora_assets.data.assets import cleaned_dataset, raw_instructions, train_eval_split

defs = dg.Definitions(assets=[raw_instructions, cleaned_dataset, train_eval_split])
