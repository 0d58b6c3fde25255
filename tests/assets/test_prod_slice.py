"""The prod profile end to end for one domain, against an embedded server started as if it were vLLM.

The embedded daemon (server + router) runs in its own process, like vLLM behind the router on a
GPU box; the test only points QLORA_SERVING_URL / QLORA_SERVING_API_KEY at it and loads the Definitions with
QLORA_PROFILE=prod, so eval and deploy go through VllmServingResource. Adapters stand in for two
training runs on the GPU box (their qlora_adapter materializations are reported, as if the runs
happened there): v1 is evaluated, v2 finishes training before v1's gate and deploy run, and those
must still act on v1, the version the eval evaluated; the next eval then carries v2 through.
"""
import shutil
import datetime as dt
import importlib
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from qlora.core.paths import paths
from qlora.core.warehouse import Warehouse
from qlora.serving.client import ServingClient
from tests.support.deploy import GOLDEN_ROWS, write_config, write_eval_set
from tests.support.lineage import report_upstream
from tests.support.serving import build_adapter

REPO = Path(__file__).resolve().parents[2]
DOMAIN = "prod-slice"
API_KEY = "prod-slice-admin-key"
pytestmark = pytest.mark.slow  # two evals and two blue-green deploys on CPU: tens of seconds


@pytest.fixture(scope="module")
def prod(tmp_path_factory, serving_base):
    """A vLLM-like server (the embedded daemon, its own process) on the random tiny base, and the prod
    Definitions pointed at it."""
    from qlora.serving import daemon

    root = tmp_path_factory.mktemp("prod_slice")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("QLORA_HOME", str(root / "home"))  # its own warehouse and adapters root
        env.setenv("QLORA_SERVING_API_KEY", API_KEY)  # the daemon's admin key
        for version, seed in (("v1", 11), ("v2", 12)):
            build_adapter(serving_base, paths().adapters / DOMAIN / version, seed=seed)
        server = daemon.ensure_running(serving_base, state_dir=root / "serving", adapters_root=paths().adapters)
        write_config(root / "configs")  # deploy.yaml with short canary steps
        shutil.copy(REPO / "configs" / "ab.yaml", root / "configs" / "ab.yaml")  # deploy asks the A/B guard
        write_eval_set(root / "data", DOMAIN)
        (root / "eval.yaml").write_text("concurrency: 8\nmax_tokens: 8\nrefusal_phrases: {en: [sorry]}\n",
                                        encoding="utf-8")
        # The random base learns nothing: gate on what must hold anyway (measured, answered in time).
        (root / "gates.yaml").write_text("gates:\n  rouge_l: {min: 0.0}\n  latency_p95_ms: {max: 60000}\n",
                                         encoding="utf-8")
        for name, value in {"QLORA_PROFILE": "prod", "QLORA_SERVING_URL": server["url"],
                            "QLORA_BASE_MODEL_PATH": str(serving_base),
                            "QLORA_CONFIG_DIR": str(root / "configs"), "QLORA_DATA_DIR": str(root / "data"),
                            "QLORA_PROD_CONFIG": str(REPO / "configs" / "prod.yaml")}.items():
            env.setenv(name, value)
        import definitions

        try:
            yield importlib.reload(definitions).defs, root, server["url"]
        finally:
            daemon.stop(root / "serving")
    importlib.reload(definitions)  # back to the session's profile


def trained_on_the_gpu_box(instance: dg.DagsterInstance, version: str) -> None:
    """What qlora_adapter leaves behind for a version: the registry row and its materialization."""
    path = paths().adapters / DOMAIN / version
    Warehouse(paths().warehouse).append("adapters", pd.DataFrame([{
        "domain": DOMAIN, "version": version, "path": str(path), "manifest_json": json.dumps({"version": version}),
        "created_at": dt.datetime.now(dt.timezone.utc)}]))
    report_upstream(instance, "qlora_adapter", DOMAIN, version=version, path=dg.MetadataValue.path(str(path)))


def run(defs: dg.Definitions, root: Path, instance: dg.DagsterInstance, *assets: str) -> dg.ExecuteInProcessResult:
    config = {"eval_report": {"eval_settings_file": str(root / "eval.yaml"), "gates_file": str(root / "gates.yaml")},
              "gate_decision": {"gates_file": str(root / "gates.yaml")}}
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, partition_key=DOMAIN, asset_selection=[dg.AssetKey(a) for a in assets],
        run_config={"ops": {a: {"config": config[a]} for a in assets if a in config}}, raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def recorded(result: dg.ExecuteInProcessResult, asset: str, field: str):
    return result.asset_materializations_for_node(asset)[0].metadata[field].value


def alias_answer(url: str) -> str:
    with ServingClient(url, api_key=API_KEY) as client:
        return client.chat(DOMAIN, [{"role": "user", "content": GOLDEN_ROWS[0]["instruction"]}], max_tokens=2).model


def test_prod_eval_gate_deploy_follow_the_evaluated_version(prod):
    defs, root, url = prod
    assert type(defs.resources["serving"]).__name__ == "VllmServingResource"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("domain", [DOMAIN])
        trained_on_the_gpu_box(instance, "v1")
        evaluated = run(defs, root, instance, "eval_report")
        assert recorded(evaluated, "eval_report", "adapter_version") == "v1"

        trained_on_the_gpu_box(instance, "v2")  # newer than the version under evaluation
        decided = run(defs, root, instance, "gate_decision", "deployed_adapter")
        assert recorded(decided, "gate_decision", "adapter_version") == "v1"
        assert recorded(decided, "deployed_adapter", "candidate_version") == "v1"
        assert alias_answer(url) == f"{DOMAIN}@v1"

        cycle = run(defs, root, instance, "eval_report", "gate_decision", "deployed_adapter")
        assert [recorded(cycle, a, f) for a, f in [("eval_report", "adapter_version"),
                                                   ("gate_decision", "adapter_version"),
                                                   ("deployed_adapter", "candidate_version")]] == ["v2", "v2", "v2"]
        assert recorded(cycle, "deployed_adapter", "previous_version") == "v1"
        assert alias_answer(url) == f"{DOMAIN}@v2"
