from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from server.errors import EditNotFound, InvalidArgument, StorageFailed
from server.memory.edit_memory import EditMemory
from server.types import Edit
from tests.unit.fakes import HashEmbedder, make_spec

ENCODER = "hash-v1"

SPACE_NEEDLE = make_spec(
    subject="Space Needle", prompt="The Space Needle is located in the city of", target_new="Taipei",
    paraphrases=("Where can one find the Space Needle tower", "Space Needle sits in which town"),
)
EIFFEL = make_spec(
    subject="Eiffel Tower", prompt="The Eiffel Tower stands in", target_new="Rome",
    paraphrases=("Which city has the Eiffel Tower",),
)
DANTE = make_spec(subject="Dante", prompt="Dante wrote his poems in the language", target_new="German")
SPECS = (SPACE_NEEDLE, EIFFEL, DANTE)

# Queries that are not key texts themselves, but share most words with one edit.
PROBES = {
    "Space Needle": "the Space Needle is located in which city",
    "Eiffel Tower": "which city has the famous Eiffel Tower",
    "Dante": "Dante wrote poems in which language",
}


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder(dim=64)


@pytest.fixture
def memory(tmp_path: Path, embedder: HashEmbedder) -> Iterator[EditMemory]:
    m = EditMemory(tmp_path, embedder, ENCODER)
    yield m
    m.close()


def search_text(memory: EditMemory, embedder: HashEmbedder, namespace: str, text: str, k: int = 3):
    return memory.search(namespace, embedder.vector(text), k)


def snapshot(memory: EditMemory, embedder: HashEmbedder, namespace: str) -> list[list[tuple[str, float]]]:
    """Search results for every probe and every key text, as (edit id, similarity) lists."""
    texts = [*PROBES.values(), *(t for s in SPECS for t in (s.prompt, *s.paraphrases))]
    return [[(h.edit.id, round(h.similarity, 5)) for h in search_text(memory, embedder, namespace, t)] for t in texts]


def by_subject(edits: list[Edit]) -> dict[str, Edit]:
    return {e.subject: e for e in edits}


def test_add_returns_edits_in_order_with_fresh_ids(memory: EditMemory) -> None:
    edits = memory.add("ns", SPECS)
    assert [e.subject for e in edits] == [s.subject for s in SPECS]
    assert len({e.id for e in edits}) == len(SPECS)
    assert all(e.namespace == "ns" for e in edits)
    assert memory.get("ns", edits[1].id) == edits[1]


def test_search_finds_edit_by_prompt_paraphrase_and_probe(memory: EditMemory, embedder: HashEmbedder) -> None:
    edits = by_subject(memory.add("ns", SPECS))
    for spec in SPECS:
        want = edits[spec.subject].id
        for text in (spec.prompt, *spec.paraphrases):
            hits = search_text(memory, embedder, "ns", text)
            assert hits[0].edit.id == want, text
            assert hits[0].similarity == pytest.approx(1.0, abs=1e-5)  # the key text itself
        hits = search_text(memory, embedder, "ns", PROBES[spec.subject])
        assert hits[0].edit.id == want
        assert hits[0].similarity < 1.0


def test_search_returns_each_edit_once_best_first(memory: EditMemory, embedder: HashEmbedder) -> None:
    memory.add("ns", SPECS)
    hits = search_text(memory, embedder, "ns", PROBES["Space Needle"], k=3)
    assert len(hits) == 3
    assert len({h.edit.id for h in hits}) == 3
    sims = [h.similarity for h in hits]
    assert sims == sorted(sims, reverse=True)
    # The similarity reported is the best over the edit's key texts.
    q = embedder.vector(PROBES["Space Needle"])
    for hit in hits:
        best = max(float(embedder.vector(t) @ q) for t in hit.edit.key_texts())
        assert hit.similarity == pytest.approx(best, abs=1e-5)


def test_search_respects_k(memory: EditMemory, embedder: HashEmbedder) -> None:
    memory.add("ns", SPECS)
    assert len(search_text(memory, embedder, "ns", "city", k=1)) == 1
    assert len(search_text(memory, embedder, "ns", "city", k=2)) == 2


