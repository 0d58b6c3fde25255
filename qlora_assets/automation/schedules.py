"""The weekly cycle on a cron from configs/schedule.yaml: the backstop behind the sensors."""
from __future__ import annotations

import dagster as dg

from qlora_assets.automation.jobs import DOMAIN_ASSETS, weekly_cycle
from qlora.automation.schedule_config import load_schedule_config
from qlora_assets.automation.sensors import base_model_exists
from qlora_assets.partitions import domain_partitions

_WEEKLY = load_schedule_config().weekly_cycle


@dg.schedule(
    name="weekly_cycle_schedule",
    job=weekly_cycle,
    cron_schedule=_WEEKLY.cron,
    execution_timezone=_WEEKLY.timezone,
    default_status=(
        dg.DefaultScheduleStatus.RUNNING if _WEEKLY.default_status == "running" else dg.DefaultScheduleStatus.STOPPED
    ),
    description=f"Every domain, data to deployment, on '{_WEEKLY.cron}' ({_WEEKLY.timezone}).",
)
def weekly_cycle_schedule(context: dg.ScheduleEvaluationContext):
    if not base_model_exists(context.instance):
        return dg.SkipReason("base_model is not materialised yet; the training_data_sensor builds it first")
    domains = sorted(context.instance.get_dynamic_partitions(domain_partitions.name))
    if not domains:
        return dg.SkipReason("no domain partitions yet; the training_data_sensor adds one per data folder")
    week = context.scheduled_execution_time.strftime("%Y-%m-%d")
    # One run per domain, each from raw data to deployment; the shared base is reused, not
    # rebuilt under running trainings (it changes only through its own config).
    return [
        dg.RunRequest(
            partition_key=domain,
            asset_selection=[dg.AssetKey(key) for key in DOMAIN_ASSETS],
            run_key=f"weekly:{week}:{domain}",
            tags={"qlora/trigger": "weekly"},
        )
        for domain in domains
    ]
