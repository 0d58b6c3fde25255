"""Dagster resource for the DuckDB warehouse (path defaults to $QLORA_HOME/warehouse.duckdb)."""
import dagster as dg

from qlora.core.paths import paths
from qlora.core.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file holding raw rows, cleaned datasets, splits, eval reports, gate decisions, deployments."""

    path: str = ""

    def get(self) -> Warehouse:
        return Warehouse(self.path or paths().warehouse)
