"""Jobs, sensors and the weekly schedule; picked up by definitions.py."""
import dagster as dg

from qlora_assets.automation.jobs import build_base_model, retrain_domain, weekly_cycle
from qlora_assets.automation.schedules import weekly_cycle_schedule
from qlora_assets.automation.sensors import config_change_sensor, training_data_sensor
from qlora_assets.automation.serving_sensor import serving_observation_sensor
from qlora_assets.automation.tracking_sensor import experiment_tracking_sensor

# Dagster's default automation sensor starts stopped; eval, gate and deploy follow a new adapter
# only while it runs (conditions.py), so it is declared here, running on a fresh instance.
automation_condition_sensor = dg.AutomationConditionSensorDefinition(
    name="default_automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches eval_report, gate_decision and deployed_adapter when their conditions say so.",
)

defs = dg.Definitions(
    jobs=[weekly_cycle, retrain_domain, build_base_model],
    sensors=[training_data_sensor, config_change_sensor, serving_observation_sensor, experiment_tracking_sensor,
             automation_condition_sensor],
    schedules=[weekly_cycle_schedule],
)
