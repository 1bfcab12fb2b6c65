"""Adding edits through ScopeCheck stores them and warms the gate, so the first query is not the slow one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from server.gate.artifact import DEFAULT_UNFAMILIAR_ARTIFACT, GateArtifact, load_artifact
from server.gate.classifier import ClassifierGate, on_scale
from server.memory.edit_memory import EditMemory
from server.memory.embed import SentenceEncoder
from server.scope import ScopeCheck
from server.types import EditKind, EncodedText, Hit
from tests.unit.fakes import FixedGate, HashEmbedder, make_edit, make_spec


class CountingEncoder:
    """The real sentence encoder, counting the texts it is asked to encode."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        self._encoder = encoder
        self.texts = 0

    def encode_text(self, text: str) -> EncodedText:
        self.texts += 1
        return self._encoder.encode_text(text)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> list[EncodedText]:
        self.texts += len(texts)
        return self._encoder.encode_texts(texts, batch_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        return self._encoder.encode(texts)


def test_add_stores_the_edits_then_warms_the_gate_with_them(tmp_path: Path) -> None:
    embedder, gate = HashEmbedder(), FixedGate()
    scope = ScopeCheck(embedder, EditMemory(tmp_path, embedder, "hash-v1"), gate, top_k=4)
    specs = [make_spec(), make_spec(subject="Dante", prompt="Dante wrote in", target_new="German")]
    edits = scope.add("ns", specs)
    assert gate.warmed == [e.id for e in edits]
    assert [scope.memory.get("ns", e.id) for e in edits] == edits


def test_a_query_is_scored_against_the_edits_closest_key_text(
    artifact: GateArtifact, encoder: SentenceEncoder,
) -> None:
    """A rule is far from the questions it covers; its example question is not. The example's view is made once,
    the first time a query finds it closest."""
    rule = "If asked whether Pluto is a planet, say it is a dwarf planet."
    bare = make_edit("a" * 32, prompt=rule, subject="Pluto", target_new="")
    with_example = make_edit("b" * 32, prompt=rule, subject="Pluto", target_new="", paraphrases=("Is Pluto a planet?",))
    query = encoder.encode_text("Is Pluto a real planet? No, Pluto is a")
    counting = CountingEncoder(encoder)
    gate = ClassifierGate(artifact, counting)  # type: ignore[arg-type]
    gate.warm([bare, with_example])
    warmed = counting.texts
    (p_bare,) = gate.scores(query, [Hit(bare, 0.5)])
    (p_example,) = gate.scores(query, [Hit(with_example, 0.5)])
    assert p_example > p_bare + 0.2
    assert counting.texts == warmed + 1  # the example's view, made once
    assert gate.scores(query, [Hit(with_example, 0.5)]) == [p_example] and counting.texts == warmed + 1


def test_a_warmed_classifier_gate_scores_without_encoding_the_edits_and_scores_the_same(
    artifact: GateArtifact, encoder: SentenceEncoder,
) -> None:
    edits = [
        make_edit("a" * 32, prompt="The capital of France is", subject="France", target_new="Rome"),
        make_edit("b" * 32, prompt="Dante wrote his poems in", subject="Dante", target_new="German"),
    ]
    query = encoder.encode_text("What is the capital city of France?")
    hits = [Hit(e, 0.5) for e in edits]

    counting = CountingEncoder(encoder)
    lazy = ClassifierGate(artifact, counting)  # type: ignore[arg-type]
    lazy_scores = lazy.scores(query, hits)
    assert counting.texts == len(edits)  # the lazy path encodes each edit on first retrieval

    counting = CountingEncoder(encoder)
    warmed = ClassifierGate(artifact, counting)  # type: ignore[arg-type]
    warmed.warm(edits)
    before = counting.texts
    assert warmed.scores(query, hits) == pytest.approx(lazy_scores, abs=1e-4)
    assert counting.texts == before


def test_on_scale_maps_one_gates_threshold_onto_anothers_and_keeps_the_order() -> None:
    p = np.array([0.0, 0.2, 0.4, 0.7, 1.0])
    mapped = on_scale(p, own_threshold=0.4, threshold=0.235)
    assert mapped[0] == 0.0 and mapped[-1] == pytest.approx(1.0) and mapped[2] == pytest.approx(0.235)
    assert np.all(np.diff(mapped) > 0)
    assert (mapped >= 0.235).tolist() == (p >= 0.4).tolist()


def test_insert_and_patch_edits_are_scored_by_the_unfamiliar_subject_gate(
    artifact: GateArtifact, encoder: SentenceEncoder,
) -> None:
    """The shipped unfamiliar-subject gate takes a made-up subject's relation asked nominally in, which the main gate
    leaves out; a modify edit in the same call keeps the main gate's score."""
    unfamiliar = load_artifact(DEFAULT_UNFAMILIAR_ARTIFACT)
    inserted = replace(make_edit("a" * 32, prompt="Tovik-7 was founded by", subject="Tovik-7", target_new="Mira Quell"),
                       kind=EditKind.INSERT)
    modified = make_edit("b" * 32, prompt="The capital of France is", subject="France", target_new="Rome")
    query = encoder.encode_text("The founder of Tovik-7 is")
    hits = [Hit(inserted, 0.6), Hit(modified, 0.1)]
    main_only = ClassifierGate(artifact, encoder).scores(query, hits)
    both = ClassifierGate(artifact, encoder, unfamiliar=unfamiliar).scores(query, hits)
    (own,) = ClassifierGate(unfamiliar, encoder).scores(query, hits[:1])
    assert main_only[0] < artifact.threshold <= both[0]
    assert both[0] == pytest.approx(float(on_scale(np.array(own), unfamiliar.threshold, artifact.threshold)), abs=1e-6)
    assert both[1] == pytest.approx(main_only[1], abs=1e-6)
