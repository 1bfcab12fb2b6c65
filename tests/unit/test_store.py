"""The edit store's contract, on both backends (SQLite, and PostgreSQL where its server binaries are installed),
and what only SQLite's files can go through (damage, a full disk, permissions)."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from server.errors import DiskFull, EditNotFound, ResourceExhausted, StorageFailed
from server.memory.store import EditStore
from server.types import Edit, EditSpec
from tests.unit.fakes import make_spec

pytest_plugins = ("tests.postgres",)

DIM = 8


def spec_vectors(spec: EditSpec, seed: int) -> np.ndarray:
    """(n_keys, DIM) unit rows, distinct per seed."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(1 + len(spec.paraphrases), DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def numbered_spec(i: int) -> EditSpec:
    return make_spec(subject=f"S{i}", prompt=f"Where is S{i} located", target_new=f"T{i}",
                     paraphrases=(f"S{i} is in", f"The place of S{i} is"))


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    if request.param == "sqlite":
        return tmp_path / "sub" / "edits.sqlite"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(location: Path | str):
    s = EditStore(location)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path):
    s = EditStore(tmp_path / "edits.sqlite")
    yield s
    s.close()


def insert(store: EditStore, namespace: str, *specs: EditSpec, seed: int = 0) -> list[tuple[Edit, list[int]]]:
    """The stored edits, each with the key ids the index is to add for it."""
    edits, changes = store.insert(namespace, specs, [spec_vectors(s, seed + i) for i, s in enumerate(specs)])
    bounds = np.cumsum([0, *(len(e.key_texts()) for e in edits)])
    return [(e, changes.add_ids[a:b]) for e, a, b in zip(edits, bounds[:-1], bounds[1:], strict=True)]


def test_insert_then_get_round_trips_every_field(store: EditStore) -> None:
    spec = make_spec(paraphrases=("France's capital is", "Capital city of France:"), target_true="Paris")
    [(edit, key_ids)] = insert(store, "ns", spec)
    assert len(key_ids) == 3 and len(set(key_ids)) == 3
    got = store.get("ns", edit.id)
    assert got == edit
    assert (got.subject, got.prompt, got.target_new, got.target_true, got.paraphrases) == (
        spec.subject, spec.prompt, spec.target_new, spec.target_true, spec.paraphrases)
    assert got.namespace == "ns"


def test_target_true_none_round_trips(store: EditStore) -> None:
    [(edit, _)] = insert(store, "ns", make_spec(target_true=None))
    assert store.get("ns", edit.id).target_true is None


def test_stored_vectors_round_trip(store: EditStore) -> None:
    spec = numbered_spec(1)
    vectors = spec_vectors(spec, 42)
    _, changes = store.insert("ns", [spec], [vectors])
    key_ids = changes.add_ids
    stored = {k.key_id: k for k in store.iter_keys()}
    assert sorted(stored) == sorted(key_ids)
    for key_id, row in zip(key_ids, vectors, strict=True):
        assert stored[key_id].namespace == "ns"
        np.testing.assert_array_equal(stored[key_id].vector, row)
    assert [t for _, t in store.key_texts()] == [spec.prompt, *spec.paraphrases]


def test_get_unknown_id_raises_not_found(store: EditStore) -> None:
    with pytest.raises(EditNotFound):
        store.get("ns", "f" * 32)


def test_paging_continues_across_pages_with_totals(store: EditStore) -> None:
    specs = [numbered_spec(i) for i in range(7)]
    inserted = [e for e, _ in insert(store, "ns", *specs)]
    insert(store, "other", numbered_spec(99))  # must not appear or count
    seen = []
    after = 0
    pages = 0
    while True:
        edits, next_seq, total = store.page("ns", after, 3)
        pages += 1
        assert total == len(specs)
        assert len(edits) <= 3
        seen.extend(edits)
        if next_seq is None:
            break
        assert next_seq > after
        after = next_seq
    assert pages == 3
    assert [e.id for e in seen] == [e.id for e in inserted]  # oldest first, no duplicates, none missing


def test_page_exactly_full_has_no_continuation(store: EditStore) -> None:
    insert(store, "ns", numbered_spec(0), numbered_spec(1))
    edits, next_seq, total = store.page("ns", 0, 2)
    assert len(edits) == 2 and next_seq is None and total == 2


def test_page_of_empty_namespace(store: EditStore) -> None:
    assert store.page("nobody", 0, 10) == ([], None, 0)


