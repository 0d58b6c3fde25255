"""Jobs over asset keys (not other areas' modules), so automation builds on the graph alone."""
import dagster as dg

# A domain's chain is linear, so per-step processes buy no parallelism and cost an import of the
# whole code location per step (seconds each on 2 cores); training itself runs in a Pipes
# subprocess anyway. A deployment that wants a pod per step (k8s) changes it here.
LINEAR_EXECUTOR = dg.in_process_executor

# One domain's path from raw file to serving adapter, in graph order.
DOMAIN_ASSETS = (
    "raw_instructions",
    "cleaned_dataset",
    "train_eval_split",
    "qlora_adapter",
    "eval_report",
    "gate_decision",
    "deployed_adapter",
)
BASE_MODEL = dg.AssetKey("base_model")


def keys(*names: str) -> dg.AssetSelection:
    """Select assets by exact key, tolerating keys not defined (yet).

    ``AssetSelection.assets`` fails the whole code location when one key is absent, which would
    take every area down while the graph is assembled; tests/test_automation_jobs.py pins the
    resolved sets to the design card instead.
    """
    return dg.AssetSelection.from_string(" or ".join(f'key:"{name}"' for name in names))


# base_model is left out on purpose: it is shared by every domain, and rebuilding it inside a
# per-domain run would rewrite the base while other domains' runs train on it. The sensors build
# it first when it is missing (see sensors.py), so retrain_domain may assume it is materialised.
retrain_domain = dg.define_asset_job(
    name="retrain_domain",
    executor_def=LINEAR_EXECUTOR,
    selection=keys(*DOMAIN_ASSETS),
    description="One domain, from its raw files to the adapter serving it (base_model must exist).",
)

# Every asset. Launched as a backfill over all domains (UI: Materialize all), Dagster runs
# base_model once and then one run per domain; the weekly schedule launches per-domain runs.
weekly_cycle = dg.define_asset_job(
    name="weekly_cycle",
    executor_def=LINEAR_EXECUTOR,
    selection=dg.AssetSelection.all(),
    description="The seed's weekly cycle: base model, then every domain from data to deployment.",
)

build_base_model = dg.define_asset_job(
    name="build_base_model",
    executor_def=LINEAR_EXECUTOR,
    selection=keys(BASE_MODEL.to_user_string()),
    description="The shared base checkpoint; retrain_domain needs it.",
)
