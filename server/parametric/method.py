"""What a parametric method is to the editor: a name, default layers, a check of the request, and a
stepwise computation of changes from a context. Nothing here knows a method by name.

A method returns changes and never writes the model: `WeightDelta` records (added to weights) or `Addition`
records (state attached beside a module, additions.py). The editor records and applies them, so replay and
rollback are the same for every method (changes are applied in order, or left out).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, TypeVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.models.arch import ArchTemplate
from server.parametric.additions import Addition, Attachments
from server.parametric.deltas import WeightDelta, temporarily_applied
from server.parametric.layers import LayerDefaults
from server.parametric.prompts import EditPrompts
from server.parametric.targets import Progress, ValueOptions
from server.types import Edit

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
Change = WeightDelta | Addition
C = TypeVar("C", bound=Change)
Options = TypeVar("Options", bound="DataclassInstance")


@dataclass(frozen=True)
class MethodRequest:
    """A method and its options as a caller gives them; None takes the model's default."""

    method: str
    layer: int | None = None  # ROME, FT
    layers: tuple[int, ...] = ()  # MEMIT, AlphaEdit
    steps: int | None = None
    lr: float | None = None
    mom2_weight: float | None = None  # MEMIT's λ
    norm_constraint: float | None = None  # FT's ε
    null_space_cutoff: float | None = None  # AlphaEdit's eigenvalue cut-off, relative to the largest
    deferral_radius: float | None = None  # GRACE's ε, as a share of the key's norm
    fire_at: str | None = None  # T-Patcher, CaliNET: "last" or "subject" (tpatcher.FIRE_AT)
    memory_subjects: int | None = None  # T-Patcher, CaliNET: other subjects in the memory
    own_subject_questions: int | None = None  # T-Patcher, CaliNET: other questions about the edit's subject
    own_subject_tokens: int | None = None  # ... and the tokens continuing each of those prompts at least
    continuation_tokens: int | None = None  # ROME, MEMIT, AlphaEdit: the unedited continuation held after the answer
    continuation_factor: float | None = None  # ... and the weight of that term (targets.ValueOptions)
    in_gate: bool = True  # baked edits stay in the gate's memory (answered on the parametric route)


class SecondMoments(Protocol):
    def second_moment(self, layer: int) -> Generator[Progress, None, torch.Tensor]:
        """C = E[k kᵀ] of the layer's down-projection inputs, (d_in, d_in); may take steps to compute."""
        ...


@dataclass(frozen=True)
class MethodContext:
    """Everything a method computes from; the model's weights are as served."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    arch: ArchTemplate
    layers: tuple[int, ...]  # what `EditMethod.edited_layers` chose, checked to be in range
    statistics: SecondMoments
    prompts: Mapping[str, EditPrompts]  # by edit id
    additions: Attachments  # the state attached beside modules, as served
    model_id: str  # the served weights' fingerprint (precision appended when not fp32): trained methods check it
    earlier: Sequence[Edit] = ()  # the baked edits, in the order applied, for a method that `reads_earlier`


class EditMethod(Protocol):
    name: str  # recorded in the ledger with each application: never rename one
    batched: bool  # writes all edits at once over `request.layers`; else one at a time at `request.layer`
    reads_earlier: bool  # computes from `MethodContext.earlier`: only then does the service fetch those edits

    def edited_layers(self, request: MethodRequest, defaults: LayerDefaults) -> tuple[int, ...]:
        """The layers the request names, or this method's default for the model."""
        ...

    def check(self, request: MethodRequest) -> None:
        """Raises InvalidArgument for options this method cannot take (layer ranges are checked by the editor)."""
        ...

    def compute(
        self, context: MethodContext, request: MethodRequest, edits: Sequence[Edit]
    ) -> Generator[Progress, None, Sequence[Change]]:
        """The changes that write `edits`, one step per yield, the model unchanged between steps."""
        ...


def with_request(options: Options, request: MethodRequest, *fields: str) -> Options:
    """`options` (a dataclass) with each of `fields` the request sets (not None) taken from the request."""
    changes = {f: getattr(request, f) for f in fields if getattr(request, f) is not None}
    return replace(options, **changes)


def value_options(request: MethodRequest) -> ValueOptions:
    """The value optimisation's options (ROME, MEMIT, AlphaEdit) with the request's changes."""
    return with_request(ValueOptions(), request, "steps", "lr", "continuation_tokens", "continuation_factor")


def layer_moments(context: MethodContext) -> Generator[Progress, None, dict[int, torch.Tensor]]:
    """C of every edited layer, (d_in, d_in) each, computed in the layers' order where not cached."""
    moments = {}
    for layer in context.layers:
        moments[layer] = yield from context.statistics.second_moment(layer)
    return moments


def one_at_a_time(
    context: MethodContext,
    edits: Sequence[Edit],
    compute_one: Callable[[Edit], Generator[Progress, None, C]],
) -> Generator[Progress, None, list[C]]:
    """One change per edit, each computed on the model with the earlier edits' changes in place."""
    changes: list[C] = []
    for edit in edits:
        changes.append((yield from on_current(context, compute_one(edit), changes)))
    return changes


def on_current(
    context: MethodContext, steps: Generator[Progress, None, T], pending: Sequence[Change]
) -> Generator[Progress, None, T]:
    """Runs each step with `pending` temporarily in the model; between steps the model is as served."""
    deltas = [c for c in pending if isinstance(c, WeightDelta)]
    additions = [c for c in pending if isinstance(c, Addition)]
    while True:
        with temporarily_applied(context.model, context.arch, deltas), context.additions.pending(additions):
            try:
                progress = next(steps)
            except StopIteration as done:
                return done.value
        yield progress
