import dagster as dg

from qlora_assets.modeling.assets import base_model
from resources.base_model import BaseModelResource

# The profile defaults to $QLORA_BASE_PROFILE (else tiny): the one switch for the base.
defs = dg.Definitions(assets=[base_model], resources={"base_checkpoint": BaseModelResource()})
