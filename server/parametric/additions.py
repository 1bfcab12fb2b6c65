"""State that edits add beside a module instead of changing its weight: GRACE's codebook entries, T-Patcher's
neurons, CaliNET's calibration slots and WISE's side memory.

An edit's `Addition` is a few named tensors attached to one module under a kind (the method that reads them).
A kind's `StateBuilder` turns the module's additions, in the order they were made, into the `AddedState` a
forward hook applies to the module's output. The state is always rebuilt from the ordered additions, never
patched in place, so the state after a replay or a rollback is exactly the one the remaining additions build
(what a later addition did to an earlier one, such as GRACE's split radii, is recomputed, not remembered).
A module with no additions has no hook: the model is then exactly the unedited one.

A state also says where it acted (`Act`: row, position, edit), so whoever watches (`Attachments.watching`) learns
which edits changed which row of a batch: an answer reports the edit that changed it, and never another row's.
Positions the forward call's attention mask marks as padding are not counted: a pad's hidden state means nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

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


class Act(NamedTuple):
    """An edit's state changed the output at one position of one row of a forward call."""

    row: int
    position: int  # within the call's input (a generation step's call has one)
    edit_id: str


@dataclass
class Acted:
    """Which edits' state acted on each row of the forward calls watched, in the order each first acted there.

    A request answered alone (the model worker runs one at a time) is row 0 of every call; a batch that gives each
    request its own row reads `of_row(i)`, and no row sees another's edits.
    """

    rows: dict[int, list[str]] = field(default_factory=dict)

    def add(self, act: Act) -> None:
        seen = self.rows.setdefault(act.row, [])
        if act.edit_id not in seen:
            seen.append(act.edit_id)

    def of_row(self, row: int) -> tuple[str, ...]:
        return tuple(self.rows.get(row, ()))

    def edit_ids(self) -> set[str]:
        """The edits that acted on any row."""
        return {e for edits in self.rows.values() for e in edits}


class AddedState(Protocol):
    def forward(self, inputs: torch.Tensor, output: torch.Tensor) -> tuple[torch.Tensor, list[Act]]:
        """The module's output (batch, seq, d_out) changed by this state, given the module's input
        (batch, seq, d_in); and where each edit's state acted on it (reported as the answer's edit)."""
        ...


# A kind's additions to one module, in the order they were made → the state its hook applies.
StateBuilder = Callable[[Sequence[Addition]], AddedState]


class Attachments:
    """The additions attached to a model, their hooks, and which edits acted during a watched block.

    Used on the model thread only, like the weights: hooks change in `attach`, and in `pending` for the
    length of a computation step. While anything is attached, a pre-hook on the model keeps the current call's
    attention mask, so padded positions are not reported as acted on.
    """

    def __init__(self, model: nn.Module, builders: Mapping[str, StateBuilder]) -> None:
        self._model = model
        self._builders = builders
        self._device = next(model.parameters()).device
        self._additions: tuple[Addition, ...] = ()
        self._handles: list[RemovableHandle] = []
        self._watchers: list[Acted] = []
        self._mask: torch.Tensor | None = None  # the model call's attention mask, (batch, past + seq), if it has one

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
        if self._handles:
            self._handles.append(self._model.register_forward_pre_hook(self._keep_mask, with_kwargs=True))
            self._handles.append(self._model.register_forward_hook(self._drop_mask, always_call=True))

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
    def watching(self) -> Iterator[Acted]:
        """Which edits' state acted on which rows of the forward calls inside the block."""
        acted = Acted()
        self._watchers.append(acted)
        try:
            yield acted
        finally:
            self._watchers.remove(acted)

    def _keep_mask(self, _: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        self._mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None

    def _drop_mask(self, *_: object) -> None:
        self._mask = None  # a submodule called on its own later must not read this call's mask

    def _real(self, act: Act, batch: int, seq: int) -> bool:
        """False where the call's attention mask marks the act's position as padding."""
        mask = self._mask
        if mask is None or mask.shape[0] != batch or mask.shape[1] < seq:  # no mask, or not this call's
            return True
        return bool(mask[act.row, mask.shape[1] - seq + act.position])

    def _hook(self, state: AddedState) -> Callable[[nn.Module, tuple[object, ...], object], torch.Tensor]:
        def hook(_: nn.Module, args: tuple[object, ...], output: object) -> torch.Tensor:
            inputs = args[0]
            assert isinstance(inputs, torch.Tensor) and isinstance(output, torch.Tensor), "a module of tensors"
            changed, acts = state.forward(inputs, output)
            if self._watchers:
                real = [a for a in acts if self._real(a, inputs.shape[0], inputs.shape[1])]
                for watcher in self._watchers:
                    for act in real:
                        watcher.add(act)
            return changed

        return hook
