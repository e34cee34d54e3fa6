"""FrozenCasts: casts made once, made again when their weight changes, and the same products as autocast's own."""

import pytest
import torch
from torch.func import functional_call
from transformers import LlamaConfig, LlamaForCausalLM

from paser_hf.recovery.frozen_casts import FrozenCasts


def cpu_bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_a_frozen_weight_is_cast_once_and_again_after_an_in_place_change():
    casts = FrozenCasts()
    weight = torch.nn.Parameter(torch.randn(5, 3), requires_grad=False)
    with cpu_bf16():
        first = casts(weight)
        assert first.dtype == torch.bfloat16 and torch.equal(first, weight.to(torch.bfloat16))
        assert casts(weight) is first
        with torch.no_grad():
            weight.mul_(2.0)
        second = casts(weight)
    assert second is not first and torch.equal(second, weight.to(torch.bfloat16))


def test_without_keep_nothing_is_kept():
    casts = FrozenCasts(keep=False)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4)).requires_grad_(False)
    with cpu_bf16():
        assert casts(model[0].weight) is not casts(model[0].weight)
        assert casts(model[0].weight).dtype == torch.bfloat16 and casts.linear_weights(model) == {}


def test_what_autocast_would_not_cast_is_returned_unchanged():
    casts = FrozenCasts()
    trainable = torch.nn.Parameter(torch.randn(4, 4))
    frozen = torch.nn.Parameter(torch.randn(4, 4), requires_grad=False)
    half = torch.randn(4, 4, dtype=torch.bfloat16)
    assert casts(frozen) is frozen  # autocast off
    with cpu_bf16():
        assert casts(trainable) is trainable and casts(half) is half and casts(None) is None
        plain = torch.randn(4, 4)  # not a parameter: cast at each call, never kept
        assert casts(plain).dtype == torch.bfloat16 and casts(plain) is not casts(plain)


@pytest.mark.parametrize("tied", [True, False])
def test_a_forward_with_the_cast_linear_weights_equals_autocasts(tied):
    """Autocast rounds both factors of each product to bfloat16, so weights rounded once give identical outputs; the
    tied input embeddings stay float32, so the residual stream is the same too."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    assert (model.lm_head.weight is model.get_input_embeddings().weight) == tied
    input_ids = torch.randint(0, model.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    casts = FrozenCasts()
    with torch.no_grad(), cpu_bf16():
        weights = casts.linear_weights(model)
        expected = model(input_ids=input_ids, output_hidden_states=True)
        got = functional_call(model, weights, kwargs={"input_ids": input_ids, "output_hidden_states": True},
                              tie_weights=False)
    linear_names = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(weights) == linear_names and all(w.dtype == torch.bfloat16 for w in weights.values())
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert torch.equal(got.logits, expected.logits)
    assert all(torch.equal(a, b) for a, b in zip(got.hidden_states, expected.hidden_states, strict=True))
