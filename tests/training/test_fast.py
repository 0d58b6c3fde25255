"""The fast GPU profile's levers keep the seed's math: packing without cross-contamination, the
fused loss equal to the HF loss, the profile's `speed:` block validated. CPU, tiny model."""

from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from qlora.training.fast.levers import SpeedConfig, set_checkpointed_layers
from qlora.training.fast.loss import FusedLossCausalLM, chunked_linear_cross_entropy
from qlora.training.fast.packing import PaddingFreeCollator, padded_batch, token_budget_batches
from qlora.training.fast.varlen_attention import cu_seqlens_from_position_ids, register

FAST_PROFILE = Path(__file__).resolve().parents[2] / "configs" / "qlora" / "llama3-8b-fast.yaml"


def load_config_speed(**changes) -> SpeedConfig:
    """The fast profile's speed block with `auto` settings replaced (as the run does for a shape)."""
    speed = SpeedConfig.from_mapping(yaml.safe_load(FAST_PROFILE.read_text())["speed"])
    return speed.model_copy(update={"max_tokens_per_batch": None, "offload_layers": 0, **changes})


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=97, max_position_embeddings=256)
    model = LlamaForCausalLM(config).eval()
    model.set_attn_implementation(register())
    return model


@pytest.fixture(scope="module")
def examples():
    generator = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 97, (n,), generator=generator).tolist()} for n in (7, 19, 12)]


def test_packed_row_gives_each_sequence_its_own_logits(tiny_llama, examples):
    batch = PaddingFreeCollator()(examples)
    with torch.no_grad():
        packed = tiny_llama(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                            cu_seq_lens_q=batch["cu_seq_lens_q"], cu_seq_lens_k=batch["cu_seq_lens_k"],
                            max_length_q=batch["max_length_q"], max_length_k=batch["max_length_k"]).logits[0]
        alone = torch.cat([tiny_llama(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples])
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-4)


def test_packed_row_without_boundaries_would_leak(tiny_llama, examples):
    """The check above can fail: one causal row over the same tokens changes later sequences."""
    ids = torch.tensor([sum((e["input_ids"] for e in examples), [])])
    with torch.no_grad():
        leaked = tiny_llama(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None]).logits[0]
        second = tiny_llama(input_ids=torch.tensor([examples[1]["input_ids"]])).logits[0]
    assert not torch.allclose(leaked[7:26], second, atol=1e-3)


