"""The one Definitions object: assets, checks, jobs, sensors, schedules and resources.

Each area of ``qlora_assets`` exports its own ``defs`` (assets and automation, no resources);
the resources are chosen here, in one place, by ``QLORA_PROFILE`` (as dagster's
project_fully_featured picks RESOURCES_LOCAL / RESOURCES_PROD):

- ``local`` (default): the embedded server, the trainer as a subprocess on this host, the
  warehouse under QLORA_HOME, the tiny base built locally.
- ``prod``: vLLM behind the router (``QLORA_SERVING_URL``, ``QLORA_SERVING_API_KEY``), the base
  from a local checkpoint (``QLORA_BASE_MODEL_PATH``), the trainer and GPU pool of
  configs/prod.yaml (``trainer:``, ``gpu:``; ``QLORA_TRAINER_LAUNCHER`` overrides the launcher).

Both load without contacting anything or needing a checkpoint: the prod variables are dg.EnvVar
values, resolved when a run that needs them starts (which then fails naming the variable).
Instance settings (Postgres, run queue) are not code: deploy/prod/dagster.yaml in DAGSTER_HOME.
"""
import os
from pathlib import Path

import dagster as dg

from qlora.core.paths import paths
from qlora.modeling.profiles import selected_profile as selected_base_profile, training_config_for
from qlora_assets.ab import defs as ab_area
from qlora_assets.automation import defs as automation_area
from qlora_assets.automation.conditions import apply_automation_conditions
from qlora_assets.data import defs as data_area
from qlora_assets.deploy import defs as deploy_area
from qlora_assets.evaluation import defs as evaluation_area
from qlora_assets.modeling import defs as modeling_area
from qlora_assets.training import defs as training_area
from resources.base_model import BaseModelResource
from resources.gpu import GpuResource
from resources.serving import EmbeddedServingResource, VllmServingResource
from resources.trainer import trainer_from_prod_config, trainer_on_this_host
from resources.tracking import MlflowTrackingResource
from resources.warehouse import WarehouseResource

PROFILE_ENV = "QLORA_PROFILE"
LAUNCHER_ENV = "QLORA_TRAINER_LAUNCHER"
PROD_CONFIG_ENV = "QLORA_PROD_CONFIG"

# The base is chosen once ($QLORA_BASE_PROFILE: tiny, smollm2-135m, ...); the trainer's profile is the one
# sized for that base, and cleaning, serving and eval follow the base_model materialisation.
RESOURCES_LOCAL = {
    "warehouse": WarehouseResource(),
    "serving": EmbeddedServingResource(),
    "trainer": trainer_on_this_host(training_config_for(selected_base_profile())),
    "base_checkpoint": BaseModelResource(profile=selected_base_profile()),
    "tracking": MlflowTrackingResource(),
}


def prod_resources(prod_config: Path, launcher: str | None) -> dict:
    """RESOURCES_PROD: what a GPU box with vLLM binds (see the module doc)."""
    gpu = GpuResource.from_prod_config(prod_config) if prod_config.is_file() else GpuResource()
    return {
        "warehouse": WarehouseResource(),
        "serving": VllmServingResource(url=dg.EnvVar("QLORA_SERVING_URL"),
                                       api_key=dg.EnvVar("QLORA_SERVING_API_KEY")),
        "trainer": trainer_from_prod_config(prod_config, gpu, launcher),
        "base_checkpoint": BaseModelResource(profile="llama3-8b", path=dg.EnvVar("QLORA_BASE_MODEL_PATH")),
        # MLFLOW_TRACKING_URI names the team's server; unset, the store under QLORA_HOME.
        "tracking": MlflowTrackingResource(),
    }


# The only environment read at load time: which profile, where its config file is, the launcher override
# (and, above, QLORA_BASE_PROFILE through qlora.modeling.profiles).
RESOURCES_PROD = prod_resources(Path(os.environ.get(PROD_CONFIG_ENV) or paths().config_dir / "prod.yaml"),
                                os.environ.get(LAUNCHER_ENV) or None)
RESOURCES_BY_PROFILE = {"local": RESOURCES_LOCAL, "prod": RESOURCES_PROD}


def selected_profile() -> str:
    profile = os.environ.get(PROFILE_ENV, "local").strip() or "local"
    if profile not in RESOURCES_BY_PROFILE:
        raise ValueError(f"{PROFILE_ENV}={profile!r}: expected one of {', '.join(RESOURCES_BY_PROFILE)} "
                         "(unset = local)")
    return profile


# Eval, gate and deploy follow a new adapter on their own (declarative automation);
# the weekly schedule and the sensors in qlora_assets/automation are the backstop.
defs = apply_automation_conditions(
    dg.Definitions.merge(
        data_area.defs,
        modeling_area.defs,
        training_area.defs,
        evaluation_area.defs,
        deploy_area.defs,
        ab_area.defs,
        automation_area.defs,
        dg.Definitions(resources=RESOURCES_BY_PROFILE[selected_profile()]),
    )
)
