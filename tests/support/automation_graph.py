"""The design card's asset graph as empty stand-ins, plus the automation defs.

Sensors, schedules and automation conditions only see asset keys, partitions, checks and
materialisations, so their tests run against this shape in milliseconds instead of training.
"""
import dagster as dg

from qlora_assets.automation.defs import defs as automation_defs
from qlora_assets.automation.jobs import DOMAIN_ASSETS
from qlora_assets.partitions import domain_partitions
from resources.serving import VllmServingResource
from resources.tracking import NoTrackingResource
from resources.trainer import trainer_on_this_host


def stand_in_graph(gate_passes: bool = True, resources: dict | None = None) -> dg.Definitions:
    """Every asset of the card; ``gate_decision`` carries a blocking check that passes or not.

    The sensors' resources: the real trainer (its profile is what the config sensor watches) and
    a router URL nothing listens on unless a test passes its own ``serving``.
    """

    @dg.asset(name="base_model")
    def base_model() -> None:
        return None

    assets = [base_model]
    upstream = "base_model"
    for name in DOMAIN_ASSETS:
        deps = [upstream] if name != "raw_instructions" else []
        if name == "qlora_adapter":
            deps.append("base_model")
        assets.append(_partitioned_stand_in(name, deps, gate_passes))
        upstream = name
    resources = {"trainer": trainer_on_this_host(), "serving": VllmServingResource(url="http://127.0.0.1:9"),
                 "tracking": NoTrackingResource(), **(resources or {})}
    return dg.Definitions.merge(dg.Definitions(assets=assets, resources=resources), automation_defs)


def _partitioned_stand_in(name: str, deps: list[str], gate_passes: bool) -> dg.AssetsDefinition:
    checks = [dg.AssetCheckSpec("gate_passed", asset=name, blocking=True)] if name == "gate_decision" else []

    @dg.asset(name=name, deps=deps, partitions_def=domain_partitions, check_specs=checks)
    def _stand_in() -> dg.MaterializeResult:
        results = [dg.AssetCheckResult(check_name="gate_passed", passed=gate_passes)] if checks else []
        return dg.MaterializeResult(check_results=results)

    return _stand_in
