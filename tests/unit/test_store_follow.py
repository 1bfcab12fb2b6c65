"""A shared (PostgreSQL) edit store: each process follows the others' writes by generation, keeps answering
queries from its copy while the database is down, and reconnects once it is back; the ledger lives there too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from server.errors import FailedPrecondition, StorageFailed
from server.memory.edit_memory import EditMemory
from server.memory.store import EditStore
from server.parametric.deltas import WeightDelta
from server.parametric.ledger import Ledger
from server.types import EditKind, EditSpec
from tests.postgres import LocalPostgres
from tests.unit.fakes import HashEmbedder
from tests.unit.test_store import insert, numbered_spec

pytest_plugins = ("tests.postgres",)


@pytest.fixture
def two(postgres_url: str) -> Iterator[tuple[EditStore, EditStore]]:
    a, b = EditStore(postgres_url), EditStore(postgres_url)
    yield a, b
    a.close()
    b.close()


def index_after(followed_index: dict, namespace: str) -> tuple[set[int], set[int]]:
    changes = followed_index[namespace]
    return set(changes.remove_ids), set(changes.add_ids)


def test_the_other_process_follows_adds_updates_supersessions_and_deletes(two: tuple[EditStore, EditStore]) -> None:
    a, b = two
    [(first, first_keys)] = insert(a, "ns", numbered_spec(0))
    followed = b.follow()
    assert index_after(followed.index, "ns") == (set(first_keys), set(first_keys))
    assert [e.id for e in followed.live] == [first.id]
    assert b.edits_for_keys("ns", first_keys).keys() == set(first_keys)
    assert b.follow().index == {}  # nothing new

    updated, changes = b.update("ns", first.id, numbered_spec(5), np.eye(3, 8, dtype=np.float32))
    followed = a.follow()
    assert index_after(followed.index, "ns") == (set(first_keys) | set(changes.add_ids), set(changes.add_ids))
    assert [e.prompt for e in followed.live] == [updated.prompt]

    edits, _ = a.insert("ns", [numbered_spec(6)], [np.eye(3, 8, dtype=np.float32)], replaces=[first.id])
    newer = edits[-1]
    followed = b.follow()
    removed, added = index_after(followed.index, "ns")
    assert set(changes.add_ids) <= removed and not added & set(changes.add_ids)  # the superseded one leaves
    assert {e.id for e in b.edits_for_keys("ns", sorted(removed)).values()} == {newer.id}

    b.delete("ns", newer.id)  # restores the superseded one
    followed = a.follow()
    assert [e.id for e in followed.live] == [first.id]
    assert {e.id for e in a.edits_for_keys("ns", sorted(index_after(followed.index, "ns")[1])).values()} == {first.id}


def test_following_is_idempotent_over_writes_already_applied(two: tuple[EditStore, EditStore]) -> None:
    a, b = two
    insert(b, "ns", numbered_spec(0))  # b's own write, right after what b followed: counted at once
    assert b.follow().index == {}
    insert(a, "ns", numbered_spec(1))
    [(own, own_keys)] = insert(b, "ns", numbered_spec(2))  # after a gap (a's write): left for follow
    followed = b.follow()
    assert set(own_keys) <= index_after(followed.index, "ns")[1]
    assert b.generation() == followed.generation == 3
    assert a.generation() == 0  # its write came after b's, which it has not followed yet
    a.follow()
    assert a.generation() == 3


def test_the_regex_patches_and_counts_come_from_the_copy(two: tuple[EditStore, EditStore]) -> None:
    a, b = two
    spec = EditSpec(subject="", prompt="", target_new="", kind=EditKind.REGEX, pattern="colou?r", replacement="hue")
    [patch], _ = a.insert("ns", [spec], [np.empty((0, 8), dtype=np.float32)])
    b.follow()
    assert [e.id for e in b.live_of_kind("ns", EditKind.REGEX)] == [patch.id]
    assert b.count_edits_by_namespace() == {"ns": 1}


def test_a_stopped_database_fails_writes_keeps_the_copy_and_reconnects(tmp_path: Path) -> None:
    postgres = LocalPostgres()  # its own: this test stops it
    try:
        postgres.start()
        url = postgres.new_database()
        a, b = EditStore(url), EditStore(url)
        [(edit, keys)] = insert(a, "ns", numbered_spec(0))
        postgres.stop()
        with pytest.raises(StorageFailed, match="edit store at postgresql://.* cannot be reached"):
            insert(a, "ns", numbered_spec(1))
        with pytest.raises(StorageFailed, match="cannot be reached"):
            b.follow()
        assert a.edits_for_keys("ns", keys).keys() == set(keys)  # queries go on from the copy
        postgres.start()
        insert(a, "ns", numbered_spec(2))
        assert len(b.follow().live) == 2  # caught up by generation: nothing lost with the connection
        assert b.get("ns", edit.id) == edit
        a.close()
        b.close()
    finally:
        postgres.destroy()


def test_a_memory_over_a_shared_store_applies_followed_writes_to_its_index(postgres_url: str, tmp_path: Path) -> None:
    embedder = HashEmbedder(dim=8)
    writer = EditMemory(tmp_path / "a", embedder, "fake", store=EditStore(postgres_url))
    reader = EditMemory(tmp_path / "b", embedder, "fake", store=EditStore(postgres_url))
    try:
        [edit] = writer.add("ns", [numbered_spec(0)])
        query = embedder.encode([edit.prompt])[0]
        assert [h.edit.id for h in writer.search("ns", query, 1)] == [edit.id]  # read-your-writes
        assert reader.search("ns", query, 1) == []
        assert [e.id for e in reader.follow()] == [edit.id]
        assert [h.edit.id for h in reader.search("ns", query, 1)] == [edit.id]
        writer.delete("ns", edit.id)
        reader.follow()
        assert reader.search("ns", query, 1) == []
    finally:
        writer.close()
        reader.close()


def test_the_ledger_round_trips_in_postgresql_and_checks_the_model(postgres_url: str) -> None:
    ledger = Ledger(postgres_url, "model-a")
    assert ledger.baked_edits() == []
    delta = WeightDelta("e1", "model.layers.1.mlp.down_proj", torch.arange(4.0), torch.ones(3))
    assert delta.v is not None
    application = ledger.record("ns", "rome", {"layer": 1}, [delta], in_gate=False)
    ledger.close()
    reopened = Ledger(postgres_url, "model-a")
    try:
        [baked] = reopened.baked_edits("ns")
        assert (baked.edit_id, baked.application, baked.method, baked.modules) == (
            "e1", application, "rome", (delta.module,))
        [stored] = reopened.deltas()
        assert torch.equal(stored.u, delta.u) and stored.v is not None and torch.equal(stored.v, delta.v)
        assert reopened.baked_edits("other") == []
        with pytest.raises(FailedPrecondition, match="parametric deltas for model 'model-a'"):
            Ledger(postgres_url, "model-b")  # deltas only fit the weights they were computed on
        reopened.remove("ns", "e1")
        assert reopened.baked_edits() == [] and list(reopened.deltas()) == []
    finally:
        reopened.close()
