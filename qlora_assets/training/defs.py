import os

import dagster as dg

from qlora.modeling.profiles import selected_profile, training_config_for
from qlora_assets.training.assets import qlora_adapter
from resources.trainer import TrainerResource

# QLORA_TRAINER_LAUNCHER=k8s trains in a pod per run (configs/prod.yaml, k8s:); default: on this host.
defs = dg.Definitions(
    assets=[qlora_adapter],
    # The training profile follows the base profile (QLORA_BASE_PROFILE): tiny-cpu, smollm2-135m-cpu, ...
    resources={"trainer": TrainerResource(config=training_config_for(selected_profile()),
                                          launcher=os.environ.get("QLORA_TRAINER_LAUNCHER", "subprocess"))},
)
