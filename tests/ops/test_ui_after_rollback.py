"""The Dagster UI after a rollback made outside Dagster: `deployed_adapter` shows what the router serves.

A real embedded server + router serves three domains; the instance holds the materialization of
the last deploy (legal-ko@v2). `qlora rollback` moves the alias back to v1 without a Dagster
run; `serving_observation_sensor`, running in `dagster dev`'s daemon, records the move on the
asset's legal-ko partition. Headless Chromium then opens the asset's pages, which must say v1,
per domain; the pictures go to docs/ui-after-rollback*.png.
"""
from __future__ import annotations

import json
import os
import shutil

import dagster as dg
import pytest
import yaml

from qlora.serving.client import ServingClient
from tests.ops.browser import chromium, show
from tests.support.dagster_ui import REPO, dagster_dev, wait_for

pytestmark = pytest.mark.slow  # dagster dev + Chromium
DEPLOYED = dg.AssetKey("deployed_adapter")
KEY = "test-admin-key"  # the `embedded` fixture's


def configs_with_only_the_observer(root):
    shutil.copytree(REPO / "configs", root)
    schedule = yaml.safe_load((root / "schedule.yaml").read_text())
    schedule["weekly_cycle"]["default_status"] = "stopped"
    for name in ("training_data", "config_change"):
        schedule["sensors"][name]["default_status"] = "stopped"
    schedule["sensors"]["serving_observation"] = {"interval_seconds": 5, "default_status": "running"}
    (root / "schedule.yaml").write_text(yaml.safe_dump(schedule))
    return root


def latest_observation(instance, domain: str) -> dict:
    records = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=DEPLOYED, asset_partitions=[domain]),
                                          limit=1).records
    return {k: v.value for k, v in records[0].asset_observation.metadata.items()} if records else {}


def test_asset_pages_follow_the_router_after_a_rollback(embedded, serving_adapters, tmp_path, monkeypatch):
    with ServingClient(embedded.url, api_key=KEY) as client:
        loaded = {c["id"] for c in client.models()}
        for name, adapter in {"legal-ko@v1": "legal-ko", "legal-ko@v2": "medical-ko", "medical-ko@v1": "medical-ko",
                              "cs-support@v1": "cs-support"}.items():
            if name not in loaded:
                client.load_adapter(name, str(serving_adapters[adapter]))
        for domain in ("medical-ko", "cs-support"):
            client.set_alias(domain, {f"{domain}@v1": 1.0})
        client.set_alias("legal-ko", {"legal-ko@v2": 1.0})

    home, dagster_home = tmp_path / "qlora_home", tmp_path / "dagster_home"
    (home / "serving").mkdir(parents=True)
    dagster_home.mkdir()
    # "A router runs for this QLORA_HOME": the state file `qlora serve` writes, naming this router.
    (home / "serving" / "server.json").write_text(json.dumps(
        {"pid": os.getpid(), "url": embedded.url, "backend_url": embedded.backend_url, "api_key": KEY}))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions("domain", ["cs-support", "legal-ko", "medical-ko"])
    for domain, version in (("legal-ko", "v2"), ("cs-support", "v1"), ("medical-ko", "v1")):
        instance.report_runless_asset_event(dg.AssetMaterialization(
            DEPLOYED, partition=domain, metadata={"candidate_version": version, "result": "deployed"}))
    # medical-ko's next candidate was blocked: a warning on its partition, the others untouched.
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=DEPLOYED, check_name="serving_answers_new_version", passed=False, partition="medical-ko",
        severity=dg.AssetCheckSeverity.WARN,
        description="medical-ko@v2 blocked: gate blocked medical-ko@v2 by safety_refusal; serving: v1 (100%)"))

    env = {"DAGSTER_HOME": str(dagster_home), "QLORA_HOME": str(home),
           "QLORA_CONFIG_DIR": str(configs_with_only_the_observer(tmp_path / "configs"))}
    with dagster_dev(REPO / "workspace.yaml", env, tmp_path / "dagster-dev.log") as url:
        wait_for(lambda: latest_observation(instance, "legal-ko").get("serving_version") == "v2", 180,
                 "the observer's first look at legal-ko")
        with ServingClient(embedded.url, api_key=KEY) as client:  # `qlora rollback`'s move, outside Dagster
            client.set_alias("legal-ko", {"legal-ko@v1": 1.0})
        wait_for(lambda: latest_observation(instance, "legal-ko").get("serving_version") == "v1", 60,
                 "the observer recording the rollback")

        with chromium(tmp_path / "chromium") as driver:
            events = show(driver, f"{url}/assets/deployed_adapter?view=events&partition=legal-ko",
                          REPO / "docs" / "ui-after-rollback.png", ["v1 (100%)"])
            partitions = show(driver, f"{url}/assets/deployed_adapter?view=partitions&partition=legal-ko",
                              REPO / "docs" / "ui-after-rollback-partitions.png",
                              ["medical-ko", "cs-support", "v1 (100%)", "serving_version"])
            checks = show(driver, f"{url}/assets/deployed_adapter?view=checks",
                          REPO / "docs" / "ui-gate-blocked.png", ["serving_answers_new_version", "safety_refusal"])
    assert "serving_observation_sensor" in events and "legal-ko" in events
    assert "legal-ko" in partitions
    assert "serving_answers_new_version" in checks
