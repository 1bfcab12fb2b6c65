"""ROME's rank-one update, and the hook that lets the value optimisation run the model as if it were in place."""

from __future__ import annotations

import pytest
import torch

from server.models.arch import arch_for
from server.parametric.deltas import WeightDelta, add_delta_, weight_out_in
from server.parametric.rome import key_direction
from server.parametric.tap import adding_along_key, recording
from tests.tiny import build_tiny_model


def random_second_moment(d: int) -> torch.Tensor:
    samples = torch.randn(4 * d, d)
    return samples.T @ samples / samples.shape[0]  # (d, d), positive definite


def test_the_update_writes_delta_at_the_key_and_moves_uncorrelated_keys_not_at_all() -> None:
    torch.manual_seed(0)
    c = random_second_moment(16)
    key = torch.randn(16)
    direction = key_direction(c, key)
    assert float(direction @ key) == pytest.approx(1.0, abs=1e-5)
    # A key x with xᵀC⁻¹k* = 0 is (up to the small ridge) untouched: the update reads keys along C⁻¹k*.
    other = torch.randn(16)
    c_inv_key = torch.linalg.solve(c, key)
    uncorrelated = other - (other @ c_inv_key) / (key @ c_inv_key) * key
    assert abs(float(direction @ uncorrelated)) < 1e-2 * abs(float(direction @ other))


@pytest.mark.parametrize("model_type", ("llama", "gpt2"))
def test_adding_along_the_key_direction_runs_the_model_as_the_applied_update_does(model_type: str) -> None:
    torch.manual_seed(0)
    model = build_tiny_model(model_type, layers=2)
    arch = arch_for(model.config)
    name = arch.mlp_out.format(1)
    module = model.get_submodule(name)
    ids = torch.randint(4, 60, (2, 7))
    with torch.no_grad(), recording(module) as seen:
        before = model(input_ids=ids).logits
    assert seen.input is not None
    d_in, d_out = seen.input.shape[-1], seen.output.shape[-1]  # type: ignore[union-attr]
    direction = key_direction(random_second_moment(d_in), seen.input[0, 3])
    delta = torch.randn(d_out)

    with torch.no_grad(), adding_along_key(module, direction, delta):
        simulated = model(input_ids=ids).logits
    with torch.no_grad():
        add_delta_(weight_out_in(model, name, arch), WeightDelta("e", name, delta, direction))
        applied = model(input_ids=ids).logits

    assert not torch.allclose(simulated, before, atol=1e-3)
    assert torch.allclose(simulated, applied, atol=1e-4)
