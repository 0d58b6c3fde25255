"""Happy paths on a real embedded server + router: three domains at once, the CLI, and the Dagster asset."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import dagster as dg
import pandas as pd
import pytest
from typer.testing import CliRunner

from qlora.cli import app
from qlora_assets.deploy.assets import deployed_adapter
from qlora.deploy.deployer import Deployer
from qlora.deploy.history import BLOCKED, DEPLOYED, deployment_history
from resources.serving import VllmServingResource
from resources.warehouse import WarehouseResource
from tests.support.serving import DOMAINS
from tests.support.deploy import (API_KEY, TEST_CONFIG, home_of_its_own, live_factory, pass_gate,  # noqa: F401
                                  write_config, write_eval_set)
from tests.support.lineage import report_upstream


@pytest.fixture(scope="module")
def live(live_factory, tmp_path_factory):
    with home_of_its_own(tmp_path_factory, "deploy_happy_home") as warehouse:
        live = live_factory("deploy_happy", {"v2": 300})
        live.warehouse = warehouse  # the CLI and the asset read QLORA_HOME's warehouse
        for domain in DOMAINS:
            for version in ("v1", "v2"):
                pass_gate(live.warehouse, live.ref(domain, version))
        yield live


def deploy_all(live, version: str, domains) -> dict:
    def one(domain):
        with live.client() as client:
            return Deployer(client, live.warehouse, TEST_CONFIG, live.golden).deploy(live.ref(domain, version))

    with ThreadPoolExecutor(len(domains)) as pool:
        return dict(zip(domains, pool.map(one, domains)))


def version_info(live) -> set[tuple[str, str]]:
    with live.client() as client:
        return {(v["adapter"], v["version"]) for v in client.versions().values()}


def test_three_domains_deploy_at_once_and_one_never_disturbs_another(live):
    first = deploy_all(live, "v1", DOMAINS)
    assert {d: r.result for d, r in first.items()} == {d: DEPLOYED for d in DOMAINS}
    assert {d: live.alias_answer(d) for d in DOMAINS} == {d: f"{d}@v1" for d in DOMAINS}

    # cs-support keeps taking traffic while the two other domains go through their canaries.
    stop, answers, errors = threading.Event(), [], []

    def traffic():
        with live.client() as client:
            while not stop.is_set():
                for result in client.chat_many("cs-support", [live.golden[0].messages] * 2, max_tokens=4):
                    (errors if isinstance(result, Exception) else answers).append(result)
                stop.wait(0.05)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        second = deploy_all(live, "v2", ("legal-ko", "medical-ko"))
    finally:
        stop.set()
        thread.join()
    assert {d: r.result for d, r in second.items()} == {"legal-ko": DEPLOYED, "medical-ko": DEPLOYED}
    assert [s["step"] for s in second["legal-ko"].steps] == [
        "inspect", "base", "load", "listed", "smoke", "shift 10%", "shift 50%", "shift 100%", "version_info",
        "verify", "drain", "unload_old"]
    assert errors == [] and len(answers) > 0
    assert {a.model for a in answers} == {"cs-support@v1"}
    assert live.alias_answer("legal-ko") == "legal-ko@v2" and live.alias_answer("medical-ko") == "medical-ko@v2"
    assert {"legal-ko@v1", "medical-ko@v1"}.isdisjoint(live.loaded())
    assert {("legal-ko", "v2"), ("medical-ko", "v2"), ("cs-support", "v1")} <= version_info(live)
    assert ("legal-ko", "v1") not in version_info(live)


def cli(live, *args: str):
    common = ["--server", live.handle.url, "--api-key", API_KEY, "--eval-data", str(live.eval_file),
              "--config", str(write_config(live.eval_file.parent))]
    return CliRunner().invoke(app, [*args, *common])


def test_cli_rollback_then_deploy_again(live):
    back = cli(live, "rollback", "--domain", "legal-ko")
    assert back.exit_code == 0, back.output
    assert "rollback legal-ko@v1: deployed" in back.output
    assert live.alias_answer("legal-ko") == "legal-ko@v1" and "legal-ko@v2" not in live.loaded()

    again = cli(live, "deploy", "--domain", "legal-ko", "--adapter", str(live.root / "legal-ko" / "v2"),
                "--strategy", "direct", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["result"] == DEPLOYED
    assert live.alias_answer("legal-ko") == "legal-ko@v2"

    unknown = cli(live, "rollback", "--domain", "legal-ko", "--to", "v9")
    assert unknown.exit_code == 2
    assert "legal-ko@v9 never went live; versions that did: v2, v1" in unknown.output
    actions = deployment_history(live.warehouse, "legal-ko")["action"].tolist()
    assert actions[:2] == ["deploy", "rollback"]


def register_adapter(warehouse, domain: str, version: str, path: str) -> None:
    warehouse.append("adapters", pd.DataFrame([{
        "domain": domain, "version": version, "path": path,
        "manifest_json": json.dumps({"version": version, "train_date": "2026-01-05"}),
        "created_at": datetime.now(timezone.utc).replace(tzinfo=None),
    }]))


def test_asset_deploys_the_newest_gated_version_and_refuses_a_blocked_one(live, monkeypatch, tmp_path):
    monkeypatch.setenv("QLORA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("QLORA_CONFIG_DIR", str(write_config(tmp_path / "configs").parent))
    monkeypatch.setenv("DEPLOY_TEST_KEY", API_KEY)
    write_eval_set(tmp_path, "cs-support")
    register_adapter(live.warehouse, "cs-support", "v2", str(live.root / "cs-support" / "v2"))
    resources = {"serving": VllmServingResource(url=live.handle.url, api_key_env="DEPLOY_TEST_KEY"),
                 "warehouse": WarehouseResource()}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("domain", ["cs-support"])

    report_upstream(instance, "gate_decision", "cs-support", adapter_version="v2")
    result = dg.materialize([deployed_adapter], partition_key="cs-support", resources=resources, instance=instance)
    materialization = result.asset_materializations_for_node("deployed_adapter")[0]
    assert materialization.metadata["result"].value == DEPLOYED
    assert "| deploy | v2 | passed | deployed |" in materialization.metadata["deployment_history"].value
    assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
    assert materialization.metadata["serving_version"].value == "v2"
    assert live.alias_answer("cs-support") == "cs-support@v2"

    # A newer version the gate blocked: no crash and no new materialization (v2 still serves);
    # the check names the gate, the observation what serves, the history why.
    register_adapter(live.warehouse, "cs-support", "v3", str(live.root / "cs-support" / "v3"))
    pass_gate(live.warehouse, live.ref("cs-support", "v3"), passed=False)
    report_upstream(instance, "gate_decision", "cs-support", adapter_version="v3")
    blocked = dg.materialize([deployed_adapter], partition_key="cs-support", resources=resources, instance=instance)
    assert blocked.success and blocked.asset_materializations_for_node("deployed_adapter") == []
    [check] = blocked.get_asset_check_evaluations()
    assert check.check_name == "serving_answers_new_version" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert "blocked" in check.description and "rouge_l" in check.description
    [observation] = blocked.asset_observations_for_node("deployed_adapter")
    assert observation.partition == "cs-support" and observation.metadata["serving_version"].value == "v2"
    latest = deployment_history(live.warehouse, "cs-support", limit=1).iloc[0]
    assert (latest["version"], latest["result"]) == ("v3", BLOCKED) and "rouge_l" in latest["reason"]
    assert live.alias_answer("cs-support") == "cs-support@v2"
