"""The Dagster UI as a user meets it: `dagster dev`, one domain retrained, the lineage in a browser.

Starts `dagster dev -w workspace.yaml` on a free loopback port with a temp DAGSTER_HOME, launches
`build_base_model` then `retrain_domain` for one sample domain through the GraphQL API, waits
for both to succeed, and opens the global asset lineage in headless Debian Chromium, where every
asset of the card must be drawn. The picture goes to docs/asset-graph.png.

Kept small on purpose: QLORA_HOME is the session's, so the tiny base built by the `tiny_base`
fixture is reused (same data, same inputs hash); the configs are a copy with automation off
(only the launched runs happen), training cut to a few steps and the quality gate opened. This
test is about the UI and the wiring; adapter quality and the gate have their own tests.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from qlora_assets.automation.jobs import DOMAIN_ASSETS
from qlora.core.paths import discover_domains, paths
from tests.support.dagster_ui import (
    REPO,
    add_partition,
    dagster_dev,
    failure_messages,
    materialised_partitions,
    open_asset_graph,
    repository,
    run_job,
)
from tests.support.config_copies import edit_yaml, open_gates, shorten_training
from tests.support.system_deps import require_binaries

WORKSPACE = REPO / "workspace.yaml"
SCREENSHOT = REPO / "docs" / "asset-graph.png"
ASSETS = ["base_model", *DOMAIN_ASSETS]
TRAINING_PROFILE = "tiny-cpu"  # the trainer resource's default profile


def smallest_domain(training: Path) -> str:
    domains = discover_domains(training)
    assert domains, f"no sample domain under {training}"
    return min(domains, key=lambda d: sum(p.stat().st_size for p in (training / d).rglob("*") if p.is_file()))


def quick_configs(root: Path) -> Path:
    """The repo's configs, with automation stopped, a short training and an open gate."""
    shutil.copytree(REPO / "configs", root)

    def stop_automation(schedule: dict) -> None:
        schedule.setdefault("weekly_cycle", {})["default_status"] = "stopped"
        for name in ("training_data", "config_change"):
            schedule.setdefault("sensors", {}).setdefault(name, {})["default_status"] = "stopped"

    edit_yaml(root / "schedule.yaml", stop_automation)
    shorten_training(root, TRAINING_PROFILE, steps=40)
    open_gates(root)
    return root


def test_retrain_one_domain_from_the_ui_and_see_the_whole_graph(tmp_path, tiny_base):
    browser = require_binaries("chromium", "chromedriver")
    where = paths()
    domain = smallest_domain(where.training_dir)
    (tmp_path / "dagster_home").mkdir()
    # A warehouse of its own (other tests leave rows and tables in the session's), sharing the
    # session's tiny base so that `build_base_model` finds it built.
    home = tmp_path / "qlora_home"
    home.mkdir()
    (home / "base_models").symlink_to(where.home / "base_models", target_is_directory=True)
    env = {
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "QLORA_HOME": str(home),
        "QLORA_DATA_DIR": str(where.data_dir),
        "QLORA_CONFIG_DIR": str(quick_configs(tmp_path / "configs")),
        "QLORA_QUALITY_GATE": "quality_gate.yaml",  # the copy opened by quick_configs
    }
    with dagster_dev(WORKSPACE, env, tmp_path / "dagster-dev.log") as url:
        try:
            selector = repository(url)
            add_partition(url, selector, domain)
            for job, tags in [("build_base_model", {}), ("retrain_domain", {"dagster/partition": domain})]:
                run_id, status = run_job(url, selector, job, tags, timeout_s=600)
                assert status == "SUCCESS", f"{job} ended {status}: {failure_messages(url, run_id)}"

            done = materialised_partitions(url)
            assert {name: done.get(name) for name in ASSETS} == {name: 1 for name in ASSETS}

            page = open_asset_graph(url, SCREENSHOT, ASSETS, tmp_path / "chromium-profile",
                                    browser["chromium"], browser["chromedriver"])
        finally:
            stop_embedded_serving(home)
    assert "Global asset lineage" in page
    assert SCREENSHOT.stat().st_size > 10_000


def stop_embedded_serving(qlora_home: Path) -> None:
    """deployed_adapter starts a detached embedded server for its QLORA_HOME; end it with the test."""
    from qlora.serving.daemon import stop

    stop(state_dir=qlora_home / "serving")
