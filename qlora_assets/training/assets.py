"""The `qlora_adapter` asset: export the domain's train rows, train through Dagster Pipes, publish the version."""
import json
import math

import dagster as dg

from qlora.core.io import read_json
from qlora.modeling.profiles import training_config_for
from qlora_assets.modeling.lineage import materialized_base_or_fail
from qlora_assets.partitions import domain_partitions
from qlora.core.paths import paths
from qlora.training.config import load_config
from qlora.training.publish import export_training_data, new_version, publish_adapter, run_key
from resources.trainer import TrainerResource
from resources.warehouse import WarehouseResource

LOSS_CHECK = "loss_finite_and_falling"


def loss_check(manifest: dict) -> dg.AssetCheckResult:
    curve = [loss for _, loss in manifest["metrics"]["loss_curve"]]
    finite = bool(curve) and all(math.isfinite(x) for x in curve)
    falling = finite and len(curve) >= 2 and curve[-1] < curve[0]
    return dg.AssetCheckResult(
        check_name=LOSS_CHECK,
        passed=finite and falling and manifest["trainable_params"] > 0,
        metadata={"loss_first": curve[0] if curve else None, "loss_last": curve[-1] if curve else None,
                  "points": len(curve), "trainable_params": manifest["trainable_params"]},
    )


@dg.asset(
    partitions_def=domain_partitions,
    deps=["train_eval_split", "base_model"],
    pool="gpu",  # concurrency pool sized to the host's GPUs (deploy/prod, docs/operations.md)
    kinds={"pytorch", "peft"},
    group_name="training",
    description="QLoRA adapter for the domain (NF4 base + LoRA), trained through Dagster Pipes; versioned on disk.",
    check_specs=[dg.AssetCheckSpec(LOSS_CHECK, asset="qlora_adapter", blocking=True,
                                   description="Training loss is finite and falls; trainable params reported.")],
)
def qlora_adapter(
    context: dg.AssetExecutionContext, trainer: TrainerResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    domain = context.partition_key
    config_file = trainer.config_path()
    config = load_config(config_file)
    base = materialized_base_or_fail(context)  # the base chosen once, as base_model materialised it
    if config.base_profile != base["profile"]:
        raise dg.Failure(f"training config {config_file} is sized for base '{config.base_profile}' but base_model "
                         f"is '{base['profile']}' ({base['model_path']}); train it with configs/qlora/"
                         f"{training_config_for(base['profile'])}.yaml (TrainerResource config)")
    data = export_training_data(warehouse.get(), domain)
    key = run_key(data["data_version"], config.config_hash(), base["fingerprint"])
    version = new_version(key)
    work_dir = paths().runs / domain / key
    context.log.info(f"training {domain} v{version}: {data['train_rows']} rows, config {config_file.name}, work {work_dir}")
    args = ["--config", str(config_file), "--data", str(data["train"]), "--output", str(work_dir),
            "--base", base["model_path"],
            "--extras", json.dumps({"domain": domain, "version": version, "data_version": data["data_version"]})]
    if data["eval"]:
        args += ["--eval-data", str(data["eval"])]
    reported = trainer.run(context, args, extras={"domain": domain, "version": version}).get_materialize_result()
    target = publish_adapter(work_dir, domain, version, warehouse.get())
    manifest = read_json(target / "manifest.json", "adapter manifest")
    # The version is the data version: eval, gate and deploy act on it through lineage (qlora_assets/lineage.py).
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={**reported.metadata, "version": version, "path": dg.MetadataValue.path(str(target)),
                  "data_version": data["data_version"], "base_fingerprint": base["fingerprint"]},
        check_results=[loss_check(manifest)],
    )
