"""Report to the experiment tracker what Dagster and the router already record.

Each tick: every new `qlora_adapter` materialization becomes a tracked training run (from the
adapter's manifest.json, tagged with the Dagster run id), every new `eval_report` adds the
candidate's metrics to that run, and each domain's registered model gets its `serving` alias
moved to what the router serves. Tracking sits beside the runs, not in them: a tracker that
is down delays the charts and never fails a training (the cursor stays, the next tick retries).
"""
from __future__ import annotations

import json

import dagster as dg

from qlora.ops.serving_truth import SERVING, observe_aliases
from qlora.tracking.base import Tracker, TrainingRecord
from qlora_assets.partitions import domain_partitions
from resources.serving import ServingResource
from resources.tracking import TrackingResource

ADAPTER, EVAL = dg.AssetKey("qlora_adapter"), dg.AssetKey("eval_report")


def _new_materializations(instance: dg.DagsterInstance, key: dg.AssetKey, after: int | None):
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=100, ascending=True).records


def _value(metadata: dict, name: str):
    entry = metadata.get(name)
    return getattr(entry, "value", entry)


def sync_tracking(instance: dg.DagsterInstance, tracker: Tracker, cursor: dict,
                  serving_client=None, log=None) -> dict:
    """Report what is new since ``cursor`` ({asset: last storage id}); returns the new cursor."""
    cursor = dict(cursor)
    for record in _new_materializations(instance, ADAPTER, cursor.get("qlora_adapter")):
        event = record.asset_materialization
        path, version = _value(event.metadata, "path"), _value(event.metadata, "version")
        if path and version:
            run = tracker.log_training(TrainingRecord.from_adapter(event.partition, str(version), path, record.run_id))
            if log:
                log(f"{event.partition}@{version}: tracked as run {run}")
        cursor["qlora_adapter"] = record.storage_id
    for record in _new_materializations(instance, EVAL, cursor.get("eval_report")):
        event = record.asset_materialization
        metrics = {k: float(v.value) for k, v in event.metadata.items() if isinstance(v, dg.FloatMetadataValue)}
        if version := _value(event.metadata, "adapter_version"):
            tracker.log_eval(event.partition, str(version), metrics, record.run_id)
        cursor["eval_report"] = record.storage_id
    if serving_client is not None:
        domains = sorted(instance.get_dynamic_partitions(domain_partitions.name))
        for domain, state in observe_aliases(serving_client, domains).items():
            if state.status == SERVING and tracker.follow_serving(domain, state.weights) and log:
                log(f"{domain}: registered model alias 'serving' -> {state.primary_version}")
    return cursor


@dg.sensor(
    name="experiment_tracking_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reports each training run, its eval metrics and what serves to the experiment tracker (MLflow).",
)
def experiment_tracking_sensor(context: dg.SensorEvaluationContext, tracking: TrackingResource,
                               serving: ServingResource) -> dg.SensorResult:
    before = json.loads(context.cursor) if context.cursor else {}
    after = sync_tracking(context.instance, tracking.tracker(), before, serving.observer_client(), context.log.info)
    return dg.SensorResult(skip_reason=None if after != before else "nothing new to track",
                           cursor=json.dumps(after, sort_keys=True))
