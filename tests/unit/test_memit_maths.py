"""MEMIT's mapping of a wanted residual change through a post-MLP norm (Gemma 2 and 3)."""

from __future__ import annotations

import torch
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

from server.parametric.memit import through_norm


def test_through_norm_finds_the_smallest_output_change_that_writes_the_wanted_change() -> None:
    torch.manual_seed(0)
    norm = Gemma3RMSNorm(64)
    with torch.no_grad():
        norm.weight.uniform_(-0.9, 2.0)  # Gemma 3 scales by (1 + weight): some dimensions nearly closed
    outputs = torch.randn(3, 64)  # (n, d)
    reachable = outputs + 0.5 * torch.randn(3, 64)  # outputs the layer could produce instead
    with torch.no_grad():
        wanted = norm(reachable) - norm(outputs)  # (n, d), writable by construction

    change = through_norm(norm, outputs, wanted)

    with torch.no_grad():
        written = norm(outputs + change) - norm(outputs)
    assert torch.allclose(written, wanted, atol=0.05 * float(wanted.abs().max()))
    # A norm ignores scale: any multiple of `reachable` writes the same change. The smallest change
    # is no larger than the one to `reachable` itself; a huge one would leak into every other key.
    assert bool((change.norm(dim=-1) <= (reachable - outputs).norm(dim=-1) * 1.05).all())
