"""The Dagster UI as a user meets it: `dagster dev`, one domain retrained, the lineage in a browser.

Starts `dagster dev -w workspace.yaml` on a free loopback port with a temp DAGSTER_HOME and
QLORA_HOME, one sample domain and the repo's configs (automation switched off so only the
launched runs happen), launches `build_base_model` then `retrain_domain` for that domain through
the GraphQL API, waits for success, and opens the global asset lineage in headless Debian
Chromium; every asset of the card must be drawn. The picture goes to docs/asset-graph.png.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from qlora_assets.automation.jobs import DOMAIN_ASSETS
from qlora_assets.settings import discover_domains
from tests.dagster_ui import (
    REPO,
    add_partition,
    dagster_dev,
    failure_messages,
    materialised_partitions,
    open_asset_graph,
    repository,
    run_job,
)
from tests.system_deps import require_binaries

WORKSPACE = REPO / "workspace.yaml"
SCREENSHOT = REPO / "docs" / "asset-graph.png"
ASSETS = ["base_model", *DOMAIN_ASSETS]


def smallest_sample_domain() -> str:
    training = REPO / "data" / "training"
    domains = discover_domains(training)
    assert domains, f"no sample domain under {training}"
    return min(domains, key=lambda d: sum(p.stat().st_size for p in (training / d).rglob("*") if p.is_file()))


def one_domain_data(domain: str, root: Path) -> Path:
    shutil.copytree(REPO / "data" / "training" / domain, root / "training" / domain)
    (root / "eval").mkdir(parents=True)
    for eval_set in (REPO / "data" / "eval").glob(f"{domain}.*"):
        shutil.copy(eval_set, root / "eval" / eval_set.name)
    return root


def configs_without_automation(root: Path) -> Path:
    """The repo's configs with sensors and schedule stopped: only the runs this test launches happen."""
    shutil.copytree(REPO / "configs", root)
    schedule = yaml.safe_load((root / "schedule.yaml").read_text()) or {}
    schedule.setdefault("weekly_cycle", {})["default_status"] = "stopped"
    for name in ("training_data", "config_change"):
        schedule.setdefault("sensors", {}).setdefault(name, {})["default_status"] = "stopped"
    (root / "schedule.yaml").write_text(yaml.safe_dump(schedule))
    return root


def stop_embedded_serving(qlora_home: Path) -> None:
    """deployed_adapter starts a detached embedded server for its QLORA_HOME; end it with the test."""
    from qlora_assets.serving.daemon import stop

    stop(state_dir=qlora_home / "serving")


def test_retrain_one_domain_from_the_ui_and_see_the_whole_graph(tmp_path):
    browser = require_binaries("chromium", "chromedriver")
    domain = smallest_sample_domain()
    (tmp_path / "dagster_home").mkdir()
    env = {
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "QLORA_HOME": str(tmp_path / "qlora_home"),
        "QLORA_DATA_DIR": str(one_domain_data(domain, tmp_path / "data")),
        "QLORA_CONFIG_DIR": str(configs_without_automation(tmp_path / "configs")),
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
            stop_embedded_serving(Path(env["QLORA_HOME"]))
    assert "Global asset lineage" in page
    assert SCREENSHOT.stat().st_size > 10_000
