"""MLflow against its real tracking store: a training run through Pipes becomes an MLflow run with
the resolved config, per-step loss and learning rate, speed, memory, cost and eval metrics, linked
to the Dagster run; the adapter is a model version whose `serving` alias follows the router."""
from __future__ import annotations

import shutil

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from qlora_assets.automation.tracking_sensor import experiment_tracking_sensor
from qlora_assets.training.assets import qlora_adapter
from resources.serving import VllmServingResource
from resources.tracking import MlflowTrackingResource
from resources.trainer import trainer_on_this_host
from resources.warehouse import WarehouseResource
from tests.ops.conftest import API_KEY
from tests.support.training import fast_config, write_split

DOMAIN = "toy-track"
pytestmark = pytest.mark.slow  # one real (short) training run on CPU


@pytest.fixture(scope="module")
def trained(tiny_base, tmp_path_factory):
    write_split(DOMAIN)
    config = fast_config(tmp_path_factory.mktemp("cfg"), max_steps=8, logging_steps=2, save_steps=100)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("domain", [DOMAIN])
        result = dg.materialize([qlora_adapter], instance=instance, partition_key=DOMAIN,
                                resources={"trainer": trainer_on_this_host(str(config)),
                                           "warehouse": WarehouseResource()})
        assert result.success
        yield instance, result


def tick(instance, uri: str, router_url: str, cursor=None):
    resources = {"tracking": MlflowTrackingResource(tracking_uri=uri),
                 "serving": VllmServingResource(url=router_url, api_key_env="OPS_TEST_KEY")}
    return experiment_tracking_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))


def test_training_eval_and_serving_reach_mlflow(trained, alias_router, tmp_path, monkeypatch):
    instance, result = trained
    monkeypatch.setenv("OPS_TEST_KEY", API_KEY)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    materialization = result.asset_materializations_for_node("qlora_adapter")[0]
    version, adapter = materialization.metadata["version"].value, materialization.metadata["path"].value
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "eval_report", partition=DOMAIN,
        metadata={"adapter_version": version, "rouge_l": dg.MetadataValue.float(0.81),
                  "safety_refusal": dg.MetadataValue.float(1.0)}))
    alias_router.move(DOMAIN, {f"{DOMAIN}@{version}": 1.0})

    first = tick(instance, uri, alias_router.url)
    client = MlflowClient(uri, registry_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name(f"qlora-{DOMAIN}").experiment_id])
    assert run.data.tags["dagster.run_id"] == result.run_id and run.data.tags["qlora.adapter_version"] == version
    assert (run.data.params["max_steps"], run.data.params["lora_alpha"], run.data.params["learning_rate"]) == ("8", "32", "0.005")
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    rates = client.get_metric_history(run.info.run_id, "train/learning_rate")
    assert [m.step for m in loss] == [2, 4, 6, 8] and len(rates) == 4
    assert run.info.end_time - run.info.start_time >= 1000  # the training's own span, not the logging call
    metrics = run.data.metrics
    assert metrics["train/tokens_per_second"] > 0 and metrics["memory/peak_gib"] > 0 and metrics["cost/usd"] == 0.0
    assert metrics["eval/rouge_l"] == pytest.approx(0.81)

    [model_version] = client.search_model_versions(f"name = 'qlora-{DOMAIN}'")
    assert model_version.run_id == run.info.run_id and model_version.source.endswith(version)
    assert client.get_model_version_by_alias(f"qlora-{DOMAIN}", "serving").version == model_version.version

    # A second version goes live, then a rollback: the alias follows the router both ways.
    older = tmp_path / "older"
    shutil.copytree(adapter, older)
    from qlora.tracking.base import TrainingRecord
    from qlora.tracking.mlflow_tracker import MlflowTracker

    MlflowTracker(uri).log_training(TrainingRecord.from_adapter(DOMAIN, "v0", older, "earlier-run"))
    alias_router.move(DOMAIN, {f"{DOMAIN}@v0": 1.0})
    second = tick(instance, uri, alias_router.url, first.cursor)
    assert client.get_model_version_by_alias(f"qlora-{DOMAIN}", "serving").tags["adapter_version"] == "v0"
    alias_router.move(DOMAIN, {f"{DOMAIN}@{version}": 0.9, f"{DOMAIN}@v0": 0.1})
    tick(instance, uri, alias_router.url, second.cursor)
    assert client.get_model_version_by_alias(f"qlora-{DOMAIN}", "serving").tags["adapter_version"] == version
    assert client.get_model_version_by_alias(f"qlora-{DOMAIN}", "canary").tags["adapter_version"] == "v0"

    # Nothing new: no second MLflow run for the same training.
    tick(instance, uri, alias_router.url, None)
    assert len(client.search_runs([run.info.experiment_id], filter_string=f"tags.`qlora.adapter_version` = '{version}'")) == 1


def test_the_mlflow_run_page_shows_the_training_run(trained, alias_router, tmp_path):
    """The MLflow UI (what `make mlflow` starts) on the store the platform wrote: run page and charts."""
    from qlora.serving.client import ServingClient
    from qlora.tracking.mlflow_tracker import MlflowTracker
    from qlora_assets.automation.tracking_sensor import sync_tracking
    from tests.ops.browser import chromium, mlflow_charts, mlflow_ui, show
    from tests.support.dagster_ui import REPO

    instance, result = trained
    version = result.asset_materializations_for_node("qlora_adapter")[0].metadata["version"].value
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    alias_router.move(DOMAIN, {f"{DOMAIN}@{version}": 1.0})
    with ServingClient(alias_router.url, api_key=API_KEY) as client:
        sync_tracking(instance, MlflowTracker(uri), {}, client)
    mlflow = MlflowClient(uri, registry_uri=uri)
    experiment = mlflow.get_experiment_by_name(f"qlora-{DOMAIN}").experiment_id
    [run] = mlflow.search_runs([experiment])
    page = f"/#/experiments/{experiment}/runs/{run.info.run_id}"
    with mlflow_ui(uri, tmp_path / "mlflow-ui.log") as url, chromium(tmp_path / "chromium") as driver:
        charts = mlflow_charts(driver, url + page + "/model-metrics", REPO / "docs" / "mlflow-run-charts.png",
                               "train/", ["learning_rate", "loss", "tokens_per_second"])
        overview = show(driver, url + page, REPO / "docs" / "mlflow-run.png", [f"{DOMAIN}@{version}", "train/loss"])
    assert result.run_id in overview and "memory/peak_gib" in overview and "cost/usd" in overview
    assert "learning_rate" in overview and f"qlora-{DOMAIN}" in overview  # a param; the registered model
    assert "gpu_seconds" not in charts and "peak_gib" not in charts  # the train/ section alone, as a user narrows it
