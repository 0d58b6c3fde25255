"""Every YAML config loader names the file and the line of a syntax error, and refuses a non-mapping."""
from __future__ import annotations

import pytest

from qlora.data.config import load_data_config
from qlora.serving.config import load_config as load_serving_config
from qlora.training.config import load_config as load_training_config
from qlora.training.k8s import load_k8s_config
from resources.gpu import GpuResource

LOADERS = {
    "data": load_data_config,
    "training": load_training_config,
    "serving": load_serving_config,
    "k8s": load_k8s_config,
    "gpu": GpuResource.from_prod_config,
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_a_yaml_syntax_error_names_file_and_line(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text("r: 8\nlora_alpha: [16, 32\nbias: none\n", encoding="utf-8")
    with pytest.raises(ValueError) as error:
        LOADERS[name](path)
    message = str(error.value)
    assert str(path) in message and "not valid YAML" in message
    assert " line 3" in message or " line 4" in message  # where the parser noticed the open list


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_a_list_at_the_top_is_refused_naming_the_file(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text("- r: 8\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a mapping of settings, got list") as error:
        LOADERS[name](path)
    assert str(path) in str(error.value)
