"""Retrain when what an adapter is made of changes: a domain's data, or the configs its runs use.

Both sensors key on content fingerprints (see fingerprints.py) and keep them in their cursor,
so a restarted daemon does not retrain anything that did not change. Run keys carry the
fingerprint too, so even a lost cursor cannot launch the same retrain twice.
"""
from __future__ import annotations

import json

import dagster as dg

from qlora.automation.fingerprints import (
    config_fingerprint,
    data_fingerprints,
    domain_config_fingerprint,
    newest_change,
)
from qlora_assets.automation.jobs import BASE_MODEL, build_base_model, retrain_domain
from qlora.automation.schedule_config import load_schedule_config
from qlora_assets.partitions import domain_partitions
from qlora.core.paths import paths
from qlora.data.config import load_data_config
from qlora.data.reader import data_files
from qlora.evaluation.config import gate_config_path
from resources.trainer import TrainerResource

_SETTINGS = load_schedule_config().sensors


def _status(value: str) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if value == "running" else dg.DefaultSensorStatus.STOPPED


def base_model_exists(instance: dg.DagsterInstance) -> bool:
    return instance.get_latest_materialization_event(BASE_MODEL) is not None


def already_ingested(instance: dg.DagsterInstance, domain: str, newest_file_change: float) -> bool:
    """True when the domain's raw_instructions were materialised after its files last changed.

    Used only on a sensor's very first tick (no cursor yet), so that switching the sensor on
    after `make demo` or a manual run does not retrain what was just trained; from then on,
    only content fingerprints decide.
    """
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_instructions"), asset_partitions=[domain]), limit=1
    ).records
    return bool(records) and records[0].timestamp > newest_file_change


@dg.sensor(
    name="training_data_sensor",
    jobs=[retrain_domain, build_base_model],
    minimum_interval_seconds=_SETTINGS.training_data.interval_seconds,
    default_status=_status(_SETTINGS.training_data.default_status),
    description="Retrains a domain when the content of data/training/<domain>/ (or its eval set) changes; "
    "a new folder adds the domain.",
)
def training_data_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    where = paths()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current = data_fingerprints(where.training_dir, where.eval_dir)
    # A folder without data files yet (`qlora new-domain` just made it) waits; training it would fail.
    waiting = [domain for domain in current if not data_files(where.training_dir / domain)]
    for domain in waiting:
        context.log.info(f"{domain}: no .jsonl/.json data files yet; waiting")
        current.pop(domain)

    known = set(context.instance.get_dynamic_partitions(domain_partitions.name))
    new_domains = [domain for domain in current if domain not in known]
    partition_requests = [domain_partitions.build_add_request(new_domains)] if new_domains else []

    if current and not base_model_exists(context.instance):
        # Every domain trains on the shared base: build it once, and keep the domains pending
        # (cursor unchanged) so the tick after it exists requests them.
        return dg.SensorResult(
            run_requests=[dg.RunRequest(
                job_name=build_base_model.name,
                # A config fix is what usually follows a failed base build, so it may retry then.
                run_key=f"base_model:{config_fingerprint(where.config_dir)}",
                tags={"qlora/trigger": "training-data"},
            )],
            dynamic_partitions_requests=partition_requests,
            cursor=context.cursor,
        )

    if context.cursor is None:
        seen = {
            domain: fp for domain, fp in current.items()
            if already_ingested(context.instance, domain, newest_change(where.training_dir, domain, where.eval_dir))
        }
    changed = {domain: fp for domain, fp in current.items() if seen.get(domain) != fp}
    for domain, fp in changed.items():
        context.log.info(f"{domain}: data fingerprint {seen.get(domain, 'none')} -> {fp}")
    run_requests = [
        dg.RunRequest(
            job_name=retrain_domain.name,
            partition_key=domain,
            # With the previous fingerprint in the key, data reverted to an earlier content
            # (A -> B -> A) retrains too; Dagster would drop a second request keyed `domain:A`.
            run_key=f"{domain}:{seen[domain]}->{fp}" if domain in seen else f"{domain}:{fp}",
            tags={"qlora/trigger": "training-data", "qlora/data_fingerprint": fp},
        )
        for domain, fp in changed.items()
    ]
    # A removed folder drops out of the cursor; its partition and history stay in Dagster.
    cursor = json.dumps(current, sort_keys=True)
    if not run_requests:
        return dg.SensorResult(
            skip_reason=f"no content change in {len(current)} domain(s)",
            dynamic_partitions_requests=partition_requests,
            cursor=cursor,
        )
    return dg.SensorResult(run_requests=run_requests, dynamic_partitions_requests=partition_requests, cursor=cursor)


def domain_config_fingerprints(domains: list[str], trainer: TrainerResource) -> dict[str, str]:
    """Per domain, the fingerprint of the config files its runs read (see fingerprints.py)."""
    rules = load_data_config()
    profile, gate = trainer.config_path(), gate_config_path()
    return {domain: domain_config_fingerprint(profile, gate, rules.rules(domain).model_dump()) for domain in domains}


@dg.sensor(
    name="config_change_sensor",
    job=retrain_domain,
    minimum_interval_seconds=_SETTINGS.config_change.interval_seconds,
    default_status=_status(_SETTINGS.config_change.default_status),
    description="Retrains a domain when a config its runs use changes: the trainer's profile, the gate file "
    "in use ($QLORA_QUALITY_GATE), or the domain's entry in domains.yaml.",
)
def config_change_sensor(context: dg.SensorEvaluationContext, trainer: TrainerResource) -> dg.SensorResult:
    domains = sorted(context.instance.get_dynamic_partitions(domain_partitions.name))
    current = domain_config_fingerprints(domains, trainer)
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    cursor = json.dumps(current, sort_keys=True)
    if context.cursor is None or not base_model_exists(context.instance):
        # First tick: nothing was trained under an older config by this sensor, so record the
        # baseline only; first trainings are the training-data sensor's job.
        return dg.SensorResult(skip_reason=f"baseline config fingerprints of {len(current)} domain(s)", cursor=cursor)
    # A domain new since the last tick is the training-data sensor's to train, not a config change.
    changed = {d: fp for d, fp in current.items() if d in seen and seen[d] != fp}
    if not changed:
        return dg.SensorResult(skip_reason="no config a domain uses changed", cursor=cursor)
    context.log.info(f"configs changed for {sorted(changed)}: retraining them")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=domain,
                run_key=f"{domain}:config:{seen[domain]}->{fp}",
                tags={"qlora/trigger": "config-change", "qlora/config_fingerprint": fp},
            )
            for domain, fp in changed.items()
        ],
        cursor=cursor,
    )
