import dagster as dg

from qlora_assets.modeling.assets import base_model
from resources.base_model import BaseModelResource

defs = dg.Definitions(assets=[base_model], resources={"base_checkpoint": BaseModelResource()})
