"""The shipped gate artifact reproduces what training recorded on the repository's fixture."""

import pytest

from scope_classifier.artifact import DEFAULT_ARTIFACT, load_artifact
from scope_classifier.train import fixture_scores
from server.memory.embed import SentenceEncoder


def test_shipped_artifact_reproduces_its_recorded_fixture_scores() -> None:
    artifact = load_artifact(DEFAULT_ARTIFACT)
    recorded = artifact.metrics["fixture_scores"]
    assert fixture_scores(artifact, SentenceEncoder(artifact.encoder)) == pytest.approx(recorded, abs=1e-4)
    assert 0.0 < artifact.threshold < 1.0
    assert {"in_scope_recall_prompt", "in_scope_recall_paraphrase", "locality_fpr"} <= set(artifact.metrics)
