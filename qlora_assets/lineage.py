"""Versions travel through lineage: a downstream asset acts on what its upstream materialization
recorded for this partition, never on a "latest" query of its own.

`qlora_adapter` records the adapter version (its data version and metadata `version`);
`eval_report` and `gate_decision` record `adapter_version`. Each downstream asset reads the
newest materialization of its upstream asset for the same domain through the instance's public
event API: in a run of the whole chain that is the one this run just made; in a run of its own
(a retry, an automation tick) it is the one the run was launched for.
"""
import dagster as dg


def upstream_materialization(context: dg.AssetExecutionContext, upstream: str) -> dg.AssetMaterialization:
    """The newest materialization of ``upstream`` for this run's partition, or a Failure saying so."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(upstream), asset_partitions=[context.partition_key]), limit=1,
    ).records
    if not records:
        raise dg.Failure(f"no materialization of {upstream} for partition {context.partition_key!r}; "
                         f"materialize {upstream} first")
    return records[0].asset_materialization


def upstream_version(context: dg.AssetExecutionContext, upstream: str, field: str) -> str:
    """The adapter version that ``upstream``'s materialization for this partition recorded in ``field``."""
    materialization = upstream_materialization(context, upstream)
    entry = materialization.metadata.get(field)
    if entry is None or not str(entry.value):
        raise dg.Failure(f"the materialization of {upstream} for partition {context.partition_key!r} records no "
                         f"{field!r}; re-materialize {upstream}")
    version = str(entry.value)
    context.log.info(f"{context.asset_key.to_user_string()} acts on {upstream}'s {field} {version}")
    return version
