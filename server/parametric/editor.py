"""The one place that writes the served model's weights: computes deltas with a method, records them
in the ledger, adds them, replays them at start, rolls single edits back and exports the model.

Methods run as generators of small steps; the servicer runs each step on the model thread, so
requests served between steps see whole weights, and weights only change in `commit` and `rollback`,
which also run on the model thread.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.errors import FailedPrecondition, InvalidArgument
from server.models.arch import ArchTemplate, num_layers
from server.parametric import stats
from server.parametric.deltas import WeightDelta, add_delta_, temporarily_applied, weight_out_in
from server.parametric.ft import FtOptions, fine_tune
from server.parametric.ledger import BakedEdit, Ledger
from server.parametric.memit import MemitOptions, memit
from server.parametric.prefixes import context_prefixes
from server.parametric.prompts import EditPrompts, edit_prompts
from server.parametric.rome import rome
from server.parametric.targets import Progress, ValueOptions
from server.parametric.wordings import Wordings
from server.types import Edit

log = logging.getLogger(__name__)
T = TypeVar("T")

METHODS = ("rome", "memit", "ft")


@dataclass(frozen=True)
class MethodRequest:
    """A method and its options as a caller gives them; None takes the model's default."""

    method: str
    layer: int | None = None  # ROME, FT
    layers: tuple[int, ...] = ()  # MEMIT
    steps: int | None = None
    lr: float | None = None
    mom2_weight: float | None = None  # MEMIT's λ
    norm_constraint: float | None = None  # FT's ε
    in_gate: bool = True  # baked edits stay in the gate's memory (answered on the parametric route)


@dataclass(frozen=True)
class ParametricSettings:
    cache_dir: Path  # C per layer is cached here
    text_files: tuple[Path, ...]  # offline text for C besides the model's own samples
    stats_tokens: int  # tokens C is estimated from
    model_samples: int  # texts of 64 tokens the model samples itself for C
    prefixes: int = 5  # generated context prefixes keys and values are averaged over (besides none)
    wordings: Wordings = field(default_factory=Wordings)  # where other wordings of an edit's prompt come from
    other_wordings: int = 4  # how many of them its value is also optimised on


@dataclass(frozen=True)
class LayerDefaults:
    rome: int
    memit: tuple[int, ...]
    ft: int


# Measured for Gemma-3-270M (docs/BENCHMARKS.md, "Parametric editing"); other models get `heuristic_layers`.
MEASURED_LAYERS: dict[tuple[str, int, int], LayerDefaults] = {
    ("gemma3_text", 18, 640): LayerDefaults(rome=12, memit=(8, 9, 10, 11, 12), ft=12),
}


