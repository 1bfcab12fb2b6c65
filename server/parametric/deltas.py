"""Weight deltas as records, and the one way they are added to weights.

A delta is rank-one (u vᵀ, from ROME and MEMIT) or dense (from fine-tuning), always in the
(out, in) orientation of `nn.Linear`; GPT-2's Conv1D stores (in, out) and gets the transpose.
Deltas are added one at a time in a fixed order with element-wise operations only (no sums
whose order could change with the thread count), so replaying the same deltas onto the same
original weights gives bit-identical tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from server.models.arch import ArchTemplate


@dataclass(frozen=True)
class WeightDelta:
    """The change one edit makes to one module's weight."""

    edit_id: str
    module: str  # e.g. "model.layers.6.mlp.down_proj"
    u: torch.Tensor  # rank-one: (out,); dense: (out, in)
    v: torch.Tensor | None = None  # rank-one: (in,); dense: None

    @property
    def dense(self) -> bool:
        return self.v is None

    def to_bytes(self) -> bytes:
        tensors = {"u": self.u.contiguous()} | ({} if self.v is None else {"v": self.v.contiguous()})
        return save_tensors(tensors)

    @staticmethod
    def from_bytes(edit_id: str, module: str, blob: bytes) -> WeightDelta:
        tensors = load_tensors(blob)
        return WeightDelta(edit_id, module, tensors["u"], tensors.get("v"))


def weight_out_in(model: nn.Module, module: str, arch: ArchTemplate) -> torch.Tensor:
    """The module's weight as an (out, in) view: writes to it change the model."""
    weight: torch.Tensor = model.get_submodule(module).weight  # type: ignore[assignment]
    return weight.data if arch.out_features_first else weight.data.T


def add_delta_(weight: torch.Tensor, delta: WeightDelta) -> None:
    """weight (out, in) += the delta, in place. A weight narrower than fp32 (a bf16 server) is summed in fp32 and
    rounded once: the delta itself never passes through the narrow type."""
    total = weight if weight.dtype in (torch.float32, torch.float64) else weight.float()
    if delta.v is None:
        total.add_(delta.u.to(total.dtype))
    else:
        total.addr_(delta.u.to(total.dtype), delta.v.to(total.dtype))
    if total is not weight:
        weight.copy_(total)


@contextmanager
def temporarily_applied(model: nn.Module, arch: ArchTemplate, deltas: Iterable[WeightDelta]) -> Iterator[None]:
    """The deltas added inside the block, the exact original tensors back after it.

    Lets a method compute later steps on the partly edited model while other requests, run between
    steps, see the weights as they were.
    """
    deltas = list(deltas)
    saved = {d.module: weight_out_in(model, d.module, arch).clone() for d in deltas}
    try:
        for delta in deltas:
            add_delta_(weight_out_in(model, delta.module, arch), delta)
        yield
    finally:
        for module, original in saved.items():
            weight_out_in(model, module, arch).copy_(original)
