from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import server.files
from server.memory.index import MANIFEST, NamespaceIndex

DIM = 8


def unit(i: int, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[i] = 1.0
    return v


def towards(i: int, j: int, weight_j: float) -> np.ndarray:
    """A unit vector mostly along axis i, tilted towards axis j."""
    v = unit(i) + weight_j * unit(j)
    return (v / np.linalg.norm(v)).astype(np.float32)


@pytest.fixture
def index() -> NamespaceIndex:
    ix = NamespaceIndex(DIM)
    ix.add("a", np.array([10, 11, 12]), np.stack([unit(0), unit(1), unit(2)]))
    ix.add("b", np.array([20, 21]), np.stack([unit(3), unit(0)]))
    return ix


def test_nearest_neighbour_on_unit_vectors(index: NamespaceIndex) -> None:
    for axis, key_id in [(0, 10), (1, 11), (2, 12)]:
        ids, sims = index.search("a", towards(axis, (axis + 1) % 3, 0.3), 1)
        assert ids.tolist() == [key_id]
        assert sims[0] == pytest.approx(1 / np.sqrt(1 + 0.3**2), abs=1e-5)


def test_results_are_ordered_best_first(index: NamespaceIndex) -> None:
    ids, sims = index.search("a", towards(2, 0, 0.5), 3)
    assert ids.tolist()[:2] == [12, 10]
    assert list(sims) == sorted(sims, reverse=True)
    assert sims[0] == pytest.approx(1 / np.sqrt(1.25), abs=1e-5)
    assert sims[2] == pytest.approx(0.0, abs=1e-6)


def test_n_larger_than_index_returns_what_there_is(index: NamespaceIndex) -> None:
    ids, sims = index.search("b", unit(3), 50)
    assert sorted(ids.tolist()) == [20, 21]
    assert len(sims) == 2


def test_namespaces_are_isolated(index: NamespaceIndex) -> None:
    # Key 21 in "b" is exactly unit(0), but "a" never sees it, and vice versa.
    ids, _ = index.search("a", unit(3), 3)
    assert set(ids.tolist()) <= {10, 11, 12}
    ids, _ = index.search("b", unit(1), 5)
    assert set(ids.tolist()) <= {20, 21}
    assert index.size("a") == 3 and index.size("b") == 2 and index.size() == 5


def test_unknown_namespace_is_empty(index: NamespaceIndex) -> None:
    ids, sims = index.search("nobody", unit(0), 3)
    assert ids.size == 0 and sims.size == 0
    assert index.size("nobody") == 0
    index.remove("nobody", [10])  # no error
    assert index.size() == 5


def test_remove_drops_exactly_those_ids(index: NamespaceIndex) -> None:
    index.remove("a", [10])
    ids, _ = index.search("a", unit(0), 3)
    assert 10 not in ids.tolist()
    assert sorted(ids.tolist()) == [11, 12]
    # Removing from "a" does not touch "b", even for a vector equal to the removed one.
    ids, _ = index.search("b", unit(0), 1)
    assert ids.tolist() == [21]


def test_remove_everything_then_search_is_empty(index: NamespaceIndex) -> None:
    index.remove("b", [20, 21])
    ids, _ = index.search("b", unit(0), 3)
    assert ids.size == 0


def test_save_then_load_same_generation_gives_equal_results(index: NamespaceIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "ix", generation=7)
    loaded = NamespaceIndex.load(tmp_path / "ix", DIM, 7)
    assert loaded is not None
    assert loaded.size("a") == index.size("a") and loaded.size("b") == index.size("b")
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.normal(size=DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        for ns in ("a", "b"):
            want_ids, want_sims = index.search(ns, q, 3)
            got_ids, got_sims = loaded.search(ns, q, 3)
            assert got_ids.tolist() == want_ids.tolist()
            np.testing.assert_allclose(got_sims, want_sims, rtol=1e-6)


def test_save_overwrites_previous_save(index: NamespaceIndex, tmp_path: Path) -> None:
    index.save(tmp_path, generation=1)
    index.remove("a", [10, 11, 12])
    index.add("c", np.array([30]), unit(5)[None, :])
    index.save(tmp_path, generation=2)
    assert NamespaceIndex.load(tmp_path, DIM, 1) is None
    loaded = NamespaceIndex.load(tmp_path, DIM, 2)
    assert loaded is not None
    assert loaded.size("a") == 0
    assert loaded.search("c", unit(5), 1)[0].tolist() == [30]


def test_load_with_other_generation_is_none(index: NamespaceIndex, tmp_path: Path) -> None:
    index.save(tmp_path, generation=3)
    assert NamespaceIndex.load(tmp_path, DIM, 4) is None
    assert NamespaceIndex.load(tmp_path, DIM, 2) is None


def test_load_with_other_dim_is_none(index: NamespaceIndex, tmp_path: Path) -> None:
    index.save(tmp_path, generation=3)
    assert NamespaceIndex.load(tmp_path, DIM * 2, 3) is None


def test_load_from_missing_directory_is_none(tmp_path: Path) -> None:
    assert NamespaceIndex.load(tmp_path / "nothing here", DIM, 0) is None


@pytest.mark.parametrize("manifest", [
    "{not json",
    "",
    "[]",  # valid JSON, but not an object
    "null",
    '{"generation": 3}',
    '{"generation": 3, "dim": 8, "namespaces": ["a"]}',  # namespaces not a mapping
    '{"generation": 3, "dim": 8, "namespaces": {"a": 5}}',  # file name not a string
])
def test_load_with_corrupt_manifest_is_none(index: NamespaceIndex, tmp_path: Path, manifest: str) -> None:
    index.save(tmp_path, generation=3)
    (tmp_path / MANIFEST).write_text(manifest)
    assert NamespaceIndex.load(tmp_path, DIM, 3) is None


def test_load_with_corrupt_index_file_is_none(index: NamespaceIndex, tmp_path: Path) -> None:
    index.save(tmp_path, generation=3)
    for path in tmp_path.glob("*.faiss"):
        path.write_bytes(b"garbage" * 10)
    assert NamespaceIndex.load(tmp_path, DIM, 3) is None


def test_load_with_missing_index_file_is_none(index: NamespaceIndex, tmp_path: Path) -> None:
    index.save(tmp_path, generation=3)
    next(tmp_path.glob("*.faiss")).unlink()
    assert NamespaceIndex.load(tmp_path, DIM, 3) is None


def test_load_with_truncated_index_file_is_none(index: NamespaceIndex, tmp_path: Path) -> None:
    index.save(tmp_path, generation=3)
    path = next(tmp_path.glob("*.faiss"))
    path.write_bytes(path.read_bytes()[:40])
    assert NamespaceIndex.load(tmp_path, DIM, 3) is None


def test_an_index_file_overwritten_at_the_same_size_fails_its_checksum(index: NamespaceIndex, tmp_path: Path) -> None:
    index.save(tmp_path, generation=3)
    path = next(tmp_path.glob("*.faiss"))
    data = bytearray(path.read_bytes())
    data[-4 * DIM :] = np.full(DIM, 0.5, dtype=np.float32).tobytes()  # still a readable index, vectors changed
    path.write_bytes(bytes(data))
    assert NamespaceIndex.load(tmp_path, DIM, 3) is None


def test_index_files_are_private(index: NamespaceIndex, tmp_path: Path) -> None:
    index.save(tmp_path / "ix", generation=3)
    assert stat.S_IMODE((tmp_path / "ix").stat().st_mode) == 0o700
    for path in (tmp_path / "ix").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


class FullDisk(io.BytesIO):
    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_save_on_a_full_disk_leaves_no_temporary_file(
    index: NamespaceIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.save(tmp_path, generation=3)
    monkeypatch.setattr(server.files.os, "fdopen", lambda fd, mode: (os.close(fd), FullDisk())[1])
    index.add("a", np.array([13]), unit(4)[None, :])
    with pytest.raises(OSError, match="No space left"):
        index.save(tmp_path, generation=4)
    monkeypatch.undo()
    assert not list(tmp_path.glob("*.tmp"))
    assert NamespaceIndex.load(tmp_path, DIM, 3) is not None  # the last complete save still loads
