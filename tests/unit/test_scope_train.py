"""Training pieces of the scope classifier: synthetic negatives and the interaction design's fit."""

import random

import numpy as np

from scope_classifier.pairs import EditText, Pair, misspelt, synthetic_same_subject
from scope_classifier.train import add_retrieved_negatives, encode, features, fit_interaction
from server.gate.features import edit_view, token_inputs
from tests.unit.fakes import HashEmbedder

EMBED = HashEmbedder(dim=32)
COUNTRIES = ["France", "Peru", "Japan", "Kenya", "Chile", "Norway", "Egypt", "India", "Spain", "Ghana",
             "Nepal", "Cuba", "Iran", "Mali", "Oman", "Laos"]


def test_synthetic_same_subject_asks_other_relations_of_the_same_subject() -> None:
    edit = EditText("Jack Chalker", "Jack Chalker passed away in", "Paris")
    probes = synthetic_same_subject(edit, random.Random(0), n=40)
    assert len(probes) == 40 and all("Jack Chalker" in p for p in probes)
    # the prompt asks the place of death without naming it: that relation is never a negative
    assert not any("place of death" in p or "date of death" in p for p in probes)
    born = synthetic_same_subject(EditText("X", "Where was X born?", "Rome"), random.Random(0), n=200)
    assert not any("place of birth" in p for p in born)
    assert synthetic_same_subject(EditText("", "Who is it?", "Rome"), random.Random(0)) == []


def _capital_pairs() -> tuple[list[Pair], np.ndarray, list, dict]:  # type: ignore[type-arg]
    edits = [EditText(c, f"The capital of {c} is", "Rome") for c in COUNTRIES]
    pairs: list[Pair] = []
    for i, c in enumerate(COUNTRIES):
        other = COUNTRIES[(i + 1) % len(COUNTRIES)]
        pairs += [Pair(f"What is the capital of {c}?", i, 1, "paraphrase"),
                  Pair(f"The capital of {c} is", i, 1, "prompt"),
                  Pair(f"The capital of {other} is", i, 0, "neighbourhood"),
                  Pair(f"The currency of {c} is", i, 0, "same_subject")]
    encoded = {t: EMBED.encode_text(t) for t in {p.query for p in pairs} | {e.prompt for e in edits}}
    views = [edit_view(encoded[e.prompt], e.subject, e.target_new) for e in edits]
    return pairs, features(pairs, views, encoded), views, encoded


def _accuracy(artifact, pairs, x, views, encoded) -> float:  # type: ignore[no-untyped-def]
    query_tokens = [token_inputs(encoded[p.query], views[p.edit].subject, "Rome") for p in pairs]
    scores = artifact.predict(x, query_tokens, [views[p.edit].tokens for p in pairs])
    return float(((scores > 0.5) == np.array([p.label for p in pairs])).mean())


def test_interaction_design_learns_which_queries_an_edit_covers() -> None:
    pairs, x, views, encoded = _capital_pairs()
    artifact = fit_interaction(pairs, x, views, encoded, "hash", seed=0, epochs=40, batch_size=16, lr=3e-3)
    assert artifact.kind == "interaction" and artifact.uses_tokens
    assert _accuracy(artifact, pairs, x, views, encoded) >= 0.95


def test_interaction_training_continues_from_an_artifact() -> None:
    pairs, x, views, encoded = _capital_pairs()
    trained = fit_interaction(pairs, x, views, encoded, "hash", seed=0, epochs=40, batch_size=16, lr=3e-3)
    # At a learning rate too small to move anything, the result is the starting weights.
    continued = fit_interaction(pairs, x, views, encoded, "hash", seed=1, epochs=1, batch_size=16, lr=1e-7,
                                init=trained)
    fresh = fit_interaction(pairs, x, views, encoded, "hash", seed=1, epochs=1, batch_size=16, lr=1e-7)
    assert np.array_equal(continued.mean, trained.mean) and continued.config == trained.config
    name = "head.0.weight"
    assert np.abs(continued.tensors[name] - trained.tensors[name]).max() < 1e-4
    assert np.abs(fresh.tensors[name] - trained.tensors[name]).max() > 1e-2
    assert _accuracy(continued, pairs, x, views, encoded) >= 0.95


