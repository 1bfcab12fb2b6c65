"""Parametric editing's use cases: write stored edits into the weights (with progress), roll one back, list the
baked edits, export the edited model.

Every step that touches the model runs on the model thread; weights change only in the final commit (or a
rollback), so no request ever sees half-written weights.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Collection, Generator, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import TypeVar

from server import metrics
from server.config import Config
from server.errors import EditNotFound, InvalidArgument
from server.interfaces import Memory, StopCheck
from server.parametric.editor import METHODS, MethodRequest, ParametricEditor
from server.parametric.export import export_target
from server.parametric.kn import AttributionReport
from server.parametric.ledger import BakedEdit
from server.parametric.targets import Progress
from server.service.concurrency import off_loop
from server.types import Edit, EditAction, EditEvent
from server.validation import check_edit_id, check_method_request, check_namespace, check_text
from server.worker import ModelWorker

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_ATTRIBUTED_NEURONS = 100  # per layer in an Attribute response
MAX_ATTRIBUTION_STEPS = 200  # Riemann steps: each is one more row through the model per layer


@dataclass(frozen=True)
class Application:
    """The end of an apply: what the weights now hold."""

    application_id: int
    edits: tuple[BakedEdit, ...]
    seconds: float


class Parametric:
    def __init__(
        self, config: Config, editor: ParametricEditor, memory: Memory, io: Executor, worker: ModelWorker
    ) -> None:
        self._limits = config.limits
        self._export_root = config.export_root
        self._editor = editor
        self._memory = memory
        self._io = io
        self._worker = worker

    async def apply(
        self, namespace: str, method: MethodRequest, edit_ids: Sequence[str], should_stop: StopCheck,
        token_name: str = "",
    ) -> AsyncIterator[Progress | Application]:
        """Progress while the deltas are computed, then the Application once they are in the weights (and in the
        audit log, one event per edit, as `token_name`'s)."""
        namespace = check_namespace(namespace)
        check_method_request(method)
        ids = [check_edit_id(i) for i in edit_ids]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("edit_ids lists an edit twice; give each once")
        if len(ids) > self._limits.max_edits_per_request:
            raise InvalidArgument(f"{len(ids)} edit ids; at most {self._limits.max_edits_per_request} per call")
        edits = [await off_loop(self._io, self._memory.get, namespace, i) for i in ids]
        earlier = await off_loop(self._io, self._baked_records) if METHODS[method.method].reads_earlier else []
        started = perf_counter()
        with metrics.parametric("apply", method.method):
            steps = self._editor.compute(method, edits, earlier)
            try:
                while True:
                    (progress, deltas), _ = await self._worker.run(lambda: _advance(steps), should_stop)
                    if progress is None:
                        break
                    yield progress
            finally:
                steps.close()
            assert deltas is not None
            application, _ = await self._worker.run(
                lambda: self._editor.commit(namespace, method, deltas), should_stop
            )
        baked = tuple(b for i in ids if (b := self._editor.baked(namespace, i)) is not None)
        await self._audit(EditAction.PARAMETRIC_APPLY, baked, token_name)
        yield Application(application, baked, perf_counter() - started)

    def _baked_records(self) -> list[Edit]:
        """Every namespace's baked edits, in the order applied. This server refuses to delete a baked edit, but a
        replica that has not yet seen it baked may not: one gone from the store is left out, not a failed apply."""
        records = []
        for baked in self._editor.baked_edits():
            try:
                records.append(self._memory.get(baked.namespace, baked.edit_id))
            except EditNotFound:
                log.warning("baked edit %s of namespace %s is not in the edit store; its key is not held",
                            baked.edit_id, baked.namespace)
        return records

    async def rollback(self, namespace: str, edit_id: str, token_name: str = "") -> BakedEdit:
        namespace, edit_id = check_namespace(namespace), check_edit_id(edit_id)
        baked = self._editor.baked(namespace, edit_id)
        with metrics.parametric("rollback", baked.method if baked is not None else "none"):
            removed, _ = await self._worker.run(lambda: self._editor.rollback(namespace, edit_id))
        await self._audit(EditAction.PARAMETRIC_ROLLBACK, (removed,), token_name)
        return removed

    async def attribute(
        self, prompt: str, answer: str, layers: Sequence[int], top: int, steps: int, should_stop: StopCheck
    ) -> AttributionReport:
        """KN's attribution of the answer after the prompt, run on the model thread like other model work; `top` and
        `steps` 0 take their defaults (10 neurons a layer, KN's Riemann steps)."""
        prompt = check_text("prompt", prompt, self._limits.max_prompt_chars)
        answer = check_text("answer", answer, self._limits.max_text_chars)
        if not 0 <= top <= MAX_ATTRIBUTED_NEURONS:
            raise InvalidArgument(f"top must be in [1, {MAX_ATTRIBUTED_NEURONS}] (0: 10), got {top}")
        if not 0 <= steps <= MAX_ATTRIBUTION_STEPS:
            raise InvalidArgument(f"steps must be in [1, {MAX_ATTRIBUTION_STEPS}] (0: KN's default), got {steps}")
        report, _ = await self._worker.run(
            lambda: self._editor.attribute(prompt, answer, layers, top or 10, steps or None), should_stop
        )
        return report

    async def _audit(self, action: EditAction, baked: Sequence[BakedEdit], token_name: str) -> None:
        """Records the change in the edit store's audit log, right after the ledger (a separate database) committed
        it: the baked edit is the event's after for an apply and its before for a rollback."""
        states = [json.dumps(asdict(b), sort_keys=True) for b in baked]
        applied = action is EditAction.PARAMETRIC_APPLY
        events = [EditEvent(b.namespace, token_name, action, b.edit_id, "" if applied else state,
                            state if applied else "") for b, state in zip(baked, states, strict=True)]
        await off_loop(self._io, self._memory.record, events)

    async def baked_edits(self, namespace: str, readable: Collection[str] | None) -> list[BakedEdit]:
        """The namespace's baked edits; for namespace "", those of every namespace in `readable` (None: every one),
        the namespaces the caller may read."""
        if not namespace:
            edits = await off_loop(self._io, self._editor.baked_edits, None)
            return [b for b in edits if readable is None or b.namespace in readable]
        return await off_loop(self._io, self._editor.baked_edits, check_namespace(namespace))

    async def export(self, path: str) -> tuple[Path, int]:
        """Writes the edited model to `path`, a directory under the export directory (relative to it, or absolute
        inside it); returns the directory and how many baked edits it holds."""
        directory = await off_loop(self._io, export_target, self._export_root, path)
        with metrics.parametric("export", "all"):
            await self._worker.run(lambda: self._editor.export(directory))
        return directory, len(self._editor.baked_edits())


def _advance(steps: Generator[Progress, None, T]) -> tuple[Progress | None, T | None]:
    """One step: (its progress, None), or (None, the result) once the computation is done."""
    try:
        return next(steps), None
    except StopIteration as done:
        return None, done.value
