"""speed.embedding_on_host (qlora/training/fast/host_embedding.py) on the CPU: the same logits and
gradients with the table moved out of the model's parameters, and back; the GPU gather through
pinned memory is the GPU bench's."""
from __future__ import annotations

import pytest
import torch

from qlora.training.fast.host_embedding import HostEmbedding, move_embedding_to_host, restore_embedding


def _tiny_llama(tied: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=97, max_position_embeddings=64,
                         tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).train()
    for name, param in model.named_parameters():
        param.requires_grad_("layers.1" in name)  # a frozen base with one trainable layer: gradients to compare
    return model


def _logits_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.logits.detach().clone(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_host_table_gives_the_same_logits_and_gradients_and_leaves_the_parameters():
    model = _tiny_llama()
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(3))
    logits, grads = _logits_and_grads(model, ids)
    table = model.model.embed_tokens.weight.detach().clone()
    host = move_embedding_to_host(model)
    assert isinstance(model.model.embed_tokens, HostEmbedding) and host.weight.shape == (97, 64)
    assert all("embed_tokens" not in name for name, _ in model.named_parameters())
    assert all("embed_tokens" not in name for name in model.state_dict())
    assert torch.equal(model.get_input_embeddings().weight, table)
    logits_host, grads_host = _logits_and_grads(model, ids)
    assert torch.equal(logits_host, logits) and grads_host.keys() == grads.keys()
    assert all(torch.equal(grads_host[n], grads[n]) for n in grads)
    restore_embedding(model, "cpu")
    assert isinstance(model.model.embed_tokens, torch.nn.Embedding)
    assert torch.equal(model.model.embed_tokens.weight, table) and not model.model.embed_tokens.weight.requires_grad
    assert torch.equal(_logits_and_grads(model, ids)[0], logits)


def test_a_trained_or_tied_embedding_is_refused():
    model = _tiny_llama()
    model.model.embed_tokens.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="frozen input embedding"):
        move_embedding_to_host(model)
    tied = _tiny_llama(tied=True)
    with pytest.raises(ValueError, match="ties its input embedding"):
        move_embedding_to_host(tied)


def test_the_speed_block_moves_the_table_through_prepare_model():
    from qlora.training.config import SpeedConfig
    from qlora.training.fast.levers import prepare_model, remove_layer_levers

    model = _tiny_llama()
    prepare_model(model, SpeedConfig(fp32_upcast=False, checkpoint_layers=0, embedding_on_host=True))
    assert isinstance(model.model.embed_tokens, HostEmbedding)
    remove_layer_levers(model)
    assert isinstance(model.model.embed_tokens, torch.nn.Embedding)
