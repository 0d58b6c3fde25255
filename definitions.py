"""The one Definitions object: assets, checks, jobs, sensors, schedules and resources.

Each area of ``qlora_assets`` exports its own ``defs``; this module merges them and binds the
resources that several areas share. (Areas are imported as modules: Dagster allows one
Definitions object at this module's scope.)
"""
import dagster as dg

from qlora_assets.automation.conditions import apply_automation_conditions
from qlora_assets.automation import defs as automation_area
from qlora_assets.data import defs as data_area
from qlora_assets.deploy import defs as deploy_area
from qlora_assets.evaluation import defs as evaluation_area
from qlora_assets.modeling import defs as modeling_area
from qlora_assets.training import defs as training_area
from resources.serving import EmbeddedServingResource
from resources.tracking import MlflowTrackingResource
from resources.warehouse import WarehouseResource

# Eval, gate and deploy follow a new adapter on their own (declarative automation);
# the weekly schedule and the sensors in qlora_assets/automation are the backstop.
defs = apply_automation_conditions(
    dg.Definitions.merge(
        data_area.defs,
        modeling_area.defs,
        training_area.defs,
        evaluation_area.defs,
        deploy_area.defs,
        automation_area.defs,
        # Shared by several areas; the prod profile swaps serving for VllmServingResource.
        dg.Definitions(resources={"warehouse": WarehouseResource(), "serving": EmbeddedServingResource(),
                                  "tracking": MlflowTrackingResource()}),
    )
)