def test_search_returns_k_edits_even_when_one_edit_has_many_close_keys(
    memory: EditMemory, embedder: HashEmbedder,
) -> None:
    crowded = make_spec(subject="Paris", prompt="Paris is the capital of", target_new="Spain",
                        paraphrases=tuple(f"Paris is the capital of country {i}" for i in range(12)))
    other = make_spec(subject="Rome", prompt="Rome is the capital of", target_new="Chile")
    memory.add("ns", [crowded, other])
    hits = search_text(memory, embedder, "ns", "Paris is the capital of", k=2)
    assert {h.edit.subject for h in hits} == {"Paris", "Rome"}


def test_search_is_namespace_scoped(memory: EditMemory, embedder: HashEmbedder) -> None:
    [mine] = memory.add("alice", [SPACE_NEEDLE])
    assert search_text(memory, embedder, "bob", SPACE_NEEDLE.prompt) == []
    [theirs] = memory.add("bob", [SPACE_NEEDLE])
    assert [h.edit.id for h in search_text(memory, embedder, "alice", SPACE_NEEDLE.prompt)] == [mine.id]
    assert [h.edit.id for h in search_text(memory, embedder, "bob", SPACE_NEEDLE.prompt)] == [theirs.id]
    with pytest.raises(EditNotFound):
        memory.get("bob", mine.id)
    with pytest.raises(EditNotFound):
        memory.delete("bob", mine.id)
    assert memory.get("alice", mine.id) == mine


def test_delete_removes_edit_from_search(memory: EditMemory, embedder: HashEmbedder) -> None:
    edits = by_subject(memory.add("ns", SPECS))
    gone = edits["Space Needle"]
    assert memory.delete("ns", gone.id).edit == gone
    for text in (SPACE_NEEDLE.prompt, *SPACE_NEEDLE.paraphrases, PROBES["Space Needle"]):
        assert gone.id not in {h.edit.id for h in search_text(memory, embedder, "ns", text, k=5)}
    assert {h.edit.id for h in search_text(memory, embedder, "ns", "city", k=5)} == {
        edits["Eiffel Tower"].id, edits["Dante"].id}
    with pytest.raises(EditNotFound):
        memory.get("ns", gone.id)


def test_close_and_reopen_loads_index_and_gives_same_results(tmp_path: Path, embedder: HashEmbedder) -> None:
    first = EditMemory(tmp_path, embedder, ENCODER)
    first.add("ns", SPECS)
    first.add("other", [DANTE])
    before = snapshot(first, embedder, "ns")
    first.close()
    manifest = tmp_path / "index" / "manifest.json"
    assert manifest.exists()
    saved_at = manifest.stat().st_mtime_ns

    second = EditMemory(tmp_path, embedder, ENCODER)
    try:
        assert manifest.stat().st_mtime_ns == saved_at  # loaded, not rebuilt and re-saved
        assert snapshot(second, embedder, "ns") == before
        assert len(search_text(second, embedder, "other", DANTE.prompt)) == 1
    finally:
        second.close()


def test_missing_index_directory_is_rebuilt_from_store(tmp_path: Path, embedder: HashEmbedder) -> None:
    first = EditMemory(tmp_path, embedder, ENCODER)
    first.add("ns", SPECS)
    before = snapshot(first, embedder, "ns")
    first.close()
    shutil.rmtree(tmp_path / "index")

    second = EditMemory(tmp_path, embedder, ENCODER)
    try:
        assert snapshot(second, embedder, "ns") == before
        assert (tmp_path / "index" / "manifest.json").exists()  # the rebuild is saved for next time
    finally:
        second.close()


def test_corrupt_index_files_are_rebuilt_from_store(tmp_path: Path, embedder: HashEmbedder) -> None:
    first = EditMemory(tmp_path, embedder, ENCODER)
    first.add("ns", SPECS)
    before = snapshot(first, embedder, "ns")
    first.close()
    for path in (tmp_path / "index").glob("*.faiss"):
        path.write_bytes(b"\x00" * 16)

    second = EditMemory(tmp_path, embedder, ENCODER)
    try:
        assert snapshot(second, embedder, "ns") == before
    finally:
        second.close()


