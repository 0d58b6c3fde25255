"""`deployed_adapter` as the router sees it: an AssetObservation per domain partition, recorded after
every deploy or rollback the asset makes and by `serving_observation_sensor` whenever the router's
alias changes (a `qlora rollback`, an A/B weight change, a restart), so the UI follows the router."""
from __future__ import annotations

import dagster as dg

from qlora.ops.serving_truth import SERVING, AliasObservation

DEPLOYED_ADAPTER = dg.AssetKey("deployed_adapter")


def serving_markdown(state: AliasObservation) -> str:
    if state.status != SERVING:
        return f"_{state.describe()}_"
    rows = "\n".join(f"| {state.domain}@{version} | {share:.0%} |" for version, share in state.weights.items())
    return "| version serving | share of traffic |\n|---|---|\n" + rows


def serving_metadata(state: AliasObservation) -> dict:
    return {
        "serving_status": state.status,
        "serving_version": state.primary_version or "none",
        "serving": state.describe(),
        "serving_weights": dg.MetadataValue.json(state.weights),
        "serving_table": dg.MetadataValue.md(serving_markdown(state)),
    }


def alias_observation(state: AliasObservation, source: str) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=DEPLOYED_ADAPTER,
        partition=state.domain,
        description=f"observed on the router ({source}): {state.describe()}",
        metadata={**serving_metadata(state), "observed_by": source},
    )
