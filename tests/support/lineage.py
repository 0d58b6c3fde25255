"""Stand in for an upstream materialization (as if its run happened elsewhere), so one asset runs alone."""
import dagster as dg


def report_upstream(instance: dg.DagsterInstance, asset: str, partition: str, **metadata) -> None:
    """Record a materialization of ``asset`` for ``partition`` carrying ``metadata`` (e.g. adapter_version)."""
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition, metadata=metadata))
