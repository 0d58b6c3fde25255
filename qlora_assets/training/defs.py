"""Training area definitions: the `qlora_adapter` asset (resources `trainer`, `warehouse` bound in definitions.py)."""
import dagster as dg

from qlora_assets.training.assets import qlora_adapter
from qlora_assets.training.cost_report import cost_report

defs = dg.Definitions(assets=[qlora_adapter, cost_report])
