"""Deploy area definitions: the `deployed_adapter` asset (resources `serving` and `warehouse` bound in definitions.py)."""
import dagster as dg

from qlora_assets.deploy.assets import deployed_adapter

defs = dg.Definitions(assets=[deployed_adapter])