def test_delete_removes_edit_and_its_keys(store: EditStore) -> None:
    (a, a_keys), (b, b_keys) = insert(store, "ns", numbered_spec(0), numbered_spec(1))
    assert set(store.edits_for_keys("ns", a_keys + b_keys)) == set(a_keys + b_keys)
    deleted, restored, changes = store.delete("ns", a.id)
    assert (deleted, restored) == (a, None)
    assert sorted(changes.remove_ids) == sorted(a_keys) and not changes.add_ids
    remaining = store.edits_for_keys("ns", a_keys + b_keys)
    assert set(remaining) == set(b_keys)
    assert all(e.id == b.id for e in remaining.values())
    assert store.count_keys() == len(b_keys)
    with pytest.raises(EditNotFound):
        store.get("ns", a.id)
    with pytest.raises(EditNotFound):
        store.delete("ns", a.id)
    assert [e.id for e in store.page("ns", 0, 10)[0]] == [b.id]


def test_edits_for_keys_of_nothing(store: EditStore) -> None:
    assert store.edits_for_keys("ns", []) == {}
    assert store.edits_for_keys("ns", [12345]) == {}


def test_insert_with_wrong_vector_count_stores_nothing(store: EditStore) -> None:
    insert(store, "ns", numbered_spec(0))
    before_generation = store.generation()
    before_keys = store.count_keys()
    good, bad = numbered_spec(1), numbered_spec(2)
    # The second spec has three key texts but only two vectors: zip(strict=True) raises mid-insert.
    with pytest.raises(ValueError):
        store.insert("ns", [good, bad], [spec_vectors(good, 1), spec_vectors(bad, 2)[:2]])
    assert store.page("ns", 0, 10)[2] == 1
    assert store.count_keys() == before_keys
    assert store.generation() == before_generation


def test_insert_with_fewer_vector_groups_than_specs_stores_nothing(store: EditStore) -> None:
    specs = [numbered_spec(0), numbered_spec(1)]
    with pytest.raises(ValueError):
        store.insert("ns", specs, [spec_vectors(specs[0], 0)])
    assert store.page("ns", 0, 10) == ([], None, 0)
    assert store.count_keys() == 0
    # The store is still usable after the rollback.
    insert(store, "ns", *specs)
    assert store.page("ns", 0, 10)[2] == 2


def test_generation_increases_on_every_write(store: EditStore) -> None:
    g0 = store.generation()
    [(edit, key_ids)] = insert(store, "ns", numbered_spec(0))
    g1 = store.generation()
    store.replace_vectors({k: np.ones(DIM, dtype=np.float32) / np.sqrt(DIM) for k in key_ids})
    g2 = store.generation()
    store.delete("ns", edit.id)
    g3 = store.generation()
    assert g0 < g1 < g2 < g3


def test_reads_do_not_change_generation(store: EditStore) -> None:
    [(edit, key_ids)] = insert(store, "ns", numbered_spec(0))
    g = store.generation()
    store.get("ns", edit.id)
    store.page("ns", 0, 5)
    store.edits_for_keys("ns", key_ids)
    list(store.iter_keys())
    assert store.generation() == g


def test_replace_vectors_overwrites_by_key_id(store: EditStore) -> None:
    [(_, key_ids)] = insert(store, "ns", numbered_spec(0))
    new = np.zeros(DIM, dtype=np.float32)
    new[3] = 1.0
    store.replace_vectors({key_ids[1]: new})
    vectors = {k.key_id: k.vector for k in store.iter_keys()}
    np.testing.assert_array_equal(vectors[key_ids[1]], new)
    assert not np.array_equal(vectors[key_ids[0]], new)


def test_iter_keys_crosses_batches(store: EditStore) -> None:
    inserted = insert(store, "ns", *(numbered_spec(i) for i in range(4)))  # 12 keys
    all_ids = sorted(k for _, keys in inserted for k in keys)
    assert [k.key_id for k in store.iter_keys(batch=5)] == all_ids


def test_data_persists_after_close_and_reopen(location: Path | str) -> None:
    store = EditStore(location)
    [(edit, key_ids)] = insert(store, "ns", numbered_spec(0))
    store.set_meta("encoder", "enc-a")
    generation = store.generation()
    vectors = {k.key_id: k.vector.copy() for k in store.iter_keys()}
    store.close()

    reopened = EditStore(location)
    try:
        assert reopened.get("ns", edit.id) == edit
        assert reopened.generation() == generation
        assert reopened.get_meta("encoder") == "enc-a"
        assert set(reopened.edits_for_keys("ns", key_ids)) == set(key_ids)
        for key in reopened.iter_keys():
            np.testing.assert_array_equal(key.vector, vectors[key.key_id])
    finally:
        reopened.close()


def test_namespaces_isolate_get_and_delete(store: EditStore) -> None:
    [(edit, _)] = insert(store, "alpha", numbered_spec(0))
    with pytest.raises(EditNotFound):
        store.get("beta", edit.id)
    with pytest.raises(EditNotFound):
        store.delete("beta", edit.id)
    assert store.get("alpha", edit.id) == edit  # the failed delete left it alone
    assert store.page("beta", 0, 10)[2] == 0