class CountingEmbedder(HashEmbedder):
    """Records each batch that `encode_texts` receives."""

    batches: list[list[str]]

    def encode_texts(self, texts: list[str]) -> list:  # type: ignore[type-arg]
        self.batches = [*getattr(self, "batches", []), list(texts)]
        return [self.encode_text(t) for t in texts]


def test_encoding_cache_encodes_only_texts_no_earlier_run_cached(tmp_path) -> None:  # type: ignore[no-untyped-def]
    embedder = CountingEmbedder(dim=16)
    first = encode(embedder, "hash", ["a b", "c d"], tmp_path, None)  # type: ignore[arg-type]
    assert embedder.batches == [["a b", "c d"]]
    second = encode(embedder, "hash", ["a b", "c d", "e f"], tmp_path, None)  # type: ignore[arg-type]
    assert embedder.batches[1:] == [["e f"]]  # "a b" and "c d" came from the first run's file
    np.testing.assert_array_equal(second["a b"].token_vectors, first["a b"].token_vectors)
    assert second["c d"].token_spans == first["c d"].token_spans
    assert len(list(tmp_path.glob("encodings-*.npz"))) == 1  # the new file replaced the one it covers
    assert set(encode(embedder, "hash", ["c d", "e f"], tmp_path, None)) == {"c d", "e f"}  # type: ignore[arg-type]
    assert embedder.batches[2:] == []
    other = CountingEmbedder(dim=16)
    encode(other, "other", ["a b"], tmp_path, None)  # type: ignore[arg-type]
    assert other.batches == [["a b"]]  # another encoder's vectors are never reused
    assert len(list(tmp_path.glob("encodings-*.npz"))) == 2


def test_negative_queries_meet_other_edits_except_those_whose_subject_they_name() -> None:
    edits = [EditText("Boniface IX", "Boniface IX holds the title of", "mayor"),
             EditText("Boniface VIII", "Boniface VIII holds the title of", "bishop"),
             EditText("Innocent VII", "Innocent VII holds the title of", "cardinal"),
             EditText("Peru", "The capital of Peru is", "Rome")]
    pairs = [Pair("Boniface VIII holds the title of", 2, 0, "neighbourhood"),
             Pair("Innocent VIII holds the title of", 0, 0, "neighbourhood"),
             Pair("What is the capital of Peru?", 3, 1, "paraphrase"),
             Pair("Peru is a member of", 3, 0, "synthetic_same_subject")]
    encoded = {t: EMBED.encode_text(t) for t in {p.query for p in pairs} | {e.prompt for e in edits}}
    views = [edit_view(encoded[e.prompt], e.subject, e.target_new) for e in edits]
    added = add_retrieved_negatives(pairs, views, encoded, per_query=3)[len(pairs):]
    met = {(p.query, edits[p.edit].subject) for p in added}
    assert all(p.label == 0 and p.kind == "retrieved" for p in added)
    # the neighbourhood prompt meets the edit on Boniface IX, never the one on the subject it names
    assert ("Boniface VIII holds the title of", "Boniface IX") in met
    assert ("Boniface VIII holds the title of", "Boniface VIII") not in met
    assert ("Boniface VIII holds the title of", "Innocent VII") not in met  # its own edit
    # whole words: "Innocent VIII" does not name "Innocent VII", so that edit is a negative for it
    assert ("Innocent VIII holds the title of", "Innocent VII") in met
    # a positive meets other edits, never its own; synthetic negatives are not mined
    assert "Peru" not in {s for q, s in met if q == "What is the capital of Peru?"}
    assert not any(q == "Peru is a member of" for q, _ in met)


def test_misspelt_changes_one_letter_inside_one_long_subject_word() -> None:
    rng = random.Random(0)
    query = "Which family does Hector's clingfish belong to?"
    for _ in range(50):
        typo = misspelt(query, "Hector's clingfish", rng)
        assert typo is not None and typo != query and abs(len(typo) - len(query)) <= 1
        changed = [(new, old) for new, old in zip(typo.split(), query.split(), strict=True) if new != old]
        assert len(changed) == 1
        new, old = changed[0]
        assert old in ("Hector's", "clingfish") and (new[0], new[-1]) == (old[0], old[-1])
    assert misspelt("Boniface IX holds the title of", "Boniface IX", rng) is not None  # "Boniface" only
    assert misspelt("Who is X 3's father?", "X 3", rng) is None  # no word of four letters
    assert misspelt("Who is Ada's father?", "Nebaioth", rng) is None  # subject absent
