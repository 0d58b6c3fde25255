"""The sensor that looks at running experiments: one evaluation run per domain per interval."""
from __future__ import annotations

import time

import dagster as dg

from qlora.ab.config import load_ab_config
from qlora.ab.records import experiments
from qlora.core.paths import paths
from qlora.core.warehouse import Warehouse

# Report, decision (promote/reject applied), and the export once an experiment has ended.
ab_evaluation = dg.define_asset_job(
    name="ab_evaluation",
    executor_def=dg.in_process_executor,
    selection=dg.AssetSelection.assets("online_report", "ab_decision", "ab_feedback_candidates"),
    description="Looks at a domain's running A/B: online report, decision, feedback export.",
)
LOOK_INTERVAL_S = int(load_ab_config().look_interval_minutes * 60)


def evaluation_requests(warehouse: Warehouse, now_s: float, interval_s: int) -> list[dg.RunRequest]:
    """A run per running experiment; the run key names the interval, so a tick repeated within it launches nothing."""
    bucket = int(now_s // interval_s)
    return [dg.RunRequest(run_key=f"{e.experiment_id}:{bucket}", partition_key=e.domain,
                          tags={"ab/experiment_id": e.experiment_id})
            for e in experiments(warehouse) if e.status == "running"]


@dg.sensor(name="ab_experiment_sensor", job=ab_evaluation, minimum_interval_seconds=LOOK_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Evaluates every running A/B experiment (report, decision, export) each look interval.")
def ab_experiment_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    requests = evaluation_requests(Warehouse(paths().warehouse), time.time(), LOOK_INTERVAL_S)
    if not requests:
        return dg.SkipReason("no A/B experiment running")
    return dg.SensorResult(run_requests=requests)
