"""Watch the router's aliases and record what each domain serves on `deployed_adapter`.

A rollback or an A/B change made outside Dagster (`qlora rollback`, `qlora ab`) moves the alias
without a run; this sensor notices within one interval and records an observation, so the
asset page never shows a version that no longer serves. Only changes are recorded (the cursor
holds the last state per domain), plus every domain on the first tick.
"""
from __future__ import annotations

import json

import dagster as dg

from qlora.automation.schedule_config import load_schedule_config
from qlora.ops.serving_truth import observe_aliases
from qlora_assets.automation.sensors import _status
from qlora_assets.deploy.observation import alias_observation
from qlora_assets.partitions import domain_partitions
from resources.serving import ServingResource

_SETTINGS = load_schedule_config().sensors.serving_observation


@dg.sensor(
    name="serving_observation_sensor",
    minimum_interval_seconds=_SETTINGS.interval_seconds,
    default_status=_status(_SETTINGS.default_status),
    description="Records on deployed_adapter what each domain's alias serves (versions, weights) "
    "whenever the router's alias changes.",
)
def serving_observation_sensor(context: dg.SensorEvaluationContext, serving: ServingResource) -> dg.SensorResult:
    domains = sorted(context.instance.get_dynamic_partitions(domain_partitions.name))
    states = observe_aliases(serving.observer_client(), domains)
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    changed = [state for domain, state in states.items() if seen.get(domain) != state.key()]
    cursor = json.dumps({domain: state.key() for domain, state in states.items()}, sort_keys=True)
    if not changed:
        return dg.SensorResult(skip_reason=f"no alias changed ({len(domains)} domain(s))", cursor=cursor)
    for state in changed:
        context.log.info(f"{state.domain}: {state.describe()}")
    return dg.SensorResult(asset_events=[alias_observation(s, "serving_observation_sensor") for s in changed],
                           cursor=cursor)
