"""Edit kinds in the store and the memory: the schema migration, each kind's fields, regex patches unindexed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from server.config import Limits
from server.errors import InvalidArgument
from server.memory.edit_memory import EditMemory
from server.memory.store import SCHEMA, SCHEMA_VERSION, EditStore
from server.types import EditKind, EditSpec
from server.validation import check_edit_spec
from tests.unit.fakes import HashEmbedder, make_spec

ERASE = EditSpec("Eiffel Tower", "The Eiffel Tower stands in", "", target_true="Paris", kind=EditKind.ERASE)
PATCH = EditSpec("Pluto", "If asked whether Pluto is a planet, say it is a dwarf planet", "", kind=EditKind.PATCH,
                 paraphrases=("Is Pluto a planet?",))
REGEX = EditSpec("product name", "", "", kind=EditKind.REGEX, pattern=r"\bEditCash\b", replacement="editcache")


def test_a_version_1_store_migrates_its_edits_to_live_modify_edits_at_version_1(tmp_path: Path) -> None:
    path = tmp_path / "edits.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)  # the first release's schema, with no user_version
    db.execute(
        "INSERT INTO edits (id, namespace, subject, prompt, target_new, target_true, paraphrases, created_at) "
        "VALUES ('a' || hex(randomblob(15)), 'ns', 'Dante', 'Dante wrote in', 'German', NULL, '[\"x\"]', 12.5)"
    )
    db.commit()
    db.close()
    store = EditStore(path)
    try:
        edits, _, total = store.page("ns", 0, 10)
        assert total == 1
        (edit,) = edits
        assert (edit.kind, edit.version, edit.live, edit.supersedes) == (EditKind.MODIFY, 1, True, "")
        assert (edit.subject, edit.target_new, edit.paraphrases, edit.aliases) == ("Dante", "German", ("x",), ())
        assert edit.updated_at_unix_s == edit.created_at_unix_s == 12.5
        # Version 4 keyed it by its new object, normalised as a query's names are.
        assert [e.id for e in store.live_with_objects("ns", ["german"], 8)] == [edit.id]
        assert store.live_with_objects("ns", ["dante"], 8) == []
    finally:
        store.close()
    (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION == 5


def test_a_version_4_store_keys_its_erase_edits_by_the_answer_they_erase(tmp_path: Path) -> None:
    path = tmp_path / "edits.sqlite"
    store = EditStore(path)
    (erase,), _ = store.insert("ns", [ERASE], [np.zeros((1, 4), np.float32)])
    store.close()
    db = sqlite3.connect(path)  # as version 4 wrote it: erase edits had no object key
    db.execute("UPDATE edits SET object_key = ''")
    db.execute("PRAGMA user_version = 4")
    db.commit()
    db.close()
    store = EditStore(path)
    try:
        assert [e.id for e in store.live_with_objects("ns", ["paris"], 8)] == [erase.id]
    finally:
        store.close()


def test_a_store_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edits.sqlite"
    EditStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(Exception, match="newer than this server"):
        EditStore(path)


@pytest.mark.parametrize("spec", [ERASE, PATCH, REGEX])
def test_each_kind_round_trips_through_the_memory(tmp_path: Path, spec: EditSpec) -> None:
    memory = EditMemory(tmp_path, HashEmbedder(dim=32), "hash")
    try:
        (edit,) = memory.add("ns", [spec])
        assert memory.get("ns", edit.id) == edit
        assert edit.spec() == spec and edit.version == 1
    finally:
        memory.close()


def test_a_regex_patch_has_no_keys_and_is_never_retrieved(tmp_path: Path) -> None:
    embedder = HashEmbedder(dim=32)
    memory = EditMemory(tmp_path, embedder, "hash")
    try:
        (patch,) = memory.add("ns", [REGEX])
        assert memory.search("ns", embedder.vector("EditCash is a product"), 4) == []
        (fact,) = memory.add("ns", [make_spec()])
        assert [h.edit.id for h in memory.search("ns", embedder.vector(fact.prompt), 4)] == [fact.id]
        assert memory.page("ns", 10, "").total == 2
    finally:
        memory.close()
    reopened = EditMemory(tmp_path, embedder, "hash")  # the index rebuilt or loaded agrees with the store
    try:
        assert reopened.get("ns", patch.id).pattern == REGEX.pattern
    finally:
        reopened.close()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (EditSpec("x", "", "", kind=EditKind.REGEX, pattern="(unclosed"), "not a valid regular expression"),
        (EditSpec("x", "", "", kind=EditKind.REGEX, pattern="a*"), "matches the empty string"),
        (EditSpec("x", "", "", kind=EditKind.REGEX, pattern="(a)b", replacement=r"\2"), "does not fit the pattern"),
        (EditSpec("x", "", "", kind=EditKind.REGEX, pattern=""), "pattern is empty"),
        (EditSpec("x", "x is", "y", kind=EditKind.REGEX, pattern="a"), "prompt must be empty"),
        (EditSpec("Eiffel", "The Eiffel Tower is in", "Rome", kind=EditKind.ERASE), "target_new must be empty"),
        (EditSpec("Pluto", "Pluto is a planet", "yes", kind=EditKind.PATCH), "target_new must be empty"),
        (EditSpec("Pluto", "Say Pluto is a dwarf", "", kind=EditKind.PATCH, pattern="P"), "pattern must be empty"),
        (EditSpec("Dante", "Dante wrote in", "German", pattern="x"), "only regex patches"),
        (EditSpec("Mars", "Say Pluto is a dwarf planet", "", kind=EditKind.PATCH), "does not occur in prompt"),
    ],
)
def test_each_kind_refuses_the_fields_it_does_not_take(spec: EditSpec, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_edit_spec(spec, "edits[0]", Limits())


def test_every_kind_with_its_fields_passes_validation() -> None:
    for spec in (ERASE, PATCH, REGEX, make_spec(), EditSpec("Zorblax-7", "Zorblax-7 orbits", "Neptune",
                                                              kind=EditKind.INSERT)):
        check_edit_spec(spec, "edits[0]", Limits())


def test_a_batch_of_regex_patches_alone_embeds_nothing(tmp_path: Path) -> None:
    memory = EditMemory(tmp_path, HashEmbedder(dim=32), "hash")
    try:
        edits = memory.add("ns", [REGEX, REGEX])
        assert len({e.id for e in edits}) == 2
        assert memory.page("ns", 10, "").total == 2
    finally:
        memory.close()


def test_the_regex_patches_every_answer_reads_are_found_by_an_index_not_a_scan(tmp_path: Path) -> None:
    # The router reads a namespace's live regex patches on every answer: a scan would grow with the namespace.
    store = EditStore(tmp_path / "edits.sqlite")
    plan = " ".join(str(row) for row in store._db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM edits WHERE namespace = ? AND superseded_by = '' AND kind = ? ORDER BY seq",
        ("ns", EditKind.REGEX.value),
    ))
    store.close()
    assert "USING INDEX edits_by_kind" in plan and "TEMP B-TREE" not in plan
