"""The edit memory's use cases: add, update, read (with history), list and delete edits, store a user's correction
as an edit, and read the audit log.

Every add and update goes through the scope check (a newer edit of the same fact supersedes the live one; stored
durably with its audit events, then the gate warmed); reads go to the memory. `token_name` is the caller's token,
recorded in the audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from server import metrics
from server.chat.correction_prompts import Exchange
from server.chat.corrections import CorrectionExtractor, structured_spec
from server.config import Config
from server.errors import FailedPrecondition, InvalidArgument
from server.interfaces import Deletion, EditPage, EventPage, Memory, StopCheck
from server.scope import ScopeCheck
from server.service.concurrency import off_loop
from server.service.writes import WriteLane, key_text_chars
from server.types import Edit, EditSpec
from server.validation import (
    check_edit_id,
    check_edit_spec,
    check_edit_specs,
    check_namespace,
    check_page_size,
    check_text,
)
from server.worker import ModelWorker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorrectionRequest:
    """A correction of one exchange, as free text or as the edit's fields (exactly one of them)."""

    namespace: str
    question: str  # what the user asked
    answer: str = ""  # what the model answered; "" when not given
    text: str | None = None  # e.g. "No, it is Taipei"
    spec: EditSpec | None = None
    dry_run: bool = False  # read the correction, store nothing


@dataclass(frozen=True)
class Correction:
    edit: Edit  # with id "" and no creation time when not stored
    stored: bool
    extraction: tuple[str, ...]  # the model's raw outputs while reading free text


