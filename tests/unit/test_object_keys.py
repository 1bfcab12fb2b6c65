"""Finding an edit by its new object (issue 24, reverse questions): the names a query holds, the store's lookup on
both backends, and the object gate reading the edit from its object inside ScopeCheck."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from editdata.cases import Case, EditFact, Probe
from scope_classifier.object_gate import as_erased
from scope_classifier.object_pairs import EditText, object_queries, reverse_relation, reversed_edit
from server.gate.artifact import DEFAULT_OBJECT_ARTIFACT, GateArtifact, load_artifact
from server.gate.classifier import ClassifierGate
from server.memory.edit_memory import EditMemory
from server.memory.embed import SentenceEncoder
from server.memory.store import EditStore
from server.scope import ScopeCheck
from server.types import EditKind, EditSpec, named_keys, object_key
from tests.unit.fakes import make_edit

pytest_plugins = ("tests.postgres",)

# Made-up people, so that neither the encoder nor the gate knows the fact.
FATHER = EditSpec("Amira Solen", "Who is Amira Solen's father?", "Tomas Brandt", "Erik Solen")
SISTER = EditSpec("Ivo Marek", "Who is Ivo Marek's sister?", "Lena Okafor")


def test_an_object_is_keyed_as_a_query_names_it_and_only_when_it_is_a_name() -> None:
    assert object_key(" Tomas  BRANDT ") == "tomas brandt" and object_key("U.S.") == "u.s" in named_keys("the U.S.?")
    assert object_key("2nd Army") == "2nd army"
    assert object_key("english") == object_key("1990") == object_key("") == object_key("...") == ""
    erase = replace(make_edit(target_new=""), kind=EditKind.ERASE, target_true="Paris")
    assert (erase.fact_object, erase.object_key) == ("Paris", "paris")  # the answer it erases
    assert replace(erase, target_true=None).object_key == ""
    assert replace(erase, kind=EditKind.PATCH, target_new="Pluto").object_key == ""  # a rule has no object


def test_a_query_names_every_span_of_whole_words_normalised() -> None:
    keys = named_keys("Who is  the son of Charles IV of Spain?")
    assert {"charles iv of spain", "spain", "son of charles", "who"} <= set(keys)
    assert "charles iv of spai" not in keys and "spain?" not in keys  # whole words only, punctuation outside
    assert len(keys) == len(set(keys))
    assert "a b c" not in named_keys("a b c", max_words=2) and "b c" in named_keys("a b c", max_words=2)
    assert named_keys("Babur, a b c d", last_words=4) == named_keys("a b c d")  # names in the last words only


def test_the_store_finds_live_fact_edits_by_their_object_newest_first(store_on_each_backend: EditStore) -> None:
    store = store_on_each_backend
    specs = [FATHER, EditSpec("Noor Brandt", "Noor Brandt's father is", "Tomas  BRANDT"), SISTER,
             EditSpec("Tomas Brandt", "Tomas Brandt was born in", "", target_true="Oslo", kind=EditKind.ERASE)]
    edits, _ = store.insert("ns", specs, [np.eye(8, dtype=np.float32)[:1] for _ in specs])
    found = store.live_with_objects("ns", named_keys("Who is the daughter of Tomas Brandt?"), 8)
    assert [e.id for e in found] == [edits[1].id, edits[0].id]  # the erase edit has no object
    assert [e.id for e in store.live_with_objects("ns", ["tomas brandt"], 1)] == [edits[1].id]
    assert store.live_with_objects("other", ["tomas brandt"], 8) == []
    store.delete("ns", edits[1].id)
    assert [e.id for e in store.live_with_objects("ns", ["tomas brandt"], 8)] == [edits[0].id]
    assert store.live_with_objects("ns", [], 8) == [] and store.live_with_objects("ns", [""], 8) == []


@pytest.fixture(scope="module")
def object_artifact() -> GateArtifact:
    return load_artifact(DEFAULT_OBJECT_ARTIFACT)


def scope_check(tmp_path: Path, encoder: SentenceEncoder, artifact: GateArtifact,
                objects: GateArtifact | None) -> ScopeCheck:
    memory = EditMemory(tmp_path / ("with" if objects else "without"), encoder, artifact.encoder)
    gate = ClassifierGate(artifact, encoder, objects=objects)
    return ScopeCheck(encoder, memory, gate, top_k=8, threshold=artifact.threshold)


def test_a_reverse_question_finds_its_edit_by_the_object_and_other_questions_about_the_object_do_not(
    tmp_path: Path, encoder: SentenceEncoder, artifact: GateArtifact, object_artifact: GateArtifact,
) -> None:
    scope = scope_check(tmp_path, encoder, artifact, object_artifact)
    father, sister = scope.add("ns", [FATHER, SISTER])
    for reverse, edit in (("Who is the daughter of Tomas Brandt?", father), ("Who is Tomas Brandt's child?", father),
                          ("Who is Lena Okafor's brother?", sister)):
        hit, p, _ = scope.best("ns", reverse)
        assert hit is not None and hit.by_object and hit.edit.id == edit.id, reverse
        assert p >= artifact.threshold, (reverse, p)
    for other in ("Where was Tomas Brandt born?", "Who is Tomas Brandt's father?", "What is Lena Okafor's job?"):
        hit, p, _ = scope.best("ns", other)
        assert p < artifact.threshold, (other, p)
    # the forward question is the subject keys' to find
    hit, p, _ = scope.best("ns", "Who is Amira Solen's father?")
    assert hit is not None and not hit.by_object and hit.edit.id == father.id and p >= artifact.threshold
    # the whole query names the subject, though its last sentence does not: not found by object
    hit, _, _ = scope.best("ns", "Tell me about Amira Solen. Who is the daughter of Tomas Brandt?")
    assert hit is None or not hit.by_object


def test_without_the_object_gate_a_reverse_question_stays_out(
    tmp_path: Path, encoder: SentenceEncoder, artifact: GateArtifact,
) -> None:
    scope = scope_check(tmp_path, encoder, artifact, None)
    scope.add("ns", [FATHER])
    hit, p, _ = scope.best("ns", "Who is the daughter of Tomas Brandt?")
    assert (hit is None or not hit.by_object) and p < artifact.threshold


def test_the_object_gate_scores_a_hidden_or_subject_naming_edit_not_by_object(
    tmp_path: Path, encoder: SentenceEncoder, artifact: GateArtifact, object_artifact: GateArtifact,
) -> None:
    scope = scope_check(tmp_path, encoder, artifact, object_artifact)
    (father,) = scope.add("ns", [FATHER])
    assert scope._by_object("ns", "Is Tomas Brandt the father of Amira Solen?") == []  # names the subject
    assert [h.edit.id for h in scope._by_object("ns", "Who is Tomas Brandt's son?")] == [father.id]
    (aliased,) = scope.add("ns", [replace(SISTER, aliases=("Ivo M.",))])
    assert scope._by_object("ns", "Is Ivo M. the brother of Lena Okafor?") == []  # names the subject's alias
    hidden = ScopeCheck(scope.embedder, scope.memory, scope.gate, 8, hidden=lambda edit: True)
    assert hidden._by_object("ns", "Who is Tomas Brandt's son?") == []


def test_reverse_relations_are_read_from_the_prompt_without_its_subject() -> None:
    def relation_of(prompt: str, subject: str) -> tuple[str, ...] | None:
        relation = reverse_relation(EditText(subject, prompt, "X"))
        return None if relation is None else relation.reverse

    assert relation_of("Who is Amira Solen's father?", "Amira Solen") == relation_of("The mother of A is", "A")
    assert relation_of("Who is Mia's sister?", "Mia") != relation_of("Who is Mia's son?", "Mia")
    assert relation_of("The mother tongue of Pierre is", "Pierre") is None
    assert relation_of("The number of children Ana has is", "Ana") is None
    assert relation_of("Ana follows the religion of", "Ana") is None
    assert relation_of("Johnson was born in", "Johnson") is None  # "son" inside the subject is no cue
    assert relation_of("Season 3 is followed by", "Season 3") != relation_of("Season 3 follows", "Season 3")


def test_object_pairs_name_the_object_never_the_subject_and_read_the_edit_from_its_object() -> None:
    edit = EditText("Amira Solen", "Who is Amira Solen's father?", "Tomas Brandt")
    case = Case("1", (EditFact(edit.subject, edit.prompt, edit.target_new, None),),
                object_neighbourhood=(Probe("Tomas Brandt was born in", ("Oslo",)),),
                portability=(Probe("Who is the daughter of Tomas Brandt?", ("Amira Solen",), "logical"),
                             Probe("Is Amira Solen the child of Tomas Brandt?", ("yes",), "logical")))
    queries = object_queries(edit, case, random.Random(0))
    labels = {kind: label for _, label, kind in queries}
    assert labels["reverse"] == labels["reverse_logical"] == 1 and labels["reverse_other"] == 0
    assert all("Tomas Brandt" in q and "Amira Solen" not in q for q, _, _ in queries)
    assert ("Who is the daughter of Tomas Brandt?", 1, "reverse_logical") in queries
    assert reversed_edit(edit) == EditText("Tomas Brandt", "Who is Amira Solen's father? Tomas Brandt", "Amira Solen")


def test_an_erase_edit_is_evaluated_keyed_by_the_answer_it_erases() -> None:
    case = Case("1", (EditFact("Eiffel Tower", "The Eiffel Tower stands in", "Rome", "Paris"),))
    assert as_erased(case).edits == (EditFact("Eiffel Tower", "The Eiffel Tower stands in", "Paris", "Paris"),)
    assert as_erased(replace(case, edits=(replace(case.edits[0], target_true=None),))).edits[0].target_new == ""
