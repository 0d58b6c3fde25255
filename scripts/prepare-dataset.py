"""Build one domain's training file for CI: data assets (and what they need) in a throwaway instance.

    python scripts/prepare-dataset.py --domain legal-ko    # prints the path of train.jsonl

The same assets as the Dagster graph (raw -> cleaned -> split, on the base model's chat
template), run in process; the rows go to the DuckDB warehouse under $QLORA_HOME and are
exported to $QLORA_HOME/datasets/<domain>/<data_version>/train.jsonl for `qlora train`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", required=True, help="a folder under data/training/")
    domain = parser.parse_args().domain

    import dagster as dg

    from definitions import defs
    from qlora.data.export import export_train_jsonl
    from qlora.core.paths import discover_domains, paths
    from qlora.core.warehouse import Warehouse

    if domain not in discover_domains():
        print(f"error: no folder {paths().training_dir / domain}", file=sys.stderr)
        return 2
    graph = defs.resolve_asset_graph()
    wanted = dg.AssetSelection.assets("train_eval_split").upstream().resolve(graph)
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.ephemeral() as instance:  # throwaway: CI keeps no Dagster history
        instance.add_dynamic_partitions("domain", [domain])
        unpartitioned = [key for key in wanted if graph.get(key).partitions_def is None]
        if unpartitioned:
            job.execute_in_process(instance=instance, asset_selection=unpartitioned)
        partitioned = [key for key in wanted if key not in unpartitioned]
        job.execute_in_process(instance=instance, asset_selection=partitioned, partition_key=domain)
    path, _version = export_train_jsonl(Warehouse(paths().warehouse), domain)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