class Edits:
    def __init__(
        self, config: Config, scope: ScopeCheck, memory: Memory, io: Executor, writes: WriteLane,
        worker: ModelWorker, corrections: CorrectionExtractor, baked: Callable[[str, str], bool],
    ) -> None:
        self._limits = config.limits
        self._default_page_size = config.default_page_size
        self._scope = scope
        self._memory = memory
        self._io = io  # reads and deletes: never behind an embedding
        self._writes = writes  # adds: embedding, then the store
        self._worker = worker
        self._corrections = corrections
        self._baked = baked  # (namespace, edit id) → the edit is in the model's weights

    async def add(
        self, namespace: str, specs: Sequence[EditSpec], token_name: str = "", supersede: bool = True
    ) -> list[Edit]:
        """Durable on return. Edits that superseded a live one name it in `supersedes`; an earlier spec of the
        batch that a later one superseded comes back with `superseded_by` set. With `supersede` False every
        edit is stored as new (an export read back)."""
        namespace = check_namespace(namespace)
        check_edit_specs(specs, self._limits)
        edits = await self._writes.run(
            key_text_chars(specs), lambda: self._store(namespace, specs, token_name, supersede)
        )
        metrics.BATCH_SIZE.labels("add_edits").observe(len(edits))
        log.info("added %d edit(s) to namespace %s: %s", len(edits), namespace, ", ".join(e.id for e in edits[:8]))
        for edit in edits:
            if edit.supersedes:
                log.info("edit %s supersedes edit %s in namespace %s", edit.id, edit.supersedes, namespace)
        return edits

    def _store(self, namespace: str, specs: Sequence[EditSpec], token_name: str, supersede: bool) -> list[Edit]:
        """On the write lane: embeds, stores (durable on return) and warms the gate."""
        log.info("embedding %d edit(s) (%d characters) for namespace %s", len(specs), key_text_chars(specs), namespace)
        return self._scope.add(namespace, specs, token_name, supersede)

    async def update(self, namespace: str, edit_id: str, spec: EditSpec, token_name: str = "") -> Edit:
        """The edit's new version (same id, version one more); durable on return."""
        namespace, edit_id = check_namespace(namespace), check_edit_id(edit_id)
        check_edit_spec(spec, "edit", self._limits)
        if self._baked(namespace, edit_id):
            raise FailedPrecondition(f"edit {edit_id} is in the model's weights; roll it back before updating it")
        edit = await self._writes.run(
            key_text_chars([spec]), lambda: self._scope.update(namespace, edit_id, spec, token_name)
        )
        log.info("updated edit %s in namespace %s to version %d", edit.id, namespace, edit.version)
        return edit

    async def get(self, namespace: str, edit_id: str) -> Edit:
        return await off_loop(self._io, self._memory.get, check_namespace(namespace), check_edit_id(edit_id))

    async def history(self, namespace: str, edit_id: str) -> tuple[Edit, list[Edit]]:
        """The edit and what came before it, newest first (`Memory.history`)."""
        return await off_loop(self._io, self._memory.history, check_namespace(namespace), check_edit_id(edit_id))

    async def events(
        self, namespace: str, page_size: int = 0, page_token: str = "", edit_id: str = ""
    ) -> EventPage:
        """One page of the namespace's audit log, oldest first; only `edit_id`'s events when given."""
        namespace = check_namespace(namespace)
        check_page_size(page_size, self._limits)
        return await off_loop(
            self._io, self._memory.events, namespace, page_size or self._default_page_size, page_token,
            check_edit_id(edit_id) if edit_id else None,
        )

    async def page(self, namespace: str, page_size: int = 0, page_token: str = "") -> EditPage:
        """`page_size` 0 takes the server's default."""
        namespace = check_namespace(namespace)
        check_page_size(page_size, self._limits)
        return await off_loop(self._io, self._memory.page, namespace, page_size or self._default_page_size, page_token)

    async def delete(self, namespace: str, edit_id: str, token_name: str = "") -> Deletion:
        """Removes the edit; the edit it had superseded answers again (an undo)."""
        namespace, edit_id = check_namespace(namespace), check_edit_id(edit_id)
        if self._baked(namespace, edit_id):
            raise FailedPrecondition(f"edit {edit_id} is in the model's weights; roll it back first")
        deletion = await off_loop(self._io, self._memory.delete, namespace, edit_id, token_name)
        log.info("deleted edit %s from namespace %s%s", edit_id, namespace,
                 f"; edit {deletion.restored.id} is live again" if deletion.restored else "")
        return deletion

    async def correct(self, request: CorrectionRequest, should_stop: StopCheck, token_name: str = "") -> Correction:
        """The edit a correction asks for, stored unless it is a dry run (superseding the live edit of the same
        fact, as `add` does); free text is read by the base model."""
        namespace = check_namespace(request.namespace)
        # The question becomes one of the edit's key texts, so it is held to their limit.
        question = check_text("question", request.question, self._limits.max_text_chars)
        answer = check_text("answer", request.answer, self._limits.max_prompt_chars) if request.answer.strip() else ""
        exchange = Exchange(question, answer)
        outputs: tuple[str, ...] = ()
        if request.spec is not None:
            spec, kind = structured_spec(exchange, request.spec), "edit"
        elif request.text is not None:
            text = check_text("text", request.text, self._limits.max_text_chars)
            extraction, _ = await self._worker.run(lambda: self._corrections.extract(exchange, text), should_stop)
            spec, outputs, kind = extraction.spec, extraction.outputs, "text"
        else:
            raise InvalidArgument(
                "correction is missing: set text (free text, e.g. 'No, it is Taipei') or edit "
                "(subject, prompt, target_new)"
            )
        check_edit_spec(spec, "edit", self._limits)
        if request.dry_run:
            return Correction(_unstored(spec, namespace), stored=False, extraction=outputs)
        (edit,) = await self._writes.run(  # a correction of a correction replaces it, as an edit does
            key_text_chars([spec]), lambda: self._store(namespace, [spec], token_name, supersede=True)
        )
        log.info("correction stored in namespace %s as edit %s (%s: %r -> %r)", namespace, edit.id, kind,
                 edit.prompt, edit.target_new)
        return Correction(edit, stored=True, extraction=outputs)


def _unstored(spec: EditSpec, namespace: str) -> Edit:
    return Edit(id="", namespace=namespace, subject=spec.subject, prompt=spec.prompt, target_new=spec.target_new,
                target_true=spec.target_true, paraphrases=spec.paraphrases, created_at_unix_s=0.0, kind=spec.kind,
                pattern=spec.pattern, replacement=spec.replacement, aliases=spec.aliases)
