"""The shipped gate artifact reproduces what training recorded on the repository's fixture."""

from pathlib import Path

import pytest

from scope_classifier.train import fixture_scores
from server.app import build_gate, unfamiliar_gate
from server.config import SIMILARITY_THRESHOLD, Config
from server.gate.artifact import DEFAULT_ARTIFACT, DEFAULT_UNFAMILIAR_ARTIFACT, load_artifact
from server.gate.similarity import SimilarityGate
from server.memory.embed import SentenceEncoder


@pytest.mark.parametrize("path", [DEFAULT_ARTIFACT, DEFAULT_UNFAMILIAR_ARTIFACT], ids=["main", "unfamiliar"])
def test_shipped_artifact_reproduces_its_recorded_fixture_scores(path: Path) -> None:
    artifact = load_artifact(path)
    recorded = artifact.metrics["fixture_scores"]
    assert fixture_scores(artifact, SentenceEncoder(artifact.encoder)) == pytest.approx(recorded, abs=1e-4)
    assert 0.0 < artifact.threshold < 1.0
    assert {"in_scope_recall_prompt", "in_scope_recall_paraphrase", "locality_fpr"} <= set(artifact.metrics)


def test_an_unusable_shipped_artifact_falls_back_to_the_similarity_gate_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "gate.npz"
    broken.write_bytes(b"not an npz file")
    monkeypatch.setattr("server.app.DEFAULT_ARTIFACT", broken)
    gate, threshold, sentence = build_gate(Config(), SentenceEncoder("all-MiniLM-L6-v2"))
    assert isinstance(gate, SimilarityGate) and threshold == SIMILARITY_THRESHOLD
    assert sentence is not None and sentence.startswith("the similarity gate") and str(broken) in sentence
    # One the operator named is not replaced behind their back: the start stops.
    with pytest.raises((OSError, ValueError)):
        build_gate(Config(gate_artifact=broken), SentenceEncoder("all-MiniLM-L6-v2"))


def test_an_unusable_shipped_unfamiliar_gate_leaves_every_kind_to_the_main_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "gate.npz"
    broken.write_bytes(b"not an npz file")
    assert unfamiliar_gate(Config()) is not None  # the shipped one loads
    assert unfamiliar_gate(Config(unfamiliar_gate=False)) is None
    monkeypatch.setattr("server.app.DEFAULT_UNFAMILIAR_ARTIFACT", broken)
    assert unfamiliar_gate(Config()) is None
    with pytest.raises((OSError, ValueError)):
        unfamiliar_gate(Config(unfamiliar_gate_artifact=broken))
