"""A server started without a config reads the shipped profile, configs/serving/embedded.yaml
(as the serving resource's and the daemon's "'' = configs/serving/embedded.yaml" promise)."""
from __future__ import annotations

import shutil

from qlora.core.paths import REPO_ROOT
from qlora.serving.embedded import start_embedded
from tests.support.config_copies import edit_yaml


def test_a_server_without_a_config_follows_the_shipped_profile(serving_base, tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", configs)
    edit_yaml(configs / "serving" / "embedded.yaml",
              lambda profile: profile.update(max_batch_size=3, quantization="nf4-dequantized"))
    monkeypatch.setenv("QLORA_CONFIG_DIR", str(configs))
    handle = start_embedded(serving_base, state_dir=tmp_path / "state")
    try:
        engine = handle._backend.engine
        assert engine.max_batch_size == 3
        assert not any(type(m).__name__ == "Linear4bit" for m in engine.store.base.modules())
    finally:
        handle.stop()
