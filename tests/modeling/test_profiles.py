"""The base is chosen once: QLORA_BASE_PROFILE picks the resource's profile, the training profile
sized for it, and the folder the embedded server loads; the ChatML template check."""
from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from qlora.modeling.base_checks import chat_template_check
from qlora.modeling.base_identity import compare_bases
from qlora.modeling.chat_template import CHATML_CHAT_TEMPLATE, CHATML_PAD, IM_END, IM_START
from qlora.modeling.profiles import BASE_PROFILE_ENV, selected_profile, training_config_for


def test_one_switch_selects_base_training_profile_and_serving_folder(monkeypatch, qlora_home):
    from qlora.serving.config import EmbeddedConfig
    from resources.base_model import BaseModelResource

    monkeypatch.delenv(BASE_PROFILE_ENV, raising=False)
    assert selected_profile() == "tiny" and BaseModelResource().profile == "tiny"
    monkeypatch.setenv(BASE_PROFILE_ENV, "smollm2-135m")
    assert BaseModelResource().profile == "smollm2-135m"
    assert BaseModelResource().training_config() == training_config_for("smollm2-135m") == "smollm2-135m-cpu"
    assert EmbeddedConfig().base_model_path() == qlora_home / "base_models" / "smollm2-135m"
    assert BaseModelResource(profile="tiny").profile == "tiny"  # an explicit binding wins


def test_the_switch_selects_the_served_numerics_of_the_shipped_profile(monkeypatch, qlora_home):
    from qlora.serving.config import load_config as load_serving_config

    shipped = load_serving_config()  # configs/serving/embedded.yaml
    monkeypatch.delenv(BASE_PROFILE_ENV, raising=False)
    tiny = shipped.numerics()
    assert (tiny.quantization, tiny.compute_dtype) == (shipped.quantization, shipped.compute_dtype)
    monkeypatch.setenv(BASE_PROFILE_ENV, "smollm2-135m")
    assert shipped.numerics() == shipped.numerics_by_base["smollm2-135m"]
    assert shipped.numerics() != tiny
    # A pinned folder (eval's server) is served as the profile its fingerprint records, whatever
    # the switch says; one without a fingerprint gets the profile-wide settings.
    monkeypatch.setenv(BASE_PROFILE_ENV, "tiny")
    built = qlora_home / "built-smollm2"
    built.mkdir()
    (built / "fingerprint.json").write_text(json.dumps({"profile": "smollm2-135m", "fingerprint": "f"}))
    assert shipped.model_copy(update={"base_model": str(built)}).numerics() == shipped.numerics_by_base["smollm2-135m"]
    assert shipped.model_copy(update={"base_model": str(qlora_home / "elsewhere")}).numerics() == tiny


def test_every_profile_names_a_training_config_that_exists():
    from qlora.core.paths import REPO_ROOT
    from qlora.modeling.profiles import PROFILES
    from qlora.training.config import load_config

    for name in PROFILES:
        config = load_config(REPO_ROOT / "configs" / "qlora" / f"{training_config_for(name)}.yaml")
        assert config.base_profile == name


_TOKENIZER: dict = {}


def _chatml_tokenizer(eos=IM_END, template=CHATML_CHAT_TEMPLATE):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.train_from_iterator(["You are a helpful assistant. Hello Hi"] * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=[CHATML_PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=IM_START, eos_token=eos, pad_token=CHATML_PAD)
    tok.chat_template = template
    return tok


def test_chatml_template_check_passes_with_im_end_as_end_of_turn():
    result = chat_template_check(_chatml_tokenizer())
    assert result["passed"], result["problems"]
    assert result["family"] == "chatml"


def test_chatml_check_fails_on_the_ggufs_own_eos_and_on_a_template_without_generation_markers():
    wrong_eos = chat_template_check(_chatml_tokenizer(eos=IM_START))  # what the GGUF metadata says
    assert not wrong_eos["passed"] and any("expected <|im_end|>" in p for p in wrong_eos["problems"])
    unmarked = CHATML_CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    result = chat_template_check(_chatml_tokenizer(template=unmarked))
    assert not result["passed"] and any("generation" in p for p in result["problems"])


def test_base_agreement_names_both_sides(tmp_path):
    import json

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "manifest.json").write_text(json.dumps({"base": {"path": "/b", "fingerprint": "bbbb"}}))
    verdict = compare_bases("served-base", "aaaa", adapter)
    assert not verdict.passed
    assert "aaaa" in verdict.message() and "bbbb" in verdict.message() and "served-base" in verdict.message()
    assert compare_bases("served-base", "bbbb", adapter).passed
    assert not compare_bases("served-base", "", adapter).passed  # a server that cannot tell blocks
    (adapter / "manifest.json").write_text(json.dumps({"version": "v1"}))
    assert not compare_bases("served-base", "bbbb", adapter).passed  # unverifiable blocks


def test_base_model_command_names_an_unknown_profile_and_exits_2():
    from typer.testing import CliRunner

    from qlora.cli import app

    result = CliRunner().invoke(app, ["base-model", "--profile", "no-such-base"])
    assert result.exit_code == 2
    assert "unknown base model profile 'no-such-base'" in result.output and "smollm2-135m" in result.output


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text(max_size=40)), min_size=1, max_size=5),
       st.booleans())
def test_chatml_renderer_matches_the_jinja_template(turns, generation_prompt):
    from qlora.modeling.chat_template import render_chatml

    messages = [{"role": r, "content": c} for r, c in turns]
    tokenizer = _TOKENIZER.get("chatml") or _TOKENIZER.setdefault("chatml", _chatml_tokenizer())
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    assert render_chatml(messages, add_generation_prompt=generation_prompt) == expected
