"""The vLLM profile (command, adapter check), config validation, and the `serving` Dagster resources."""
from __future__ import annotations

import json
import shlex

import pytest
from typer.testing import CliRunner

from qlora.cli import app
from qlora.serving.config import EmbeddedConfig, VllmConfig, load_config
from qlora.serving.vllm_profile import check_adapter_for_vllm, vllm_command


def test_print_command_has_the_lora_flags_and_env():
    result = CliRunner().invoke(app, ["serve", "--backend", "vllm", "--print-command"])
    assert result.exit_code == 0, result.output
    assert "export VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in result.output
    line = next(l for l in result.output.splitlines() if " vllm serve " in f" {l}")
    argv = shlex.split(line)
    assert argv[:4] == ["VLLM_ALLOW_RUNTIME_LORA_UPDATING=True", "vllm", "serve", "/models/Llama-3.1-8B-Instruct"]
    assert "--enable-lora" in argv
    profile = load_config(None, "vllm")
    assert int(argv[argv.index("--max-lora-rank") + 1]) == profile.max_lora_rank
    assert int(argv[argv.index("--max-loras") + 1]) == profile.max_loras
    assert int(argv[argv.index("--max-cpu-loras") + 1]) == profile.max_cpu_loras


def test_vllm_command_follows_the_config():
    config = VllmConfig(model="/m/x", max_lora_rank=16, max_loras=2, max_cpu_loras=8, quantization="bitsandbytes",
                        api_key_env="", extra_args=["--enforce-eager"])
    argv = vllm_command(config).argv
    assert argv[argv.index("--max-lora-rank") + 1] == "16" and argv[argv.index("--quantization") + 1] == "bitsandbytes"
    assert "--api-key" not in argv and argv[-1] == "--enforce-eager"


def test_check_adapter_names_why_vllm_would_refuse(serving_adapters):
    config = VllmConfig(max_lora_rank=32)
    assert check_adapter_for_vllm(serving_adapters["legal-ko"], config) == []
    assert check_adapter_for_vllm(serving_adapters["rank-too-big"], config) == [
        "LoRA rank 64 is greater than max_lora_rank 32."]
    reasons = check_adapter_for_vllm(serving_adapters["with-lm-head"], config)
    assert len(reasons) == 1 and "modules_to_save" in reasons[0] and "lm_head" in reasons[0]
    result = CliRunner().invoke(app, ["serve", "--backend", "vllm", "--check-adapter",
                                      str(serving_adapters["with-lm-head"])])
    assert result.exit_code == 1 and "REFUSED" in result.output


@pytest.mark.parametrize("text, needle", [
    ("backend: vllm\nmax_lora_rank: 48\n", "max_lora_rank: 48 is not allowed"),
    ("backend: vllm\nmax_loras: 8\nmax_cpu_loras: 4\n", "max_cpu_loras (4) must be >= max_loras (8)"),
    ("backend: embedded\nquantization: int8\n", "field 'quantization': Input should be 'nf4', 'nf4-dequantized' or 'none'"),
    ("backend: embedded\nmax_lora_rnak: 16\n", "field 'max_lora_rnak': Extra inputs are not permitted"),
    ("backend: embedded\nmax_batch_size: many\n", "field 'max_batch_size': Input should be a valid integer"),
    ("backend: embedded\nbackend_host: 0.0.0.0\n", "field 'backend_host': Value error, must be a loopback address"),
    ("backend: embedded\nrouter:\n  max_body_bytes: 10\n", "field 'router.max_body_bytes'"),
    ("backend: tgi\n", "field 'backend': must be 'embedded' or 'vllm'"),
])
def test_bad_profiles_fail_naming_file_and_field(tmp_path, text, needle):
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_shipped_profiles_load():
    embedded = load_config(None, "embedded")
    assert isinstance(embedded, EmbeddedConfig) and embedded.quantization == "nf4"
    assert isinstance(load_config(None, "vllm"), VllmConfig)


@pytest.mark.slow  # starts the detached daemon: a fresh interpreter loading torch and the model
def test_embedded_resource_starts_one_detached_server_and_reuses_it(serving_base, serving_adapters, tmp_path,
                                                                      monkeypatch):
    import shutil

    from resources.serving import EmbeddedServingResource

    home = tmp_path / "home"  # its own QLORA_HOME: other tests' servers are left alone
    monkeypatch.setenv("QLORA_HOME", str(home))
    adapter = shutil.copytree(serving_adapters["legal-ko"], home / "artifacts" / "adapters" / "legal-ko" / "v1")
    resource = EmbeddedServingResource(base_model_path=str(serving_base))
    try:
        first = resource.client()
        state_file = home / "serving" / "server.json"
        pid = json.loads(state_file.read_text())["pid"]
        assert oct(state_file.stat().st_mode & 0o777) == "0o600"  # it holds the admin key
        first.load_adapter("legal-ko@daemon", str(adapter))
        second = resource.client()  # same QLORA_HOME: the running server is reused
        assert json.loads(state_file.read_text())["pid"] == pid
        assert second.chat("legal-ko@daemon", [{"role": "user", "content": "hi"}], max_tokens=3).model \
            == "legal-ko@daemon"
    finally:
        assert resource.stop()


def test_vllm_resource_needs_the_admin_key(monkeypatch):
    from resources.serving import VllmServingResource

    resource = VllmServingResource(url="http://serving:8000")
    monkeypatch.delenv("QLORA_SERVING_API_KEY", raising=False)
    with pytest.raises(ValueError, match="QLORA_SERVING_API_KEY"):
        resource.client()
    monkeypatch.setenv("QLORA_SERVING_API_KEY", "k")
    client = resource.client()
    assert client.base_url == "http://serving:8000" and client.api_key == "k"


def test_base_is_nf4_when_configured_and_plain_otherwise(embedded, serving_base):
    import bitsandbytes as bnb
    import torch

    from qlora.serving.model_store import ModelStore

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in embedded.engine.store.base.modules())
    assert embedded.engine.store.base.model.layers[0].mlp.up_proj.weight.quant_state.quant_type == "nf4"
    plain = ModelStore(serving_base, quantization="none", compute_dtype="float32")
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in plain.base.modules())
    assert {p.dtype for p in plain.base.parameters()} == {torch.float32}


def test_default_base_is_the_base_model_assets_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("QLORA_HOME", str(tmp_path / "home"))  # never touch the session's real base
    tiny = tmp_path / "home" / "base_models" / "tiny"
    tiny.mkdir(parents=True)
    elsewhere = tmp_path / "checkpoint"
    (tiny / "fingerprint.json").write_text(json.dumps({"model_path": str(elsewhere)}))
    assert EmbeddedConfig().base_model_path() == elsewhere  # a checkpoint recorded elsewhere is followed
    (tiny / "config.json").write_text("{}")
    assert EmbeddedConfig().base_model_path() == tiny


def test_serve_reports_a_bad_profile_without_a_traceback(tmp_path):
    from typer.testing import CliRunner

    from qlora.cli import app

    path = tmp_path / "serving.yaml"
    path.write_text("backend: embedded\nrouter:\n  max_body_bytes: many\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    assert f"{path}: line 3: field 'router.max_body_bytes'" in result.output and "Traceback" not in result.output