def test_boundaries_found_from_restarting_positions_alone(tiny_llama, examples):
    batch = PaddingFreeCollator()(examples)
    cu, longest = cu_seqlens_from_position_ids(batch["position_ids"])
    assert cu.tolist() == [0, 7, 26, 38] and longest == 19
    with torch.no_grad():  # no cu_seq_lens given: the attention derives them from position_ids
        by_positions = tiny_llama(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        alone = tiny_llama(input_ids=torch.tensor([examples[2]["input_ids"]])).logits
    torch.testing.assert_close(by_positions[0, 26:], alone[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="start every sequence at 0"):
        cu_seqlens_from_position_ids(torch.tensor([[3, 4, 5]]))


def test_collator_masks_each_sequence_start(examples):
    batch = PaddingFreeCollator()(examples)
    labels = batch["labels"][0].tolist()
    assert [i for i, label in enumerate(labels) if label == -100] == [0, 7, 26]
    assert batch["position_ids"][0, 7].item() == 0 and batch["input_ids"].shape == (1, 38)
    assert batch["cu_seq_lens_q"].dtype == torch.int32
    with pytest.raises(ValueError, match="example 1"):
        PaddingFreeCollator()([{"input_ids": [1, 2]}, {"input_ids": [3]}])


def test_fused_loss_equals_the_seed_loss_on_padded_rows(tiny_llama, examples):
    with torch.no_grad():
        seed_loss = tiny_llama(**padded_batch(examples, pad_id=0)).loss
        fused = FusedLossCausalLM(tiny_llama)(**PaddingFreeCollator()(examples))
    torch.testing.assert_close(fused, seed_loss, rtol=1e-5, atol=1e-5)


def test_chunked_cross_entropy_matches_plain_and_backpropagates():
    torch.manual_seed(2)
    hidden = torch.randn(5000, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = torch.randint(0, 50, (5000,))
    chunked = chunked_linear_cross_entropy(hidden, weight, labels)
    plain = torch.nn.functional.cross_entropy(hidden @ weight.T, labels)
    torch.testing.assert_close(chunked, plain)
    chunked.backward()
    assert hidden.grad is not None and torch.isfinite(weight.grad).all()


def test_token_budget_keeps_order_and_rejects_oversize_rows():
    assert token_budget_batches([3, 3, 3, 5, 1], 6) == [[0, 1], [2], [3, 4]]
    with pytest.raises(ValueError, match="example 1 has 9 tokens"):
        token_budget_batches([2, 9], 8)


def test_selected_layers_are_checkpointed(tiny_llama):
    assert set_checkpointed_layers(tiny_llama, 1) == 1
    assert [layer.gradient_checkpointing for layer in tiny_llama.model.layers] == [True, False]
    tiny_llama.gradient_checkpointing_disable()


def test_fast_profile_speed_block_is_valid():
    speed = SpeedConfig.from_mapping(yaml.safe_load(FAST_PROFILE.read_text())["speed"])
    assert speed.packing and speed.fused_loss and not speed.fp32_upcast


@pytest.mark.parametrize(
    ("raw", "message"),
    [({"pakcing": True}, "speed.pakcing: unknown field"),
     ({"packing": "yes"}, "speed.packing: Input should be a valid boolean"),
     ({"checkpoint_layers": -1}, "speed.checkpoint_layers: expected a non-negative integer"),
     ({"max_tokens_per_batch": 4096}, "max_tokens_per_batch needs packing"),
     ({"checkpoint_layers": True}, "speed.checkpoint_layers: expected a non-negative integer")],
)
def test_speed_block_errors_name_the_field(raw, message):
    with pytest.raises(ValueError, match=message):
        SpeedConfig.from_mapping(raw)


def test_fast_profile_loads_through_the_entrypoint_config_and_packs():
    from qlora.training.config import load_config
    from qlora.training.sft import sft_arguments

    config = load_config(FAST_PROFILE)
    assert config.speed.packing and not config.gradient_checkpointing
    args = sft_arguments(config, Path("/tmp/unused"), has_eval=False)
    assert args.packing and args.padding_free and args.packing_strategy == "bfd"
    seed = load_config(FAST_PROFILE.parent / "llama3-8b.yaml")
    assert seed.speed is None and not sft_arguments(seed, Path("/tmp/unused"), has_eval=False).packing


def test_entrypoint_config_rejects_levers_the_trainer_would_undo():
    from qlora.training.config import ConfigError, validate_config

    raw = yaml.safe_load(FAST_PROFILE.read_text())
    with pytest.raises(ConfigError, match="speed.checkpoint_layers"):
        validate_config({**raw, "gradient_checkpointing": True})
    with pytest.raises(ConfigError, match="`speed.liger`: unknown field"):
        validate_config({**raw, "speed": {"liger": True}})


def test_prepare_base_keeps_the_base_bf16_and_frozen(tiny_llama):
    from qlora.training.fast.trainer_hooks import prepare_base

    model = LlamaForCausalLM(tiny_llama.config).to(torch.bfloat16)
    speed = load_config_speed(checkpoint_layers=1)
    prepared = prepare_base(model, speed)
    assert {p.dtype for p in prepared.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in prepared.parameters())
    assert prepared.config._attn_implementation == "varlen_sdpa"
    flags = [layer.gradient_checkpointing for layer in prepared.model.layers]
    assert flags == [index < speed.checkpoint_layers for index in range(len(flags))]


def test_add_lora_routes_the_fast_profile_through_the_fused_lora(tiny_llama):
    """The entrypoint's add_lora applies `fused_lora` and `lora_groups`; the model trains like peft's own."""
    import copy

    from qlora.training.config import load_config
    from qlora.training.fast.fused_lora import _fused_forward
    from qlora.training.fast.lora_group import _group_forward
    from qlora.training.sft import add_lora

    config = load_config(FAST_PROFILE).model_copy(update={"lora_dropout": 0.0})
    config = config.model_copy(update={"speed": config.speed.model_copy(update={"checkpoint_layers": 0,
                                                                                "max_tokens_per_batch": None,
                                                                                "offload_layers": 0})})
    assert config.speed.fused_lora and config.speed.lora_groups
    seed_like = config.model_copy(update={"speed": config.speed.model_copy(update={"fused_lora": False,
                                                                                   "lora_groups": False})})
    fused = add_lora(copy.deepcopy(tiny_llama).float(), config)
    plain = add_lora(copy.deepcopy(tiny_llama).float(), seed_like)
    forwards = [getattr(m.__dict__.get("forward"), "__func__", None) for m in fused.modules()]
    # per layer: o_proj and down_proj per module, q/k/v and gate/up as groups
    assert forwards.count(_fused_forward) == 2 * 2 and forwards.count(_group_forward) == 2 * 5
    assert not any("forward" in m.__dict__ for m in plain.modules() if hasattr(m, "lora_A"))
    plain.load_state_dict(fused.state_dict())
    batch = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(2))
    losses = []
    for model in (fused, plain):
        model.train()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        losses.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    torch.testing.assert_close(losses[0][0], losses[1][0])
    for name, grad in losses[0][1].items():
        torch.testing.assert_close(grad, losses[1][1][name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(("profile", "differs"), [
    ("llama3-8b-lowmem.yaml", {"speed.memory_budget_gib", "speed.recompute_lora_inputs"}),
    # lora_groups is measured on 8B only (docs/benchmarks.md): the 70B profile stays as measured
    ("llama3-70b-fast.yaml", {"base_profile", "speed.memory_budget_gib", "speed.lora_groups"}),
])
def test_derived_fast_profiles_differ_only_in_budget_and_base(profile, differs):
    """(and lowmem in the input recompute, which trades ~2% of speed for a third of a kept layer)"""
    from qlora.training.config import load_config

    fast = load_config(FAST_PROFILE).model_dump()
    low = load_config(FAST_PROFILE.parent / profile).model_dump()
    changed = {key for key in fast if fast[key] != low[key] and key != "speed"}
    changed |= {f"speed.{key}" for key in fast["speed"] if fast["speed"][key] != low["speed"][key]}
    assert changed == differs
    # the same tokens per optimiser update as the seed's 4 x 8 rows of 4096
    for settings in (fast, low):
        assert settings["per_device_train_batch_size"] * settings["gradient_accumulation_steps"] == 32