def test_stale_index_after_crash_is_rebuilt_with_new_edit(tmp_path: Path, embedder: HashEmbedder) -> None:
    first = EditMemory(tmp_path, embedder, ENCODER)
    first.add("ns", [SPACE_NEEDLE, EIFFEL])
    first.close()  # index files saved at this generation

    crashed = EditMemory(tmp_path, embedder, ENCODER)
    [late] = crashed.add("ns", [DANTE])  # committed to the store, but the index files are not saved
    deleted = crashed.delete("ns", by_subject(crashed.page("ns", 10, "").edits)["Eiffel Tower"].id).edit
    expected = snapshot(crashed, embedder, "ns")

    # "Restart" without close(): the saved index is older than the store.
    reopened = EditMemory(tmp_path, embedder, ENCODER)
    try:
        hits = search_text(reopened, embedder, "ns", DANTE.prompt)
        assert hits[0].edit.id == late.id
        assert deleted.id not in {h.edit.id for h in search_text(reopened, embedder, "ns", EIFFEL.prompt)}
        assert snapshot(reopened, embedder, "ns") == expected
    finally:
        reopened.close()
        crashed.close()


def test_list_pages_with_tokens(memory: EditMemory) -> None:
    specs = [make_spec(subject=f"S{i}", prompt=f"S{i} is in", target_new=f"T{i}") for i in range(5)]
    added = memory.add("ns", specs)
    memory.add("other", [DANTE])
    ids: list[str] = []
    token, pages = "", 0
    while True:
        page = memory.page("ns", 2, token)
        pages += 1
        assert page.total == 5
        assert len(page.edits) <= 2
        ids.extend(e.id for e in page.edits)
        if not page.next_page_token:
            break
        assert page.next_page_token != token
        token = page.next_page_token
    assert pages == 3
    assert ids == [e.id for e in added]


@pytest.mark.parametrize("token", ["garbage", "after:", "after:-1", "after:x", "before:3", "3", ":3", " after:1"])
def test_invalid_page_token_raises_invalid_argument(memory: EditMemory, token: str) -> None:
    memory.add("ns", [DANTE])
    with pytest.raises(InvalidArgument, match="page_token"):
        memory.page("ns", 10, token)


def stored_vectors(tmp_path: Path) -> dict[int, np.ndarray]:
    from server.memory.store import EditStore

    store = EditStore(tmp_path / "edits.sqlite")
    try:
        return {k.key_id: k.vector.copy() for k in store.iter_keys()}
    finally:
        store.close()


def test_changing_encoder_reembeds_stored_keys(tmp_path: Path) -> None:
    old = HashEmbedder(dim=64, salt="old")
    new = HashEmbedder(dim=64, salt="new")
    # The two mappings must differ for this test to mean anything.
    assert not np.allclose(old.vector(SPACE_NEEDLE.prompt), new.vector(SPACE_NEEDLE.prompt))

    first = EditMemory(tmp_path, old, "hash-old")
    edits = by_subject(first.add("ns", SPECS))
    first.close()

    second = EditMemory(tmp_path, new, "hash-new")
    try:
        # Searching with the new encoder's vectors finds each key text exactly (similarity 1).
        for spec in SPECS:
            for text in (spec.prompt, *spec.paraphrases):
                hits = search_text(second, new, "ns", text)
                assert hits[0].edit.id == edits[spec.subject].id
                assert hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    finally:
        second.close()

    vectors = stored_vectors(tmp_path)
    key_texts = [t for s in SPECS for t in (s.prompt, *s.paraphrases)]
    assert len(vectors) == len(key_texts)
    for (_, vector), text in zip(sorted(vectors.items()), key_texts, strict=True):
        np.testing.assert_allclose(vector, new.vector(text), atol=1e-6)


def test_same_encoder_name_does_not_reembed(tmp_path: Path) -> None:
    first_embedder = HashEmbedder(dim=64)
    first = EditMemory(tmp_path, first_embedder, ENCODER)
    first.add("ns", SPECS)
    first.close()

    second_embedder = HashEmbedder(dim=64)
    second = EditMemory(tmp_path, second_embedder, ENCODER)
    second.close()
    assert second_embedder.calls == []


def test_add_embeds_prompt_and_paraphrases_once_each(memory: EditMemory, embedder: HashEmbedder) -> None:
    embedder.calls.clear()
    memory.add("ns", [SPACE_NEEDLE, DANTE])
    assert embedder.calls == [[SPACE_NEEDLE.prompt, *SPACE_NEEDLE.paraphrases, DANTE.prompt]]


