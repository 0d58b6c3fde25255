"""Evaluation area definitions: `eval_report` and `gate_decision` (resources `serving`, `warehouse` bound in definitions.py)."""
import dagster as dg

from qlora_assets.evaluation.assets import eval_report, gate_decision

defs = dg.Definitions(assets=[eval_report, gate_decision])
