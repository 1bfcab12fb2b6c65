import numpy as np
import pytest

from server.gate.artifact import GateArtifact, load_artifact, save_artifact
from server.gate.features import (
    SCALAR_FEATURES,
    edit_view,
    find_span,
    pair_features,
    sentence_and_relation,
    sentence_around,
    spelling_similarity,
    token_inputs,
)
from server.gate.interaction import InteractionConfig, InteractionNet
from tests.unit.fakes import HashEmbedder

EMBED = HashEmbedder(dim=32)


def test_find_span_is_case_insensitive_and_rejects_blank() -> None:
    assert find_span("Where is the space needle?", "Space Needle") == (13, 25)
    assert find_span("The Eiffel Tower", "Space Needle") is None
    assert find_span("anything", "  ") is None


def test_relation_vector_leaves_the_subject_out() -> None:
    _, a = sentence_and_relation(EMBED.encode_text("Paris is the capital of France"), "Paris")
    _, b = sentence_and_relation(EMBED.encode_text("Rome is the capital of France"), "Rome")
    assert np.allclose(a, b)  # same relation, different subjects: identical once the subject is out
    with_subject = EMBED.encode_text("Paris is the capital of France").vector
    assert float(a @ with_subject) < 0.999
    assert np.isclose(np.linalg.norm(a), 1.0)


def test_pair_features_name_the_subject_and_target_signals() -> None:
    edit = edit_view(EMBED.encode_text("The Space Needle is located in the city of"), "Space Needle", "Taipei")
    inside = pair_features(EMBED.encode_text("Where is the Space Needle?"), edit, 0.9)
    other = pair_features(EMBED.encode_text("Where is the Eiffel Tower?"), edit, 0.9)
    reverse = pair_features(EMBED.encode_text("What tower stands in Taipei?"), edit, 0.5)
    col = {name: i for i, name in enumerate(SCALAR_FEATURES)}
    assert inside[col["subject_in_query"]] == 1.0 and other[col["subject_in_query"]] == 0.0
    assert inside[col["subject_words_in_query"]] == 1.0 and other[col["subject_words_in_query"]] == 0.0
    assert reverse[col["target_in_query"]] == 1.0 and inside[col["target_in_query"]] == 0.0
    assert inside.shape == (len(SCALAR_FEATURES) + 2 * EMBED.dim,)


def test_a_misspelt_subject_is_near_the_query_and_another_entity_is_not() -> None:
    edit = edit_view(EMBED.encode_text("Who is Nebaioth's father?"), "Nebaioth", "Ishmael")
    col = SCALAR_FEATURES.index("subject_words_near_query")
    misspelt = pair_features(EMBED.encode_text("Who's Nebajoths Dad?"), edit, 0.5)[col]
    exact = pair_features(EMBED.encode_text("Who was the father of Nebaioth?"), edit, 0.5)[col]
    assert exact == 1.0 and 0.8 < misspelt < 1.0
    assert spelling_similarity("ix", ["boniface", "viii", "holds"]) < 0.5  # Boniface VIII for Boniface IX
    assert spelling_similarity("anything", []) == 0.0


def test_artifact_round_trip_and_prediction(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    tensors = {"w0": rng.normal(size=(4, 3)).astype(np.float32), "b0": np.zeros(3, np.float32),
               "w1": rng.normal(size=(3, 1)).astype(np.float32), "b1": np.zeros(1, np.float32)}
    artifact = GateArtifact("mlp", 4, rng.normal(size=4).astype(np.float32), np.ones(4, np.float32), tensors,
                            threshold=0.7, encoder="enc", metrics={"a": 1})
    save_artifact(artifact, tmp_path / "g.npz")
    loaded = load_artifact(tmp_path / "g.npz")
    x = rng.normal(size=(5, 6)).astype(np.float32)  # extra columns beyond n_features are ignored
    hidden = np.maximum((x[:, :4] - artifact.mean) @ tensors["w0"], 0.0)
    expected = 1 / (1 + np.exp(-(hidden @ tensors["w1"])[:, 0]))
    assert np.allclose(loaded.predict(x), expected, atol=1e-6)
    assert (loaded.kind, loaded.threshold, loaded.encoder, loaded.metrics) == ("mlp", 0.7, "enc", {"a": 1})


def test_interaction_artifact_round_trip_reads_the_tokens(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(0)
    config = InteractionConfig(token_dim=EMBED.dim, width=16, layers=1, heads=2, head_hidden=8)
    net = InteractionNet(config).eval()
    n = len(SCALAR_FEATURES)
    artifact = GateArtifact("interaction", n, np.zeros(n, np.float32), np.ones(n, np.float32),
                            {k: v.numpy().copy() for k, v in net.state_dict().items()}, threshold=0.5,
                            encoder="enc", config=config.as_dict())
    save_artifact(artifact, tmp_path / "g.npz")
    loaded = load_artifact(tmp_path / "g.npz")
    edit = edit_view(EMBED.encode_text("The Space Needle is located in the city of"), "Space Needle", "Taipei")
    queries = [EMBED.encode_text(t) for t in ("Where is the Space Needle?", "Who wrote Hamlet?")]
    features = np.stack([pair_features(q, edit, 0.5) for q in queries])
    tokens = [token_inputs(q, edit.subject, edit.target_new) for q in queries]
    scores = loaded.predict(features, tokens, [edit.tokens, edit.tokens])
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))
    assert not np.isclose(scores[0], scores[1])  # the tokens reach the score
    assert np.allclose(scores, artifact.predict(features, tokens, [edit.tokens, edit.tokens]), atol=1e-6)


def test_token_inputs_flag_the_subject_and_the_target() -> None:
    encoded = EMBED.encode_text("Is the Space Needle in Taipei?")
    x = token_inputs(encoded, "Space Needle", "Taipei")
    words = [encoded.text[a:b] for a, b in encoded.token_spans]
    assert x.shape == (len(words), EMBED.dim + 2)
    assert [w for w, f in zip(words, x[:, EMBED.dim], strict=True) if f] == ["Space", "Needle"]
    assert [w for w, f in zip(words, x[:, EMBED.dim + 1], strict=True) if f] == ["Taipei"]


def test_artifact_of_another_format_version_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    np.savez(tmp_path / "old.npz", meta=np.array(json.dumps({"format_version": 0})))
    with pytest.raises(ValueError, match="retrain"):
        load_artifact(tmp_path / "old.npz")


def test_query_side_looks_at_the_sentence_that_holds_the_subject() -> None:
    text = "Shayna, 15, loses her hearing. The mother tongue of Danielle Darrieux is"
    start, stop = sentence_around(text, find_span(text, "Danielle Darrieux"))
    assert text[start:stop].strip() == "The mother tongue of Danielle Darrieux is"
    assert text[slice(*sentence_around(text, None))].strip() == "The mother tongue of Danielle Darrieux is"
    with_prefix = sentence_and_relation(EMBED.encode_text(text), "Danielle Darrieux")
    without = sentence_and_relation(EMBED.encode_text("The mother tongue of Danielle Darrieux is"), "Danielle Darrieux")
    assert np.allclose(with_prefix[0], without[0]) and np.allclose(with_prefix[1], without[1])
