"""State that edits add beside a module instead of changing its weight: GRACE's codebook entries today; made
for T-Patcher's neurons, CaliNET's calibration slots and WISE's side memory as well.

An edit's `Addition` is a few named tensors attached to one module under a kind (the method that reads them).
A kind's `StateBuilder` turns the module's additions, in the order they were made, into the `AddedState` a
forward hook applies to the module's output. The state is always rebuilt from the ordered additions, never
patched in place, so the state after a replay or a rollback is exactly the one the remaining additions build
(what a later addition did to an earlier one, such as GRACE's split radii, is recomputed, not remembered).
A module with no additions has no hook: the model is then exactly the unedited one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn
from torch.utils.hooks import RemovableHandle


@dataclass(frozen=True)
class Addition:
    """The state one edit adds beside one module."""

    edit_id: str
    module: str  # the module whose output it changes, e.g. "model.layers.12.mlp.down_proj"
    kind: str  # the method that reads it, e.g. "grace"
    tensors: Mapping[str, torch.Tensor]

    def to_bytes(self) -> bytes:
        return save_tensors({name: t.detach().cpu().contiguous() for name, t in self.tensors.items()})

    @staticmethod
    def from_bytes(edit_id: str, module: str, kind: str, blob: bytes) -> Addition:
        return Addition(edit_id, module, kind, load_tensors(blob))

    def to(self, device: torch.device) -> Addition:
        return Addition(self.edit_id, self.module, self.kind, {n: t.to(device) for n, t in self.tensors.items()})


class AddedState(Protocol):
    def forward(self, inputs: torch.Tensor, output: torch.Tensor) -> tuple[torch.Tensor, set[str]]:
        """The module's output (batch, seq, d_out) changed by this state, given the module's input
        (batch, seq, d_in); and the edits whose state acted on it (reported as the answer's edits)."""
        ...


# A kind's additions to one module, in the order they were made → the state its hook applies.
StateBuilder = Callable[[Sequence[Addition]], AddedState]


class Attachments:
    """The additions attached to a model, their hooks, and which edits acted during a watched block.

    Used on the model thread only, like the weights: hooks change in `attach`, and in `pending` for the
    length of a computation step.
    """

    def __init__(self, model: nn.Module, builders: Mapping[str, StateBuilder]) -> None:
        self._model = model
        self._builders = builders
        self._device = next(model.parameters()).device
        self._additions: tuple[Addition, ...] = ()
        self._handles: list[RemovableHandle] = []
        self._watchers: list[set[str]] = []

    @property
    def additions(self) -> tuple[Addition, ...]:
        return self._additions

    def attach(self, additions: Iterable[Addition]) -> None:
        """Replaces every attached addition with `additions` (in the order they were made) and rebuilds the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._additions = tuple(a.to(self._device) for a in additions)
        groups: dict[tuple[str, str], list[Addition]] = {}  # by (module, kind), in order of first appearance
        for addition in self._additions:
            groups.setdefault((addition.module, addition.kind), []).append(addition)
        for (module, kind), members in groups.items():
            state = self._builders[kind](members)
            self._handles.append(self._model.get_submodule(module).register_forward_hook(self._hook(state)))

    @contextmanager
    def pending(self, additions: Sequence[Addition]) -> Iterator[None]:
        """`additions` attached after the others inside the block, only the others after it."""
        if not additions:  # nothing to rebuild: most steps of most methods
            yield
            return
        attached = self._additions
        self.attach((*attached, *additions))
        try:
            yield
        finally:
            self.attach(attached)

    @contextmanager
    def watching(self) -> Iterator[set[str]]:
        """The ids of the edits whose state acted on any forward pass inside the block."""
        fired: set[str] = set()
        self._watchers.append(fired)
        try:
            yield fired
        finally:
            self._watchers.remove(fired)

    def _hook(self, state: AddedState) -> Callable[[nn.Module, tuple[object, ...], object], torch.Tensor]:
        def hook(_: nn.Module, args: tuple[object, ...], output: object) -> torch.Tensor:
            inputs = args[0]
            assert isinstance(inputs, torch.Tensor) and isinstance(output, torch.Tensor), "a module of tensors"
            changed, fired = state.forward(inputs, output)
            for watcher in self._watchers:
                watcher |= fired
            return changed

        return hook