def test_meta_round_trips_and_replaces(store: EditStore) -> None:
    assert store.get_meta("x") is None
    store.set_meta("x", "1")
    store.set_meta("x", "2")
    assert store.get_meta("x") == "2"


def test_batch_over_the_namespace_limit_is_refused_whole(store: EditStore) -> None:
    specs = [numbered_spec(i) for i in range(3)]
    store.insert("ns", specs[:2], [spec_vectors(s, i) for i, s in enumerate(specs[:2])], max_edits=3)
    with pytest.raises(ResourceExhausted, match="has 2 edits; adding 2 would pass its limit of 3"):
        store.insert("ns", [specs[2], numbered_spec(9)], [spec_vectors(specs[2], 2), spec_vectors(numbered_spec(9), 9)],
                     max_edits=3)
    assert store.page("ns", 0, 10)[2] == 2
    store.insert("other", specs, [spec_vectors(s, i) for i, s in enumerate(specs)], max_edits=3)  # per namespace
    store.insert("ns", specs[2:], [spec_vectors(specs[2], 2)], max_edits=3)  # exactly at the limit
    assert store.page("ns", 0, 10)[2] == 3


# --- isolation, damage, a full disk, permissions (issue 23, items 3, 4, 7, 11) ----------------------------------

def test_edits_for_keys_leaves_out_other_namespaces_keys(store: EditStore) -> None:
    [(_, a_keys)] = insert(store, "a", numbered_spec(0))
    [(b, b_keys)] = insert(store, "b", numbered_spec(1))
    # A lying index hands namespace b's key ids to a search in namespace a: none of b's edits come back.
    assert store.edits_for_keys("a", a_keys + b_keys).keys() == set(a_keys)
    assert {e.id for e in store.edits_for_keys("b", a_keys + b_keys).values()} == {b.id}


def damage_a_page(path: Path) -> None:
    """Overwrites the middle of the file's second page (the edits table's first page), keeping its size."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page + 8 : 2 * page - 8] = b"\xa5" * (page - 16)
    path.write_bytes(bytes(data))


def test_a_damaged_store_is_refused_at_open_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "edits.sqlite"
    store = EditStore(path)
    insert(store, "ns", *(numbered_spec(i) for i in range(20)))
    store.close()
    damage_a_page(path)
    with pytest.raises(StorageFailed, match=r"edits\.sqlite is damaged"):
        EditStore(path)


def test_a_store_with_a_damaged_header_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "edits.sqlite"
    EditStore(path).close()
    data = bytearray(path.read_bytes())
    data[:16] = b"not a database!\0"
    path.write_bytes(bytes(data))
    with pytest.raises(StorageFailed, match=r"edits\.sqlite is damaged"):
        EditStore(path)


def test_a_full_disk_is_disk_full_and_writes_resume_once_there_is_room(sqlite_store: EditStore) -> None:
    store = sqlite_store
    insert(store, "ns", numbered_spec(0))
    (pages,) = store._db.execute("PRAGMA page_count").fetchone()
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL, as on a full disk
    with pytest.raises(DiskFull, match="disk holding .*edits.sqlite is full"):
        insert(store, "ns", *(numbered_spec(i) for i in range(1, 40)))
    assert store.page("ns", 0, 100)[2] == 1  # nothing of the refused batch was stored
    store._db.execute("PRAGMA max_page_count = 1000000")
    insert(store, "ns", numbered_spec(41))
    assert store.page("ns", 0, 100)[2] == 2


def test_after_a_storage_failure_writes_stop_until_reopened(tmp_path: Path) -> None:
    path = tmp_path / "edits.sqlite"
    store = EditStore(path)
    insert(store, "ns", *(numbered_spec(i) for i in range(20)))
    store._db.execute("PRAGMA cache_size = 0")  # read pages from the file, where the damage is
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage_a_page(path)
    with pytest.raises(StorageFailed, match="damaged"):
        store.page("ns", 0, 100)
    with pytest.raises(StorageFailed, match="writes to .*edits.sqlite are stopped until the server restarts"):
        insert(store, "other", numbered_spec(99))
    store.close()


def test_store_files_are_private_to_the_servers_user(tmp_path: Path) -> None:
    path = tmp_path / "data" / "edits.sqlite"
    store = EditStore(path)
    insert(store, "ns", numbered_spec(0))
    try:
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for name in ("edits.sqlite", "edits.sqlite-wal", "edits.sqlite-shm"):
            assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
    finally:
        store.close()


def test_an_existing_world_readable_store_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "edits.sqlite"
    EditStore(path).close()
    path.chmod(0o644)
    EditStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
