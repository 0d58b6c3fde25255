import os

import dagster as dg

from qlora_assets.training.assets import qlora_adapter
from qlora_assets.training.cost_report import cost_report
from resources.trainer import TrainerResource

# QLORA_TRAINER_LAUNCHER=k8s trains in a pod per run (configs/prod.yaml, k8s:); default: on this host.
defs = dg.Definitions(
    assets=[qlora_adapter, cost_report],
    resources={"trainer": TrainerResource(launcher=os.environ.get("QLORA_TRAINER_LAUNCHER", "subprocess"))},
)
