"""The shipped prod profile files: secrets only from the environment, the limits the docs promise."""
import os
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PROD = REPO / "deploy" / "prod"
SCRIPT = REPO / "scripts" / "install-postgres.sh"


def test_postgres_storage_reads_every_connection_value_from_the_environment():
    config = yaml.safe_load((PROD / "dagster.yaml").read_text())
    db = config["storage"]["postgres"]["postgres_db"]
    for field in ("username", "password", "hostname", "db_name", "port"):
        assert set(db[field]) == {"env"}, f"postgres_db.{field} must come from an env var, got {db[field]!r}"
    assert {db[f]["env"] for f in ("username", "password", "hostname", "db_name", "port")} == {
        "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_PORT"}


def test_runs_are_queued_one_per_domain_and_gpu_steps_are_pooled():
    config = yaml.safe_load((PROD / "dagster.yaml").read_text())
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    limits = {limit["key"]: limit for limit in config["concurrency"]["runs"]["tag_concurrency_limits"]}
    assert limits["dagster/partition"] == {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True},
                                           "limit": 1}
    assert config["concurrency"]["pools"]["granularity"] == "op"
    assert config["run_monitoring"]["enabled"] is True


def test_workspace_points_at_the_code_server_from_the_environment():
    (entry,) = yaml.safe_load((PROD / "workspace.yaml").read_text())["load_from"]
    assert entry["grpc_server"]["host"] == {"env": "DAGSTER_CODE_SERVER_HOST"}
    assert entry["grpc_server"]["port"] == {"env": "DAGSTER_CODE_SERVER_PORT"}


def test_install_script_refuses_to_start_without_a_password(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_PG_PASSWORD"}
    env["QLORA_PG_DATA"] = str(tmp_path / "cluster")
    done = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "set DAGSTER_PG_PASSWORD" in done.stderr
    assert not (tmp_path / "cluster").exists()  # failed before touching anything


def test_install_script_rejects_an_unknown_action():
    done = subprocess.run(["bash", str(SCRIPT), "restart"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "unknown action 'restart'" in done.stderr
