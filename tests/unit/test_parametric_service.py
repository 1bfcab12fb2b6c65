"""The parametric use case hands a method the edits the weights already hold (AlphaEdit keeps their keys)."""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.config import Config
from server.parametric.alphaedit import AlphaEdit
from server.parametric.deltas import WeightDelta
from server.parametric.editor import METHODS, MethodRequest
from server.parametric.method import MethodContext
from server.parametric.targets import Progress
from server.service.parametric import Application, Parametric
from server.types import Edit, EditEvent, Hit
from server.worker import ModelWorker
from tests.unit.fakes import FixedMemory
from tests.unit.test_parametric_editor import edit, make_editor


@dataclass
class AuditedMemory(FixedMemory):
    audit: list[EditEvent] = field(default_factory=list)
    reads: int = 0

    def record(self, events: Sequence[EditEvent]) -> None:
        self.audit.extend(events)

    def get(self, namespace: str, edit_id: str) -> Edit:
        self.reads += 1
        return super().get(namespace, edit_id)


@dataclass(frozen=True)
class SeeingEarlier(AlphaEdit):
    seen: list[list[str]] = field(default_factory=list)

    def compute(
        self, context: MethodContext, request: MethodRequest, edits: Sequence[Edit]
    ) -> Generator[Progress, None, list[WeightDelta]]:
        self.seen.append([e.id for e in context.earlier])
        return (yield from super().compute(context, request, edits))


def test_each_application_sees_the_baked_edits_and_only_a_method_that_reads_them_fetches_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    method = SeeingEarlier()
    monkeypatch.setitem(METHODS, "alphaedit", method)
    editor, _, _ = make_editor("llama", tmp_path, model_samples=0)
    e1, e2, e3, e4, e5 = (f"{i:032x}" for i in range(1, 6))  # edit ids as the store makes them
    edits = [edit("france", "berlin", e1), edit("germany", "rome", e2), edit("italy", "paris", e3),
             edit("spain", "rome", e4), edit("france", "madrid", e5)]
    memory = AuditedMemory([Hit(e, 1.0) for e in edits])
    worker, io = ModelWorker(), ThreadPoolExecutor(1)
    service = Parametric(Config(), editor, memory, io, worker)
    request = MethodRequest("alphaedit", layers=(1,), steps=5, null_space_cutoff=1e-8)

    async def apply(ids: list[str], how: MethodRequest = request) -> None:
        outcomes = [o async for o in service.apply("ns", how, ids, lambda: False)]
        assert isinstance(outcomes[-1], Application)
        assert [e.edit_id for e in memory.audit[-len(ids):]] == ids

    try:
        asyncio.run(apply([e1]))
        asyncio.run(apply([e2, e3]))
        editor.rollback("ns", e2)
        asyncio.run(apply([e2]))
        # an edit another replica deleted from the store is left out rather than failing the apply
        memory.hits = [h for h in memory.hits if h.edit.id != e1]
        asyncio.run(apply([e4]))
        assert method.seen == [[], [e1], [e1, e3], [e3, e2]]  # in the order applied; a rolled-back edit is gone
        before = memory.reads
        asyncio.run(apply([e5], MethodRequest("ft", layer=1, steps=2)))
        assert memory.reads - before == 1  # the edit it writes, none of the four baked ones
    finally:
        editor.close()
        io.shutdown()
        worker.shutdown()
