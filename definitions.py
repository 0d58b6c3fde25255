"""The one Definitions object: assets, checks, jobs, sensors, schedules and resources.

Each area of ``qlora_assets`` exports its own ``defs``; this module merges them
and binds the shared resources.
"""
import importlib

import dagster as dg

from qlora_assets.automation.conditions import apply_automation_conditions
from resources.serving import EmbeddedServingResource
from resources.warehouse import WarehouseResource

AREAS = ["data", "modeling", "training", "evaluation", "deploy", "automation"]


def _area_defs() -> list[dg.Definitions]:
    found = []
    for area in AREAS:
        try:
            module = importlib.import_module(f"qlora_assets.{area}.defs")
        except ModuleNotFoundError as exc:  # an area not built yet
            if exc.name != f"qlora_assets.{area}.defs":
                raise
            continue
        found.append(module.defs)
    return found


# Eval, gate and deploy follow a new adapter on their own (declarative automation);
# the weekly schedule and the sensors in qlora_assets/automation are the backstop.
defs = apply_automation_conditions(
    dg.Definitions.merge(
        *_area_defs(),
        # Shared by several areas; the prod profile swaps serving for VllmServingResource.
        dg.Definitions(resources={"warehouse": WarehouseResource(), "serving": EmbeddedServingResource()}),
    )
)
