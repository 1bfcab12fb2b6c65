"""Forward hooks on one module: read what goes in and out, or add a vector to what comes out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Recording:
    input: torch.Tensor | None = None  # (batch, seq, d_in) the module's first positional input
    output: torch.Tensor | None = None  # (batch, seq, d_out)


def _first(x: object) -> torch.Tensor:
    """Decoder layers return a tensor or a tuple whose first item is the hidden states."""
    return x[0] if isinstance(x, tuple) else x  # type: ignore[return-value]


@contextmanager
def recording(module: nn.Module) -> Iterator[Recording]:
    """Records the module's input and output of every forward pass inside the block (the last one wins)."""
    found = Recording()

    def hook(_: nn.Module, args: tuple[object, ...], output: object) -> None:
        found.input = _first(args)
        found.output = _first(output)

    handle = module.register_forward_hook(hook)
    try:
        yield found
    finally:
        handle.remove()


@contextmanager
def recording_each(modules: Sequence[nn.Module]) -> Iterator[list[Recording]]:
    """`recording` of several modules at once, in their order: one forward pass reads every layer."""
    with ExitStack() as stack:
        yield [stack.enter_context(recording(m)) for m in modules]


@contextmanager
def adding_to_output(module: nn.Module, positions: torch.Tensor, delta: torch.Tensor) -> Iterator[None]:
    """Adds `delta` (d_out,) to the module's output at one position per row, `positions` (batch,).

    Out of place, so gradients flow to `delta`.
    """

    def hook(_: nn.Module, args: tuple[object, ...], output: object) -> object:
        hidden = _first(output)  # (batch, seq, d_out)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        changed = hidden.index_put((rows, positions), hidden[rows, positions] + delta)
        return (changed, *output[1:]) if isinstance(output, tuple) else changed

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def at_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(batch, seq, d) at one position per row (batch,) → (batch, d)."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]


@contextmanager
def replacing_input(module: nn.Module, positions: torch.Tensor, values: torch.Tensor) -> Iterator[None]:
    """Replaces the module's first input at one position per row, `positions` (batch,), by `values` (batch, d_in).

    Out of place, so gradients flow to `values` (integrated gradients scale an activation this way, kn.py).
    """

    def hook(_: nn.Module, args: tuple[object, ...]) -> tuple[object, ...]:
        hidden = _first(args)  # (batch, seq, d_in)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return (hidden.index_put((rows, positions), values.to(hidden.dtype)), *args[1:])

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()
