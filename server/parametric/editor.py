"""The one place that writes the served model: computes changes with a registered method (weight deltas, or
state attached beside a module), records them in the ledger, applies them, replays them at start and rolls
single edits back.

Methods run as generators of small steps; the servicer runs each step on the model thread, so
requests served between steps see a whole model, and the model only changes in `commit` and `rollback`,
which also run on the model thread.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.errors import FailedPrecondition, InvalidArgument
from server.models.arch import ArchTemplate, num_layers
from server.parametric.additions import Acted, Addition, Attachments
from server.parametric.deltas import WeightDelta, add_delta_, weight_out_in
from server.parametric.export import export_model
from server.parametric.kn import AttributionReport, KnOptions, attribute, top_neurons
from server.parametric.layers import layer_defaults
from server.parametric.ledger import BakedEdit, Ledger
from server.parametric.method import Change, MethodContext, MethodRequest
from server.parametric.prefixes import context_prefixes
from server.parametric.prompts import EditPrompts, answer_token_ids, edit_prompts
from server.parametric.registry import ADDED_STATE, METHODS
from server.parametric.stats_cache import StatisticsCache
from server.parametric.targets import Progress, finish
from server.parametric.wordings import Wordings
from server.types import Edit

__all__ = ["METHODS", "MethodRequest", "ParametricEditor", "ParametricSettings"]

log = logging.getLogger(__name__)

# A delta larger than this many times the Frobenius norm of the weight it changes is refused before commit: it
# would overwrite the layer rather than edit a fact. At default options on the taught tiny test models the largest
# measured was 4.3x (ROME; MEMIT 1.5x, AlphaEdit 1.8x, FT 0.004x), but MEMIT with a small λ on a tiny Gemma 3 layer
# (whose MLP writes through a norm) legitimately reached 170x; edits of real models are far smaller relative to
# their weights. 1000x leaves room for those and still catches runaway optimisation (lr 1e30 gives ~1e30x).
MAX_RELATIVE_DELTA = 1000.0


@dataclass(frozen=True)
class ParametricSettings:
    cache_dir: Path  # C per layer is cached here
    text_files: tuple[Path, ...]  # offline text for C besides the model's own samples
    stats_tokens: int  # tokens C is estimated from
    model_samples: int  # texts of 64 tokens the model samples itself for C
    prefixes: int = 5  # generated context prefixes keys and values are averaged over (besides none)
    wordings: Wordings = field(default_factory=Wordings)  # where other wordings of an edit's prompt come from
    other_wordings: int = 4  # how many of them its value is also optimised on


class ParametricEditor:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        arch: ArchTemplate,
        ledger: Ledger,
        model_id: str,
        settings: ParametricSettings,
        frozen: str | None = None,
    ) -> None:
        """`frozen`: why the weights may not change (e.g. quantised weights); compute, commit, rollback and export
        then raise FailedPrecondition with it, while `replay` still rebuilds what the ledger holds."""
        self._frozen = frozen
        self._model = model
        self._tokenizer = tokenizer
        self._arch = arch
        self._ledger = ledger
        self._settings = settings
        self._model_id = model_id
        self._n_layers = num_layers(model.config)
        self.defaults = layer_defaults(model.config)
        self._statistics = StatisticsCache(model, tokenizer, arch, model_id, settings.cache_dir, settings.text_files,
                                           settings.stats_tokens, settings.model_samples)
        self._originals: dict[str, torch.Tensor] = {}  # module → its weight before any delta, (out, in)
        self._attachments = Attachments(model, ADDED_STATE)
        self._prefixes: tuple[str, ...] | None = None
        self._lock = threading.Lock()
        self._baked = {(b.namespace, b.edit_id): b for b in ledger.baked_edits()}

    # --- state ---------------------------------------------------------------------------

    def baked(self, namespace: str, edit_id: str) -> BakedEdit | None:
        with self._lock:
            return self._baked.get((namespace, edit_id))

    def baked_edits(self, namespace: str | None = None) -> list[BakedEdit]:
        return self._ledger.baked_edits(namespace)

    def is_baked(self, edit: Edit) -> bool:
        return self.baked(edit.namespace, edit.id) is not None

    def hidden_from_gate(self, edit: Edit) -> bool:
        baked = self.baked(edit.namespace, edit.id)
        return baked is not None and not baked.in_gate

    def close(self) -> None:
        self._ledger.close()

    def replay(self) -> int:
        """Adds every recorded delta in order and attaches every recorded addition (at start, on the freshly loaded
        model); returns how many changes."""
        count = 0
        for delta in self._ledger.deltas():
            self._add(delta)
            count += 1
        self._attachments.attach(self._ledger.additions())
        return count + len(self._attachments.additions)

    @property
    def additions(self) -> tuple[Addition, ...]:
        """The state attached beside the weights, in the order it was made (model thread)."""
        return self._attachments.additions

    @contextmanager
    def watching(self) -> Iterator[Acted]:
        """Which edits' attached state acted on which rows of the model's forward calls inside the block (model
        thread): the edits that answered, whatever route the gate chose."""
        with self._attachments.watching() as acted:
            yield acted

    # --- computing deltas (steps run on the model thread) ---------------------------------

    def compute(
        self, request: MethodRequest, edits: Sequence[Edit], earlier: Sequence[Edit] = ()
    ) -> Generator[Progress, None, Sequence[Change]]:
        """The changes that write `edits` into the model, one step per yield; the model is not changed. `earlier`:
        the baked edits' records from the edit store, in the order applied, for a method that `reads_earlier`."""
        self._check(request, edits)
        method = METHODS[request.method]
        if self._prefixes is None:
            yield Progress("prefixes", 0, 1)
            self._prefixes = context_prefixes(self._model, self._tokenizer, self._settings.prefixes, new_tokens=5)
        context = MethodContext(
            self._model, self._tokenizer, self._arch, method.edited_layers(request, self.defaults), self._statistics,
            {edit.id: self._edit_prompts(edit) for edit in edits}, self._attachments, self._model_id, tuple(earlier),
        )
        return (yield from method.compute(context, request, edits))

    def _edit_prompts(self, edit: Edit) -> EditPrompts:
        assert self._prefixes is not None
        others = self._settings.wordings.others(edit.prompt, edit.subject, self._settings.other_wordings)
        return edit_prompts(edit.prompt, self._prefixes, others)

    # --- changing weights (model thread only) ----------------------------------------------

    def commit(self, namespace: str, request: MethodRequest, changes: Sequence[Change]) -> int:
        """Records the changes durably, then adds the deltas to the weights and attaches the additions; returns
        the application id."""
        self._check_writable()
        for change in changes:  # a concurrent call may have applied the same edit meanwhile
            if self.baked(namespace, change.edit_id) is not None:
                raise FailedPrecondition(f"edit {change.edit_id} is already in the weights; roll it back first")
        deltas = [c for c in changes if isinstance(c, WeightDelta)]
        additions = [c for c in changes if isinstance(c, Addition)]
        for delta in deltas:  # the weights every namespace shares, and every restart's replay, depend on this
            self._check_size(delta)
        for addition in additions:
            self._check_finite(addition)
        options = {k: v for k, v in asdict(request).items() if k not in ("method", "in_gate")}
        application = self._ledger.record(namespace, request.method, options, deltas, request.in_gate, additions)
        for delta in deltas:
            self._add(delta)
        if additions:
            self._attachments.attach((*self._attachments.additions, *additions))
        self._refresh(namespace, {c.edit_id for c in changes})
        return application

    def rollback(self, namespace: str, edit_id: str) -> BakedEdit:
        """Removes one edit's changes: its weights are rebuilt from the originals and the remaining deltas, and the
        attached state from the remaining additions."""
        self._check_writable()
        removed = self._ledger.remove(namespace, edit_id)
        if any(a.edit_id == edit_id for a in self._attachments.additions):
            self._attachments.attach(self._ledger.additions())
        touched = {m for m in removed.modules if m in self._originals}  # modules some delta changed
        for module in touched:
            weight_out_in(self._model, module, self._arch).copy_(self._originals[module])
        for delta in self._ledger.deltas():
            if delta.module in touched:
                add_delta_(weight_out_in(self._model, delta.module, self._arch), delta)
        self._refresh(namespace, {edit_id})
        return removed

    def export(self, path: Path) -> None:
        """Writes the served (edited) model and its tokenizer as a Hugging Face directory."""
        self._check_writable()
        if attached := self._attachments.additions:
            kinds = ", ".join(sorted({a.kind for a in attached}))
            raise FailedPrecondition(
                f"{len(attached)} edits are held as state beside the weights ({kinds}), which a Hugging Face "
                "directory cannot carry; roll them back to export"
            )
        export_model(self._model, self._tokenizer, path)

    # --- reading the model (model thread) --------------------------------------------------

    def attribute(
        self, prompt: str, answer: str, layers: Sequence[int], top: int, steps: int | None
    ) -> AttributionReport:
        """The `top` neurons per layer that integrated gradients credit with the answer's first token after the
        prompt (KN's attribution; `layers` empty: KN's default layers). Changes nothing."""
        for layer in layers:
            if not 0 <= layer < self._n_layers:
                raise InvalidArgument(f"layer {layer} is out of range: this model has layers 0 to {self._n_layers - 1}")
        chosen = tuple(layers) or self.defaults.kn
        target = answer_token_ids(self._tokenizer, answer)[0]
        found = finish(attribute(self._model, self._tokenizer, self._arch, prompt, target, chosen,
                                 KnOptions().steps if steps is None else steps))
        return AttributionReport(str(self._tokenizer.convert_ids_to_tokens(target)), found.probability,
                                 top_neurons(found, self._arch, top))

    def _add(self, delta: WeightDelta) -> None:
        weight = weight_out_in(self._model, delta.module, self._arch)
        self._originals.setdefault(delta.module, weight.clone())
        add_delta_(weight, delta)

    def _refresh(self, namespace: str, edit_ids: set[str]) -> None:
        with self._lock:
            for edit_id in edit_ids:
                baked = self._ledger.get(namespace, edit_id)
                if baked is None:
                    self._baked.pop((namespace, edit_id), None)
                else:
                    self._baked[(namespace, edit_id)] = baked

    # --- checks ----------------------------------------------------------------------------

    def _check_size(self, delta: WeightDelta) -> None:
        weight = weight_out_in(self._model, delta.module, self._arch)  # (out, in)
        norm = float(delta.u.norm() if delta.v is None else delta.u.norm() * delta.v.norm())  # ‖u vᵀ‖ = ‖u‖ ‖v‖
        relative = norm / max(float(weight.norm()), 1e-12)
        if not math.isfinite(relative):
            raise InvalidArgument(
                f"the computed change to {delta.module} for edit {delta.edit_id} is not finite; nothing was written "
                "(lower lr or steps, or use the defaults)"
            )
        if relative > MAX_RELATIVE_DELTA:
            raise InvalidArgument(
                f"the computed change to {delta.module} for edit {delta.edit_id} is {relative:.3g} times the weight's "
                f"norm, over the limit of {MAX_RELATIVE_DELTA:g}; nothing was written (lower lr, norm_constraint or "
                "steps, or use the defaults)"
            )

    def _check_finite(self, addition: Addition) -> None:
        for name, tensor in addition.tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise InvalidArgument(
                    f"the computed {addition.kind} {name} for edit {addition.edit_id} is not finite; nothing was "
                    "written (lower lr or steps, or use the defaults)"
                )

    def _check_writable(self) -> None:
        if self._frozen is not None:
            raise FailedPrecondition(self._frozen)

    def _check(self, request: MethodRequest, edits: Sequence[Edit]) -> None:
        self._check_writable()
        if request.method not in METHODS:
            raise InvalidArgument(f"method must be one of {', '.join(METHODS)}, got {request.method!r}")
        if not edits:
            raise InvalidArgument("give at least one edit id to apply")
        for layer in (*request.layers, *(() if request.layer is None else (request.layer,))):
            if not 0 <= layer < self._n_layers:
                raise InvalidArgument(f"layer {layer} is out of range: this model has layers 0 to {self._n_layers - 1}")
        METHODS[request.method].check(request)
        for edit in edits:
            if self.baked(edit.namespace, edit.id) is not None:
                raise FailedPrecondition(f"edit {edit.id} is already in the weights; roll it back first")