class BreakableEmbedder(HashEmbedder):
    """Returns one vector too few while `broken`, as a faulty encoder might."""

    broken = False

    def encode(self, texts):  # type: ignore[no-untyped-def]
        vectors = super().encode(texts)
        return vectors[:-1] if self.broken else vectors


def test_failed_add_leaves_memory_unchanged(tmp_path: Path) -> None:
    embedder = BreakableEmbedder(dim=64)
    memory = EditMemory(tmp_path, embedder, ENCODER)
    try:
        memory.add("ns", [DANTE])
        embedder.broken = True
        with pytest.raises(ValueError):
            memory.add("ns", [SPACE_NEEDLE, EIFFEL])
        embedder.broken = False
        assert memory.page("ns", 10, "").total == 1
        hits = search_text(memory, embedder, "ns", "Space Needle Eiffel Tower", k=5)
        assert {h.edit.subject for h in hits} == {"Dante"}
        memory.add("ns", [EIFFEL])  # still usable
        assert search_text(memory, embedder, "ns", EIFFEL.prompt)[0].edit.subject == "Eiffel Tower"
    finally:
        memory.close()


@pytest.mark.parametrize("token", ["after:²", "after:٣", "after:" + "9" * 30, "after:-1", "after:"])
def test_page_tokens_that_are_not_small_ascii_numbers_are_invalid(memory: EditMemory, token: str) -> None:
    with pytest.raises(InvalidArgument):
        memory.page("ns", 10, token)


# --- a lost store, a lying index, a failed save (issue 23, items 3, 4, 7) ------------------------------------

def test_an_emptied_store_is_refused_and_left_as_found(tmp_path: Path, embedder: HashEmbedder) -> None:
    first = EditMemory(tmp_path, embedder, ENCODER)
    first.add("ns", SPECS)
    first.close()
    (tmp_path / "edits.sqlite").write_bytes(b"")
    for extra in tmp_path.glob("edits.sqlite-*"):
        extra.unlink()
    with pytest.raises(StorageFailed, match=r"edits\.sqlite is empty but .*manifest\.json records \d+ writes"):
        EditMemory(tmp_path, embedder, ENCODER)
    assert (tmp_path / "edits.sqlite").stat().st_size == 0  # refused without writing


def test_a_store_older_than_the_index_is_refused(tmp_path: Path, embedder: HashEmbedder) -> None:
    first = EditMemory(tmp_path, embedder, ENCODER)
    first.add("ns", [SPACE_NEEDLE])
    first.close()
    backup = (tmp_path / "edits.sqlite").read_bytes()
    second = EditMemory(tmp_path, embedder, ENCODER)
    second.add("ns", [EIFFEL])
    second.close()
    (tmp_path / "edits.sqlite").write_bytes(backup)  # an older copy put back
    with pytest.raises(StorageFailed, match=r"acknowledged edits are missing"):
        EditMemory(tmp_path, embedder, ENCODER)


def test_index_files_swapped_between_namespaces_answer_no_other_namespace(
    tmp_path: Path, embedder: HashEmbedder
) -> None:
    first = EditMemory(tmp_path, embedder, ENCODER)
    [needle] = first.add("a", [SPACE_NEEDLE])
    first.add("b", [EIFFEL])
    first.close()
    manifest_path = tmp_path / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    files = manifest["namespaces"]
    files["a"], files["b"] = files["b"], files["a"]  # checksums still match their files
    manifest_path.write_text(json.dumps(manifest))

    second = EditMemory(tmp_path, embedder, ENCODER)
    try:
        assert [h.edit.id for h in search_text(second, embedder, "a", SPACE_NEEDLE.prompt)][:1] == [needle.id]
        assert all(h.edit.namespace == "b" for h in search_text(second, embedder, "b", SPACE_NEEDLE.prompt))
    finally:
        second.close()


def test_close_does_not_depend_on_saving_the_index(
    tmp_path: Path, embedder: HashEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = EditMemory(tmp_path, embedder, ENCODER)
    [edit] = memory.add("ns", [SPACE_NEEDLE])

    def full_disk(directory: Path, generation: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(memory._index, "save", full_disk)
    memory.close()  # no exception: the store is closed, the index is rebuilt at the next start
    reopened = EditMemory(tmp_path, embedder, ENCODER)
    try:
        assert search_text(reopened, embedder, "ns", SPACE_NEEDLE.prompt)[0].edit.id == edit.id
    finally:
        reopened.close()
