"""Online A/B area definitions: the four assets, the evaluation job and its sensor (resources
`serving` and `warehouse` bound in definitions.py)."""
import dagster as dg

from qlora_assets.ab.assets import ab_decision, ab_experiment, ab_feedback_candidates, online_report
from qlora_assets.ab.sensors import ab_evaluation, ab_experiment_sensor

defs = dg.Definitions(assets=[ab_experiment, online_report, ab_decision, ab_feedback_candidates],
                      jobs=[ab_evaluation], sensors=[ab_experiment_sensor])
