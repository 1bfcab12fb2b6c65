"""server/generators/output_head.py: greedy tokens from the int8 copy's candidates equal the float layer's argmax,
and follow the weights when they change."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from server.generators.output_head import OutputHead
from tests.tiny import build_tiny_model, seeded_init, tiny_config


def wide_model(model_type: str = "llama") -> torch.nn.Module:
    """A tiny body with a 4,000-token output layer, so that the int8 copy has near-ties to get wrong."""
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, vocab_size=4000), dtype=torch.float32)
    seeded_init(model, seed=3)
    return model.eval()


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
def test_greedy_equals_the_float_layers_argmax(model_type: str) -> None:
    model = wide_model(model_type)
    head = OutputHead(model)  # type: ignore[arg-type]
    hidden = torch.randn(256, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = head.logits(hidden)
        assert torch.equal(head.greedy(hidden), full.argmax(dim=-1))


def test_logits_are_the_models_own_with_gemmas_softcap() -> None:
    model = wide_model("gemma3_text")
    model.config.final_logit_softcapping = 2.0
    ids = torch.tensor([[2, 5, 9, 11]])
    with torch.inference_mode():
        expected = model(input_ids=ids).logits[0, -1]
        hidden = model.base_model(input_ids=ids).last_hidden_state[0, -1:]
        got = OutputHead(model).logits(hidden)[0]  # type: ignore[arg-type]
    assert torch.allclose(got, expected, atol=1e-5) and float(got.abs().max()) <= 2.0


def test_the_int8_copy_follows_a_change_of_the_float_weights() -> None:
    model = wide_model()
    head = OutputHead(model)  # type: ignore[arg-type]
    hidden = torch.randn(4, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = head.greedy(hidden)
    target = (int(before[0]) + 1) % 4000
    with torch.no_grad():  # an edit written into the output layer in place: the token must follow it
        model.get_output_embeddings().weight[target] = hidden[0] * 10
    with torch.inference_mode():
        assert int(head.greedy(hidden)[0]) == target


def test_an_output_layer_that_is_not_a_float_linear_is_refused() -> None:
    model = build_tiny_model()
    model.lm_head = torch.nn.Identity()  # type: ignore[assignment]
    with pytest.raises(TypeError, match="not a float nn.Linear"):
        OutputHead(model)  # type: ignore[arg-type]
