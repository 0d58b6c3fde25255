import dagster as dg

from qlora_assets.training.assets import qlora_adapter
from resources.trainer import TrainerResource

defs = dg.Definitions(assets=[qlora_adapter], resources={"trainer": TrainerResource()})