def heuristic_layers(n_layers: int) -> LayerDefaults:
    """ROME's finding, early-middle MLPs recall facts: a third of the way up, MEMIT on the five ending there."""
    middle = max(0, n_layers // 3)
    return LayerDefaults(middle, tuple(range(max(0, middle - 4), middle + 1)), middle)


class ParametricEditor:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        arch: ArchTemplate,
        ledger: Ledger,
        model_id: str,
        settings: ParametricSettings,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._arch = arch
        self._ledger = ledger
        self._model_id = model_id
        self._settings = settings
        config = model.config
        self._n_layers = num_layers(config)
        self.defaults = MEASURED_LAYERS.get(
            (str(config.model_type), self._n_layers, int(config.hidden_size)), heuristic_layers(self._n_layers)
        )
        self._originals: dict[str, torch.Tensor] = {}  # module → its weight before any delta, (out, in)
        self._second_moments: dict[int, torch.Tensor] = {}
        self._prefixes: tuple[str, ...] | None = None
        self._texts: list[str] | None = None
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
        """Adds every recorded delta in order (at start, on the freshly loaded weights); returns how many."""
        count = 0
        for delta in self._ledger.deltas():
            self._add(delta)
            count += 1
        return count

    # --- computing deltas (steps run on the model thread) ---------------------------------

    def compute(self, request: MethodRequest, edits: Sequence[Edit]) -> Generator[Progress, None, list[WeightDelta]]:
        """The deltas that write `edits` into the weights, one step per yield; weights are not changed.

        ROME and FT edit one at a time, each computed on the model with the earlier ones in place.
        """
        self._check(request, edits)
        if self._prefixes is None:
            yield Progress("prefixes", 0, 1)
            self._prefixes = context_prefixes(self._model, self._tokenizer, self._settings.prefixes, new_tokens=5)
        prompts = {edit.id: self._edit_prompts(edit) for edit in edits}
        if request.method == "memit":
            options = MemitOptions(
                layers=request.layers or self.defaults.memit, value=self._value_options(request),
                **({} if request.mom2_weight is None else {"mom2_weight": request.mom2_weight}),
            )
            moments = {}
            for layer in options.layers:
                moments[layer] = yield from self._second_moment(layer)
            with_memit = yield from self._on_current(
                memit(self._model, self._tokenizer, self._arch, edits, moments, prompts, options), []
            )
            return with_memit
        deltas: list[WeightDelta] = []
        layer = self.defaults.rome if request.method == "rome" else self.defaults.ft
        layer = request.layer if request.layer is not None else layer
        second_moment = (yield from self._second_moment(layer)) if request.method == "rome" else None
        for edit in edits:
            if second_moment is not None:
                steps = rome(self._model, self._tokenizer, self._arch, edit, layer, second_moment, prompts[edit.id],
                             self._value_options(request))
            else:
                steps = fine_tune(self._model, self._tokenizer, self._arch, edit, self._ft_options(request, layer))
            deltas.append((yield from self._on_current(steps, deltas)))
        return deltas

    def _edit_prompts(self, edit: Edit) -> EditPrompts:
        assert self._prefixes is not None
        others = self._settings.wordings.others(edit.prompt, edit.subject, self._settings.other_wordings)
        return edit_prompts(edit.prompt, self._prefixes, others)

    def _on_current(
        self, steps: Generator[Progress, None, T], pending: list[WeightDelta]
    ) -> Generator[Progress, None, T]:
        """Runs each step with the deltas computed so far temporarily in the weights."""
        while True:
            with temporarily_applied(self._model, self._arch, pending):
                try:
                    progress = next(steps)
                except StopIteration as done:
                    return done.value
            yield progress

    def _second_moment(self, layer: int) -> Generator[Progress, None, torch.Tensor]:
        if layer in self._second_moments:
            return self._second_moments[layer]
        sources = tuple(str(p) for p in self._settings.text_files) + (f"model-samples:{self._settings.model_samples}",)
        path = self._settings.cache_dir / "parametric" / stats.cache_key(
            self._model_id, layer, sources, self._settings.stats_tokens
        )
        if path.exists():
            moment = load_file(path)["C"]
        else:
            log.info("computing the second moment of layer %d's keys from %d tokens (once; cached at %s)",
                     layer, self._settings.stats_tokens, path)
            yield Progress("statistics", 0, self._settings.stats_tokens)
            moment = (yield from stats.second_moments(
                self._model, self._tokenizer, self._arch, [layer], self._stats_texts(), self._settings.stats_tokens
            ))[layer]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({"C": moment.contiguous()}, str(tmp))
            os.replace(tmp, path)
        self._second_moments[layer] = moment
        return moment

    def _stats_texts(self) -> list[str]:
        """The model's own samples and the text files' lines, shuffled; made once per process."""
        if self._texts is None:
            texts = stats.sample_texts(self._model, self._tokenizer, self._settings.model_samples)
            texts += stats.text_lines(self._settings.text_files)
            random.Random(0).shuffle(texts)
            self._texts = texts
        return self._texts

    # --- changing weights (model thread only) ----------------------------------------------

    def commit(self, namespace: str, request: MethodRequest, deltas: Sequence[WeightDelta]) -> int:
        """Records the deltas durably, then adds them to the weights; returns the application id."""
        for delta in deltas:  # a concurrent call may have applied the same edit meanwhile
            if self.baked(namespace, delta.edit_id) is not None:
                raise FailedPrecondition(f"edit {delta.edit_id} is already in the weights; roll it back first")
        options = {k: v for k, v in asdict(request).items() if k not in ("method", "in_gate")}
        application = self._ledger.record(namespace, request.method, options, deltas, request.in_gate)
        for delta in deltas:
            self._add(delta)
        self._refresh(namespace, {d.edit_id for d in deltas})
        return application

    def rollback(self, namespace: str, edit_id: str) -> BakedEdit:
        """Removes one edit's deltas: its modules are rebuilt from the originals and the remaining deltas."""
        removed = self._ledger.remove(namespace, edit_id)
        touched = set(removed.modules)
        for module in touched:
            weight_out_in(self._model, module, self._arch).copy_(self._originals[module])
        for delta in self._ledger.deltas():
            if delta.module in touched:
                add_delta_(weight_out_in(self._model, delta.module, self._arch), delta)
        self._refresh(namespace, {edit_id})
        return removed

    def export(self, path: Path) -> None:
        """Writes the served (edited) model and its tokenizer as a Hugging Face directory."""
        if not path.is_absolute():
            raise InvalidArgument(f"export path must be absolute (a path on the server), got {str(path)!r}")
        if path.exists() and any(path.iterdir()):
            raise FailedPrecondition(f"export path {str(path)!r} exists and is not empty; choose a new directory")
        path.mkdir(parents=True, exist_ok=True)
        self._model.save_pretrained(path)
        self._tokenizer.save_pretrained(path)

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

    # --- options ---------------------------------------------------------------------------

    def _check(self, request: MethodRequest, edits: Sequence[Edit]) -> None:
        if request.method not in METHODS:
            raise InvalidArgument(f"method must be one of {', '.join(METHODS)}, got {request.method!r}")
        if not edits:
            raise InvalidArgument("give at least one edit id to apply")
        for layer in (*request.layers, *(() if request.layer is None else (request.layer,))):
            if not 0 <= layer < self._n_layers:
                raise InvalidArgument(f"layer {layer} is out of range: this model has layers 0 to {self._n_layers - 1}")
        for edit in edits:
            if self.baked(edit.namespace, edit.id) is not None:
                raise FailedPrecondition(f"edit {edit.id} is already in the weights; roll it back first")

    @staticmethod
    def _value_options(request: MethodRequest) -> ValueOptions:
        changes = {k: v for k, v in (("steps", request.steps), ("lr", request.lr)) if v is not None}
        return ValueOptions(**changes)  # type: ignore[arg-type]

    @staticmethod
    def _ft_options(request: MethodRequest, layer: int) -> FtOptions:
        changes = {k: v for k, v in (("steps", request.steps), ("lr", request.lr),
                                     ("norm_constraint", request.norm_constraint)) if v is not None}
        return FtOptions(layer=layer, **changes)  # type: ignore[arg-type]
