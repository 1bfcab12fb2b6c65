"""The approximate namespace index on small sizes with a low threshold: exact results where the re-ranking covers
every vector, deletes never returned, persistence, background rebuilds, an HNSW index from disk replaced."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from server.config import build_config
from server.memory.ann import AnnSettings, is_approximate
from server.memory.edit_memory import EditMemory
from server.memory.index import NamespaceIndex
from tests.unit.fakes import HashEmbedder, make_spec

DIM = 16
N = 300
# refine_factor × 8 above N: every vector is re-ranked exactly, so results must equal the exact index's (the
# PQ codes alone, 4 dims to 4 bits, would not: on 16-dim random vectors their scores are coarse).
EXHAUSTIVE = AnnSettings(threshold=100, refine_factor=1000, rebuild_fraction=0.2)
FEW_CANDIDATES = AnnSettings(threshold=100, refine_factor=1, rebuild_fraction=1.0)


def unit_rows(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


VECTORS = unit_rows(N, 0)
IDS = np.arange(1000, 1000 + N, dtype=np.int64)
QUERIES = unit_rows(20, 1)


def exact(query: np.ndarray, live: np.ndarray, n: int) -> list[int]:
    sims = VECTORS[live] @ query
    return IDS[live][np.argsort(-sims)[:n]].tolist()


def built(settings: AnnSettings = EXHAUSTIVE) -> NamespaceIndex:
    index = NamespaceIndex(DIM, settings)
    index.add("big", IDS[:150], VECTORS[:150])  # crosses the threshold: a background build starts
    index.add("big", IDS[150:], VECTORS[150:])  # added while it may be running
    index.add("small", IDS[:10], VECTORS[:10])
    assert index.wait_for_builds(60)
    return index


def kind(index: NamespaceIndex, namespace: str) -> str:
    return "approximate" if is_approximate(index._by_namespace[namespace]) else "flat"


def test_large_namespace_becomes_approximate_and_matches_the_exact_index() -> None:
    index = built()
    assert kind(index, "big") == "approximate" and kind(index, "small") == "flat"
    assert index.size("big") == N
    live = np.ones(N, dtype=bool)
    for query in QUERIES:
        ids, sims = index.search("big", query, 8)
        assert ids.tolist() == exact(query, live, 8)
        assert list(sims) == sorted(sims, reverse=True)


def test_deleted_vectors_are_never_returned() -> None:
    index = built(AnnSettings(threshold=100, refine_factor=1000, rebuild_fraction=1.0))  # tombstones stay
    deleted = IDS[::7]
    index.remove("big", deleted.tolist())
    live = ~np.isin(IDS, deleted)
    assert kind(index, "big") == "approximate" and index.size("big") == int(live.sum())
    for query in QUERIES:
        ids, _ = index.search("big", query, 8)
        assert ids.tolist() == exact(query, live, 8)
        everything, _ = index.search("big", query, N)
        assert not set(everything.tolist()) & set(deleted.tolist())
        assert len(everything) == live.sum()


def test_a_search_past_many_tombstones_still_returns_n_live_ids() -> None:
    index = built(FEW_CANDIDATES)  # tombstones stay; each pass asks for few candidates
    nearest = [exact(q, np.ones(N, dtype=bool), 20) for q in QUERIES]
    deleted = sorted({i for ids in nearest for i in ids[:12]})  # each query's 12 nearest
    index.remove("big", deleted)
    for query in QUERIES:
        ids, _ = index.search("big", query, 8)
        assert len(ids) == 8 and not set(ids.tolist()) & set(deleted)


def test_an_hnsw_index_from_an_earlier_version_is_served_then_replaced(tmp_path: Path) -> None:
    hnsw = faiss.IndexIDMap2(faiss.IndexHNSWFlat(DIM, 8, faiss.METRIC_INNER_PRODUCT))
    hnsw.add_with_ids(VECTORS, IDS)
    (tmp_path / "ns000000.faiss").write_bytes(faiss.serialize_index(hnsw).tobytes())
    data = (tmp_path / "ns000000.faiss").read_bytes()
    manifest = {"generation": 3, "dim": DIM, "namespaces": {"big": "ns000000.faiss"},
                "sha256": {"ns000000.faiss": hashlib.sha256(data).hexdigest()}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    loaded = NamespaceIndex.load(tmp_path, DIM, generation=3, approximate=EXHAUSTIVE)
    assert loaded is not None and loaded.size("big") == N
    assert len(loaded.search("big", QUERIES[0], 8)[0]) == 8  # served while the rebuild runs
    assert loaded.wait_for_builds(60)
    assert isinstance(faiss.downcast_index(loaded._by_namespace["big"].index), faiss.IndexRefine)
    for query in QUERIES:
        assert loaded.search("big", query, 8)[0].tolist() == exact(query, np.ones(N, dtype=bool), 8)


def test_tombstones_survive_a_save_and_load(tmp_path: Path) -> None:
    index = built(AnnSettings(threshold=100, refine_factor=1000, rebuild_fraction=1.0))
    index.remove("big", IDS[:40].tolist())
    before = [index.search("big", q, 8)[0].tolist() for q in QUERIES]
    index.save(tmp_path, generation=7)
    loaded = NamespaceIndex.load(tmp_path, DIM, generation=7)
    assert loaded is not None
    assert kind(loaded, "big") == "approximate" and loaded.size("big") == N - 40 and loaded.size("small") == 10
    assert [loaded.search("big", q, 8)[0].tolist() for q in QUERIES] == before
    loaded.remove("big", IDS[40:45].tolist())  # deletes keep working on a loaded approximate index
    assert loaded.size("big") == N - 45


def test_a_rebuild_drops_tombstones_in_the_background_and_keeps_later_changes() -> None:
    index = built()
    deleted = IDS[: N // 4]  # past rebuild_fraction: a rebuild starts
    index.remove("big", deleted.tolist())
    index.remove("big", IDS[N // 4 : N // 4 + 5].tolist())  # while it may be running
    assert index.wait_for_builds(60)
    live = ~np.isin(IDS, IDS[: N // 4 + 5])
    big = index._by_namespace["big"]
    assert kind(index, "big") == "approximate" and index.size("big") == live.sum()
    assert big.ntotal <= live.sum() + 5  # the 75 tombstones are gone; the 5 later deletes may be tombstones
    for query in QUERIES:
        assert index.search("big", query, 8)[0].tolist() == exact(query, live, 8)


def test_a_namespace_that_shrinks_goes_back_to_flat() -> None:
    index = built()
    index.remove("big", IDS[: N - 40].tolist())  # 40 left: under half the threshold
    assert index.wait_for_builds(60)
    assert kind(index, "big") == "flat" and index.size("big") == 40
    live = np.zeros(N, dtype=bool)
    live[N - 40 :] = True
    assert index.search("big", QUERIES[0], 8)[0].tolist() == exact(QUERIES[0], live, 8)


@pytest.mark.parametrize("threshold", [0, 10_000])
def test_under_the_threshold_or_switched_off_the_index_stays_flat(threshold: int) -> None:
    index = built(AnnSettings(threshold=threshold))
    assert kind(index, "big") == "flat"
    assert index.search("big", QUERIES[0], 8)[0].tolist() == exact(QUERIES[0], np.ones(N, dtype=bool), 8)


def test_edit_memory_deletes_are_honoured_on_an_approximate_namespace_and_across_a_restart(tmp_path: Path) -> None:
    settings = AnnSettings(threshold=40, refine_factor=1000, rebuild_fraction=1.0)
    embedder = HashEmbedder(dim=256)  # few bucket collisions: each prompt is its own nearest key
    memory = EditMemory(tmp_path, embedder, "hash", approximate=settings)
    edits = memory.add("ns", [make_spec(f"City{i}", f"City{i} lies in country{i % 7}", f"T{i}") for i in range(60)])
    assert memory.wait_for_index(60)
    assert is_approximate(memory._index._by_namespace["ns"])
    query = embedder.vector("City3 lies in country3")
    assert memory.search("ns", query, 1)[0].edit.id == edits[3].id
    memory.delete("ns", edits[3].id)
    assert edits[3].id not in {h.edit.id for h in memory.search("ns", query, 60)}
    memory.close()
    reopened = EditMemory(tmp_path, embedder, "hash", approximate=settings)  # from the saved files
    assert is_approximate(reopened._index._by_namespace["ns"])
    found = reopened.search("ns", query, 60)
    assert edits[3].id not in {h.edit.id for h in found} and len(found) == 59
    reopened.close()


def test_the_threshold_is_a_setting() -> None:
    assert build_config(overrides={"approximate_index_threshold": 0}).approximate_index_threshold == 0
    with pytest.raises(ValueError, match="approximate_index_threshold"):
        build_config(overrides={"approximate_index_threshold": -1})
