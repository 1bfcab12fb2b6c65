"""The edit lifecycle over a real store and index: a newer edit of the same fact supersedes the live one, deleting
it brings the older one back, UpdateEdit versions an edit in place, and every change is in the audit log."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from server.errors import FailedPrecondition, ResourceExhausted
from server.gate.similarity import SimilarityGate
from server.memory.edit_memory import EditMemory
from server.scope import ScopeCheck
from server.types import Edit, EditAction, EditEvent, EditKind, EditSpec, EncodedText, Hit
from tests.unit.fakes import FixedGate, HashEmbedder

CAPITAL = EditSpec("France", "The capital of France is", "Rome", target_true="Paris")
CAPITAL_AGAIN = EditSpec("france", "The capital city of France is", "Berlin")  # same fact, other wording and case
LANGUAGE = EditSpec("France", "France speaks the language", "German")  # same subject, another relation
OTHER_SUBJECT = EditSpec("Spain", "The capital of Spain is", "Lisbon")
THRESHOLD = 0.85  # the similarity gate: the same fact's wordings score over it, another relation under it


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder(dim=256)


@pytest.fixture
def memory(tmp_path: Path, embedder: HashEmbedder) -> Iterator[EditMemory]:
    m = EditMemory(tmp_path, embedder, "hash", max_edits_per_namespace=3)
    yield m
    m.close()


@pytest.fixture
def scope(memory: EditMemory, embedder: HashEmbedder) -> ScopeCheck:
    return ScopeCheck(embedder, memory, SimilarityGate(), top_k=4, threshold=THRESHOLD, supersede_threshold=THRESHOLD)


def answering(scope: ScopeCheck, text: str) -> str | None:
    """The target of the edit the gate picks for `text`, None when none is in scope."""
    hit, p, _ = scope.best("ns", text)
    return hit.edit.target_new if hit is not None and p >= THRESHOLD else None


def actions(memory: EditMemory, edit_id: str | None = None) -> list[tuple[str, str, str]]:
    return [(e.action.value, e.edit_id, e.token_name) for e in memory.events("ns", 100, "", edit_id).events]


def test_the_rule_separates_the_fixtures(scope: ScopeCheck, embedder: HashEmbedder) -> None:
    """The fixtures stand for what the rule must tell apart (a guard against a change of the fake embedder)."""
    (old,) = scope.memory.add("ns", [CAPITAL])
    assert scope.superseded("ns", [CAPITAL_AGAIN]) == [old.id]
    assert scope.superseded("ns", [LANGUAGE, OTHER_SUBJECT]) == [None, None]


def test_a_newer_edit_of_the_same_fact_supersedes_the_live_one(scope: ScopeCheck, memory: EditMemory) -> None:
    (old,) = scope.add("ns", [CAPITAL], "alice")
    (new,) = scope.add("ns", [CAPITAL_AGAIN], "bob")
    assert new.supersedes == old.id and new.live
    assert memory.get("ns", old.id).superseded_by == new.id
    assert [e.id for e in memory.page("ns", 10, "").edits] == [new.id]  # history is not listed
    assert answering(scope, "The capital of France is") == "Berlin"
    assert memory.history("ns", new.id) == (new, [memory.get("ns", old.id)])
    assert actions(memory) == [("add", old.id, "alice"), ("add", new.id, "bob"), ("supersede", old.id, "bob")]


def test_another_relation_or_subject_does_not_supersede(scope: ScopeCheck, memory: EditMemory) -> None:
    edits = scope.add("ns", [CAPITAL])
    edits += scope.add("ns", [LANGUAGE, OTHER_SUBJECT])
    assert all(e.live and not e.supersedes for e in edits)
    assert memory.page("ns", 10, "").total == 3
    assert answering(scope, "France speaks the language") == "German"
    assert answering(scope, "The capital of France is") == "Rome"


@pytest.mark.parametrize(("score", "supersedes"), [(0.5, False), (0.69, False), (0.7, True), (0.95, True)])
def test_supersede_needs_the_stricter_threshold(
    memory: EditMemory, embedder: HashEmbedder, score: float, supersedes: bool
) -> None:
    """In scope for answering (0.235) is not enough to replace a fact: that takes `supersede_threshold`."""
    gate = FixedGate()
    scope = ScopeCheck(embedder, memory, gate, top_k=4, threshold=0.235, supersede_threshold=0.7)
    (old,) = scope.add("ns", [CAPITAL])
    gate.by_edit_id[old.id] = score
    (new,) = scope.add("ns", [LANGUAGE])
    assert (new.supersedes == old.id) is supersedes
    assert memory.get("ns", old.id).live is not supersedes


def test_the_same_prompt_again_supersedes_whatever_the_gate_scores(memory: EditMemory, embedder: HashEmbedder) -> None:
    """On counterfact/val, 3 of 200 prompts scored under 0.7 against an edit of the very same prompt."""
    scope = ScopeCheck(embedder, memory, FixedGate(), top_k=4, threshold=0.235, supersede_threshold=0.7)  # scores 0
    (old,) = scope.add("ns", [CAPITAL])
    (new,) = scope.add("ns", [EditSpec("FRANCE", "the  capital of France is", "Berlin")])
    assert new.supersedes == old.id
    (other,) = scope.add("ns", [LANGUAGE])
    assert not other.supersedes


def test_skip_supersede_stores_the_same_fact_as_a_second_live_edit(scope: ScopeCheck, memory: EditMemory) -> None:
    (old,) = scope.add("ns", [CAPITAL])
    (new,) = scope.add("ns", [CAPITAL_AGAIN], supersede=False)
    assert old.live and new.live and not new.supersedes
    assert memory.page("ns", 10, "").total == 2


def test_each_key_text_goes_through_the_encoder_once(scope: ScopeCheck, embedder: HashEmbedder) -> None:
    """One pass serves the index, the supersede decision and the gate's view; the live candidate's keys are
    encoded for the decision too."""
    scope.add("ns", [CAPITAL])
    embedder.calls.clear()
    batch = [CAPITAL_AGAIN, EditSpec("France", "France is governed from", "Lyon", paraphrases=("France's seat is",))]
    scope.add("ns", batch)
    encoded = [text for call in embedder.calls for text in call]
    new_texts = [t for spec in batch for t in spec.key_texts()]
    assert sorted(encoded) == sorted([*new_texts, CAPITAL.prompt])


def test_a_later_edit_of_the_same_batch_supersedes_an_earlier_one(scope: ScopeCheck, memory: EditMemory) -> None:
    (live,) = scope.add("ns", [CAPITAL])
    first, second = scope.add("ns", [CAPITAL_AGAIN, EditSpec("France", "The capital of France is", "Madrid")])
    assert (first.supersedes, first.superseded_by) == (live.id, second.id)
    assert second.supersedes == first.id and second.live
    assert [e.target_new for e in memory.page("ns", 10, "").edits] == ["Madrid"]
    assert [e.target_new for e in memory.history("ns", second.id)[1]] == ["Berlin", "Rome"]


def test_deleting_the_superseding_edit_brings_the_older_one_back(scope: ScopeCheck, memory: EditMemory) -> None:
    (old,) = scope.add("ns", [CAPITAL])
    (new,) = scope.add("ns", [CAPITAL_AGAIN])
    deletion = memory.delete("ns", new.id, "carol")
    assert deletion.edit.id == new.id and deletion.restored == old
    assert memory.get("ns", old.id).live
    assert answering(scope, "The capital of France is") == "Rome"
    assert [e.id for e in memory.page("ns", 10, "").edits] == [old.id]
    assert actions(memory)[-2:] == [("restore", old.id, "carol"), ("delete", new.id, "carol")]
    memory.delete("ns", old.id)  # and the first edit deleted leaves nothing in scope
    assert answering(scope, "The capital of France is") is None


def test_deleting_a_superseded_edit_closes_the_chain(scope: ScopeCheck, memory: EditMemory) -> None:
    (a,) = scope.add("ns", [CAPITAL])
    (b,) = scope.add("ns", [CAPITAL_AGAIN])
    (c,) = scope.add("ns", [EditSpec("France", "The capital of France is", "Madrid")])
    assert memory.delete("ns", b.id).restored is None
    assert memory.get("ns", c.id).supersedes == a.id and memory.get("ns", a.id).superseded_by == c.id
    assert answering(scope, "The capital of France is") == "Madrid"
    assert memory.delete("ns", c.id).restored == memory.get("ns", a.id)
    assert answering(scope, "The capital of France is") == "Rome"


def test_update_keeps_the_id_versions_the_edit_and_reindexes_it(scope: ScopeCheck, memory: EditMemory) -> None:
    (v1,) = scope.add("ns", [CAPITAL])
    v2 = scope.update("ns", v1.id, EditSpec("Dante", "Dante wrote in the language", "German"), "dave")
    assert (v2.id, v2.version, v2.created_at_unix_s) == (v1.id, 2, v1.created_at_unix_s)
    assert answering(scope, "Dante wrote in the language") == "German"
    assert answering(scope, "The capital of France is") is None  # the old key texts left the index
    edit, history = memory.history("ns", v1.id)
    assert edit == v2 and history == [v1]
    (event,) = [e for e in memory.events("ns", 10, "").events if e.action is EditAction.UPDATE]
    assert json.loads(event.before_json)["target_new"] == "Rome" and json.loads(event.after_json)["version"] == 2
    assert event.token_name == "dave"


def test_a_superseded_edit_cannot_be_updated(scope: ScopeCheck) -> None:
    (old,) = scope.add("ns", [CAPITAL])
    (new,) = scope.add("ns", [CAPITAL_AGAIN])
    with pytest.raises(FailedPrecondition, match=f"superseded by edit {new.id}"):
        scope.update("ns", old.id, CAPITAL)


def test_a_regex_patch_supersedes_the_one_with_the_same_pattern(scope: ScopeCheck, memory: EditMemory) -> None:
    first = EditSpec("", "", "", kind=EditKind.REGEX, pattern="colour", replacement="color")
    (old,) = scope.add("ns", [first])
    (new,) = scope.add("ns", [EditSpec("", "", "", kind=EditKind.REGEX, pattern="colour", replacement="hue")])
    (other,) = scope.add("ns", [EditSpec("", "", "", kind=EditKind.REGEX, pattern="grey", replacement="gray")])
    assert new.supersedes == old.id and not other.supersedes
    assert [e.replacement for e in memory.live_of_kind("ns", EditKind.REGEX)] == ["hue", "gray"]


def test_a_refused_write_records_no_event(scope: ScopeCheck, memory: EditMemory) -> None:
    scope.add("ns", [CAPITAL, LANGUAGE])
    before = actions(memory)
    with pytest.raises(ResourceExhausted):  # the limit is 3 live edits
        scope.add("ns", [OTHER_SUBJECT, EditSpec("Italy", "The capital of Italy is", "Oslo")])
    assert actions(memory) == before
    scope.add("ns", [CAPITAL_AGAIN, OTHER_SUBJECT])  # superseding one: still 3 live edits
    assert memory.page("ns", 10, "").total == 3


def test_events_page_and_filter_by_edit(scope: ScopeCheck, memory: EditMemory) -> None:
    a, b = scope.add("ns", [CAPITAL, OTHER_SUBJECT])
    memory.delete("ns", b.id)
    memory.record([EditEvent("ns", "admin", EditAction.PARAMETRIC_APPLY, a.id, "", '{"method": "rome"}')])
    first = memory.events("ns", 2, "")
    second = memory.events("ns", 2, first.next_page_token)
    assert [e.action.value for e in first.events + second.events] == ["add", "add", "delete", "parametric_apply"]
    assert second.next_page_token == ""
    assert [e.action for e in memory.events("ns", 10, "", a.id).events] == [EditAction.ADD,
                                                                             EditAction.PARAMETRIC_APPLY]
    assert memory.events("other", 10, "").events == []
    seqs = [e.seq for e in first.events + second.events]
    assert seqs == sorted(seqs) and all(e.at_unix_s > 0 for e in first.events)


def test_history_events_and_the_live_index_survive_a_restart_without_close(
    tmp_path: Path, embedder: HashEmbedder
) -> None:
    first = EditMemory(tmp_path, embedder, "hash")
    ScopeCheck(embedder, first, SimilarityGate(), 4, threshold=THRESHOLD).add("ns", [CAPITAL])
    first.close()  # index saved at this generation
    crashed = EditMemory(tmp_path, embedder, "hash")
    (new,) = ScopeCheck(embedder, crashed, SimilarityGate(), 4, threshold=THRESHOLD).add("ns", [CAPITAL_AGAIN])
    # "Restart" without close(): the saved index predates the supersession and is rebuilt from live keys only.
    reopened = EditMemory(tmp_path, embedder, "hash")
    try:
        scope = ScopeCheck(embedder, reopened, SimilarityGate(), 4, threshold=THRESHOLD)
        assert answering(scope, "The capital of France is") == "Berlin"
        assert [e.target_new for e in reopened.history("ns", new.id)[1]] == ["Rome"]
        assert [e.action.value for e in reopened.events("ns", 10, "").events] == ["add", "add", "supersede"]
        restored = reopened.delete("ns", new.id).restored
        assert isinstance(restored, Edit) and answering(scope, "The capital of France is") == "Rome"
    finally:
        reopened.close()
        crashed.close()


class CountingGate(SimilarityGate):
    def __init__(self) -> None:
        self.pairs = 0

    def scores(self, query: EncodedText, hits: Sequence[Hit]) -> list[float]:
        self.pairs += len(hits)
        return super().scores(query, hits)


def test_a_batch_of_one_fact_repeated_leaves_one_live_edit_and_scores_each_spec_once(
    memory: EditMemory, embedder: HashEmbedder
) -> None:
    gate = CountingGate()
    scope = ScopeCheck(embedder, memory, gate, top_k=4, threshold=THRESHOLD)
    (live,) = scope.add("ns", [CAPITAL])
    edits = scope.add("ns", [CAPITAL] * 30)
    assert gate.pairs == 30  # each spec against the one live candidate: the edit before it
    assert [e.live for e in edits] == [False] * 29 + [True]
    assert edits[0].supersedes == live.id
    assert all(b.supersedes == a.id for a, b in zip(edits[:-1], edits[1:], strict=True))
    assert [e.id for e in memory.page("ns", 10, "").edits] == [edits[-1].id]
