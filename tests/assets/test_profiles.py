"""QLORA_PROFILE picks one resources dict; both load without contacting anything, prod fails at run start by name."""
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from resources.gpu import GpuResource
from resources.trainer import trainer_from_prod_config

REPO = Path(__file__).resolve().parents[2]
PROD_VARIABLES = ("QLORA_SERVING_URL", "QLORA_SERVING_API_KEY", "QLORA_BASE_MODEL_PATH", "QLORA_TRAINER_LAUNCHER",
                  "QLORA_PROD_CONFIG")
# A fresh interpreter with no prod variables set loads the Definitions under each profile in turn
# (the profile is read when definitions.py is imported) and describes the resources.
DESCRIBE = """
import importlib, json, os, sys, dagster as dg
described = {}
for profile in sys.argv[1:]:
    os.environ["QLORA_PROFILE"] = profile
    import definitions
    definitions = importlib.reload(definitions)
    dg.Definitions.validate_loadable(definitions.defs)
    r = definitions.defs.resources
    described[profile] = {"classes": {k: type(v).__name__ for k, v in r.items()},
                          "base_profile": r["base_checkpoint"].profile, "launcher": r["trainer"].launcher,
                          "trainer_config": r["trainer"].config, "gpu": type(r["trainer"].gpu).__name__,
                          "pipes_client": type(r["trainer"].pipes_client).__name__}
print(json.dumps(described))
"""
EXPECTED = {
    "local": {"serving": "EmbeddedServingResource", "base_profile": "tiny", "launcher": "subprocess",
              "trainer_config": "tiny-cpu", "pipes_client": "PipesSubprocessClient"},
    # configs/prod.yaml: trainer.launcher accelerate, trainer.config llama3-8b-fast
    "prod": {"serving": "VllmServingResource", "base_profile": "llama3-8b", "launcher": "accelerate",
             "trainer_config": "llama3-8b-fast", "pipes_client": "PipesSubprocessClient"},
}


def _environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROD_VARIABLES and k != "QLORA_PROFILE"}
    return {**env, "PYTHONPATH": str(REPO), **values}


def test_each_profile_loads_its_resources_with_no_prod_variables_set():
    done = subprocess.run([sys.executable, "-c", DESCRIBE, *EXPECTED], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=_environment(QLORA_CONFIG_DIR=str(REPO / "configs")))
    assert done.returncode == 0, done.stderr[-3000:]
    described = json.loads(done.stdout.strip().splitlines()[-1])
    for profile, want in EXPECTED.items():
        seen = described[profile]
        assert seen["classes"] == {"warehouse": "WarehouseResource", "serving": want["serving"],
                                   "trainer": "TrainerResource", "base_checkpoint": "BaseModelResource",
                                   "tracking": "MlflowTrackingResource"}, profile
        assert {k: seen[k] for k in want if k != "serving"} == {k: v for k, v in want.items() if k != "serving"}
        assert seen["gpu"] == "GpuResource"  # the pool is nested in the trainer, not built inside its run


@pytest.fixture
def load_definitions(monkeypatch):
    """Re-import definitions.py under the environment the test sets; the default profile is restored after."""
    import definitions

    def load(**env: str):
        for name in (*PROD_VARIABLES, "QLORA_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return importlib.reload(definitions)

    yield load
    monkeypatch.undo()
    importlib.reload(definitions)


def test_an_unknown_profile_fails_naming_the_variable(load_definitions):
    with pytest.raises(ValueError, match=r"QLORA_PROFILE='staging': expected one of local, prod"):
        load_definitions(QLORA_PROFILE="staging")


def test_the_launcher_variable_overrides_the_prod_config(load_definitions):
    loaded = load_definitions(QLORA_PROFILE="prod", QLORA_TRAINER_LAUNCHER="k8s")
    trainer = loaded.defs.resources["trainer"]
    assert trainer.launcher == "k8s" and type(trainer.pipes_client).__name__ == "PipesK8sClient"
    with pytest.raises(ValueError, match=r"QLORA_TRAINER_LAUNCHER: 'slurm' is not a launcher"):
        load_definitions(QLORA_PROFILE="prod", QLORA_TRAINER_LAUNCHER="slurm")


def test_prod_config_trainer_section_is_checked(tmp_path):
    config = tmp_path / "prod.yaml"
    config.write_text("trainer:\n  launcher: subprocess\n  config: tiny-cpu\n  env: {A: '1'}\n")
    trainer = trainer_from_prod_config(config, GpuResource(devices="0,1", gpus_per_run=2), None)
    assert (trainer.launcher, trainer.config, trainer.env, trainer.gpu.gpus_per_run) == ("subprocess", "tiny-cpu",
                                                                                        {"A": "1"}, 2)
    assert trainer_from_prod_config(tmp_path / "absent.yaml", GpuResource(), None).launcher == "subprocess"
    config.write_text("trainer:\n  launcher: slurm\n")
    with pytest.raises(ValueError, match=r"prod.yaml: trainer.launcher: 'slurm' is not a launcher"):
        trainer_from_prod_config(config, GpuResource(), None)
    config.write_text("trainer:\n  num_gpus: 4\n")
    with pytest.raises(ValueError, match=r"prod.yaml: trainer: unknown field\(s\) \['num_gpus'\]"):
        trainer_from_prod_config(config, GpuResource(), None)


def test_accelerate_runs_one_process_per_leased_gpu():
    trainer = trainer_from_prod_config(REPO / "configs" / "prod.yaml", GpuResource(gpus_per_run=4), "accelerate")
    command = trainer.command(["--config", "x.yaml"])
    assert command[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "4"]
    assert command[-3:] == ["qlora.training.entrypoint", "--config", "x.yaml"]


@pytest.mark.parametrize("asset, variable", [("eval_report", "QLORA_SERVING_URL"),
                                             ("base_model", "QLORA_BASE_MODEL_PATH")])
def test_a_prod_run_fails_at_its_start_naming_the_unset_variable(load_definitions, asset, variable):
    loaded = load_definitions(QLORA_PROFILE="prod")
    job = loaded.defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("domain", ["legal-ko"])
        partition = {"partition_key": "legal-ko"} if asset != "base_model" else {}
        with pytest.raises(dg.DagsterInvalidConfigError, match=variable):
            job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(asset)], **partition)


def _environment_reads_at_import(path: Path) -> list[str]:
    """`os.environ` / `os.getenv` uses outside any function body: what a module reads when imported."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for n in ast.walk(f)}
    reads = []
    for node in ast.walk(tree):
        if id(node) in inside_functions or not isinstance(node, ast.Attribute) or node.attr not in {"environ", "getenv"}:
            continue
        reads.append(f"{path.name}:{node.lineno}")
    return reads


def test_resources_read_no_environment_at_import():
    assert [r for p in sorted((REPO / "resources").glob("*.py")) for r in _environment_reads_at_import(p)] == []


def test_definitions_reads_only_the_profile_switch_at_import():
    import definitions

    source = (REPO / "definitions.py").read_text(encoding="utf-8")
    assert {definitions.PROFILE_ENV, definitions.PROD_CONFIG_ENV, definitions.LAUNCHER_ENV} == {
        "QLORA_PROFILE", "QLORA_PROD_CONFIG", "QLORA_TRAINER_LAUNCHER"}
    # Every other variable is a dg.EnvVar, resolved when a run starts.
    assert source.count("os.environ.get(") == 3
    assert {"QLORA_SERVING_URL", "QLORA_SERVING_API_KEY", "QLORA_BASE_MODEL_PATH"} <= {
        name for name in PROD_VARIABLES if f'dg.EnvVar("{name}")' in source}
