"""Jobs, sensors and the weekly schedule; picked up by definitions.py."""
import dagster as dg

from qlora_assets.automation.jobs import build_base_model, retrain_domain, weekly_cycle
from qlora_assets.automation.schedules import weekly_cycle_schedule
from qlora_assets.automation.sensors import config_change_sensor, training_data_sensor

defs = dg.Definitions(
    jobs=[weekly_cycle, retrain_domain, build_base_model],
    sensors=[training_data_sensor, config_change_sensor],
    schedules=[weekly_cycle_schedule],
)
