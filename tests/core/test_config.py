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


def test_a_wrong_value_is_reported_with_its_file_line_and_field(tmp_path):
    from pydantic import BaseModel

    from qlora.core.config import ConfigError, load_yaml_model

    class Inner(BaseModel):
        rate: float

    class Outer(BaseModel):
        name: str
        inner: Inner
        items: list[int] = []

    path = tmp_path / "bad.yaml"
    path.write_text("name: demo\n# a comment\ninner:\n  rate: fast\nitems:\n  - 1\n  - two\n")
    with pytest.raises(ConfigError) as caught:
        load_yaml_model(Outer, path)
    message = str(caught.value)
    assert str(path) in message
    assert "line 4: field 'inner.rate'" in message and "line 7: field 'items.1'" in message
    assert (caught.value.line, caught.value.field) == (4, "inner.rate")


def test_a_missing_field_points_at_its_parent_and_every_area_raises_the_one_config_error(tmp_path):
    from qlora.core.config import ConfigError
    from qlora.training.config import load_config

    (tmp_path / "configs" / "qlora").mkdir(parents=True)
    path = tmp_path / "configs" / "qlora" / "typo.yaml"
    path.write_text("base_profile: tiny\nr: 16\nlora_alpha: 32\nlearning_rate: lots\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "line 4" in str(caught.value) and "learning_rate" in str(caught.value)
