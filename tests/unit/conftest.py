"""Fixtures several unit modules share: the shipped gate artifact and its sentence encoder."""

import pytest

from server.gate.artifact import DEFAULT_ARTIFACT, GateArtifact, load_artifact
from server.memory.embed import SentenceEncoder


@pytest.fixture(scope="module")
def artifact() -> GateArtifact:
    """The shipped main gate."""
    return load_artifact(DEFAULT_ARTIFACT)


@pytest.fixture(scope="module")
def encoder(artifact: GateArtifact) -> SentenceEncoder:
    """The sentence encoder the shipped gate was trained on."""
    return SentenceEncoder(artifact.encoder)
