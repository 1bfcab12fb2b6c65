"""Aliases of an edit's subject (issue 24): each is a key text, the prompt naming the alias, read by the gate with
the alias as its subject; stored, validated, and kept through updates and the audit log."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from server.config import Limits
from server.errors import InvalidArgument
from server.gate.artifact import GateArtifact
from server.gate.classifier import ClassifierGate
from server.memory.edit_memory import EditMemory
from server.memory.embed import SentenceEncoder
from server.memory.store import EditStore, edit_from_json, edit_to_json
from server.types import EditKey, EditKind, EditSpec, Hit
from server.validation import check_edit_spec
from tests.unit.fakes import HashEmbedder, make_edit

pytest_plugins = ("tests.postgres",)

ZIC3 = EditSpec("ZIC3", "What species is ZIC3 specific to?", "male", "human",
                paraphrases=("In which living being can you find ZIC3?",), aliases=("Zic family member 3", "ZIC-3"))


def test_each_alias_adds_the_prompt_naming_it_read_with_the_alias_as_subject() -> None:
    edit = make_edit(prompt=ZIC3.prompt, subject="ZIC3", target_new="male", paraphrases=ZIC3.paraphrases)
    edit = replace(edit, aliases=ZIC3.aliases)
    assert edit.index_keys() == (
        EditKey("What species is ZIC3 specific to?", "ZIC3"),
        EditKey("In which living being can you find ZIC3?", "ZIC3"),
        EditKey("What species is Zic family member 3 specific to?", "Zic family member 3"),
        EditKey("What species is ZIC-3 specific to?", "ZIC-3"),
    )
    assert edit.key_texts() == ZIC3.key_texts() == tuple(k.text for k in edit.index_keys())
    assert edit.spec() == ZIC3.__class__(**{**ZIC3.__dict__, "target_true": None})
    regex = EditSpec("label", "", "", kind=EditKind.REGEX, pattern="x", replacement="y")
    assert regex.key_texts() == ()


def test_aliases_are_validated_like_other_key_texts() -> None:
    limits = Limits(max_aliases=2)
    check_edit_spec(ZIC3, "edits[0]", limits)
    with pytest.raises(InvalidArgument, match=r"edits\[0\]\.aliases has 3 entries; the limit is 2"):
        check_edit_spec(replace(ZIC3, aliases=("a", "b", "c")), "edits[0]", limits)
    with pytest.raises(InvalidArgument, match=r"aliases\[1\] is empty"):
        check_edit_spec(replace(ZIC3, aliases=("a", " ")), "edits[0]", limits)
    with pytest.raises(InvalidArgument, match=r"aliases\[0\] 'zic3' repeats the subject"):
        check_edit_spec(replace(ZIC3, aliases=("zic3",)), "edits[0]", limits)
    with pytest.raises(InvalidArgument, match=r"aliases\[1\] 'zic  A' repeats aliases\[0\]"):
        check_edit_spec(replace(ZIC3, aliases=("Zic A", "zic  A")), "edits[0]", limits)
    regex = EditSpec("label", "", "", kind=EditKind.REGEX, pattern="x", replacement="y", aliases=("z",))
    with pytest.raises(InvalidArgument, match=r"aliases must be empty for a regex edit"):
        check_edit_spec(regex, "edits[0]", limits)


def test_the_memory_indexes_alias_keys_and_keeps_aliases_across_a_restart_and_an_update(tmp_path: Path) -> None:
    embedder = HashEmbedder(dim=256)
    memory = EditMemory(tmp_path, embedder, "hash-v1")
    (edit,) = memory.add("ns", [ZIC3])
    other = memory.add("ns", [EditSpec("BBC One", "BBC One, by", "Sega")])[0]
    assert edit.aliases == ZIC3.aliases
    hits = memory.search("ns", embedder.vector("What is Zic family member 3 specific to?"), k=1)
    assert [h.edit.id for h in hits] == [edit.id]
    assert hits[0].similarity == pytest.approx(
        float(embedder.vector("What is Zic family member 3 specific to?")
              @ embedder.vector("What species is Zic family member 3 specific to?")), abs=1e-5)
    memory.close()

    memory = EditMemory(tmp_path, embedder, "hash-v1")
    assert memory.get("ns", edit.id).aliases == ZIC3.aliases
    updated = memory.update("ns", edit.id, replace(ZIC3, aliases=("Zinc finger 3",)))
    assert updated.aliases == ("Zinc finger 3",) and updated.version == 2
    hits = memory.search("ns", embedder.vector("What is Zic family member 3 specific to?"), k=2)
    assert {h.edit.id for h in hits} == {edit.id, other.id}  # the old alias key is gone: no longer the best match
    assert hits[0].similarity < 0.9
    (current, history) = memory.history("ns", edit.id)
    assert current.aliases == ("Zinc finger 3",) and history[0].aliases == ZIC3.aliases
    events = memory.events("ns", 10, "", edit.id).events
    assert json.loads(events[-1].before_json)["aliases"] == list(ZIC3.aliases)
    assert json.loads(events[-1].after_json)["aliases"] == ["Zinc finger 3"]
    memory.close()


def test_both_stores_keep_aliases_and_one_key_per_alias(store_on_each_backend: EditStore) -> None:
    store = store_on_each_backend
    vectors = np.eye(8, dtype=np.float32)[: len(ZIC3.key_texts())]  # (n_keys, 8)
    (edit,), changes = store.insert("ns", [ZIC3], [vectors])
    assert len(changes.add_ids) == 4 and store.get("ns", edit.id).aliases == ZIC3.aliases
    assert sorted(text for _, text in store.key_texts()) == sorted(ZIC3.key_texts())


def test_an_edit_written_to_json_before_aliases_reads_back_with_none() -> None:
    fields = json.loads(edit_to_json(make_edit()))
    del fields["aliases"]
    assert edit_from_json(json.dumps(fields)).aliases == ()


def test_the_gate_lets_in_a_query_naming_only_an_alias_and_keeps_other_queries_out(
    artifact: GateArtifact, encoder: SentenceEncoder,
) -> None:
    """The alias questions are not the alias key's own wording, so the key's similarity alone does not carry them:
    read with the edit's subject instead of the alias, the alias key scores "Where is the Seattle Needle located?"
    0.06 under gate v2 (threshold 0.235); read with the alias, 0.79. The same edit without the alias: 0.00."""
    plain = make_edit("a" * 32, prompt="The Space Needle is located in the city of", subject="Space Needle",
                      target_new="Taipei")
    aliased = replace(plain, id="b" * 32, aliases=("Seattle Needle",))
    gate = ClassifierGate(artifact, encoder)
    gate.warm([plain, aliased])

    def score(text: str, edit: object) -> float:
        query = encoder.encode_text(text)
        keys = encoder.encode(list(edit.key_texts()))  # type: ignore[attr-defined]
        return gate.scores(query, [Hit(edit, float(np.max(keys @ query.vector)))])[0]  # type: ignore[arg-type]

    for alias_question in ("Where is the Seattle Needle located?", "In which city is the Seattle Needle?"):
        assert score(alias_question, plain) < artifact.threshold <= score(alias_question, aliased), alias_question
    assert score("The Space Needle is located in the city of", aliased) >= artifact.threshold
    # the alias under another relation, and another landmark under the edit's relation, stay out
    for unrelated in ("The Seattle Needle was designed by", "The Eiffel Tower is located in the city of"):
        assert score(unrelated, aliased) < artifact.threshold, unrelated
