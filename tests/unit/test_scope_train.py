"""Training pieces of the scope classifier: synthetic negatives and the interaction design's fit."""

import random

import numpy as np

from scope_classifier.features import edit_view, token_inputs
from scope_classifier.pairs import EditText, Pair, synthetic_same_subject
from scope_classifier.train import features, fit_interaction
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


def test_interaction_design_learns_which_queries_an_edit_covers() -> None:
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
    x = features(pairs, views, encoded)
    artifact = fit_interaction(pairs, x, views, encoded, "hash", seed=0, epochs=40, batch_size=16, lr=3e-3)
    query_tokens = [token_inputs(encoded[p.query], views[p.edit].subject, "Rome") for p in pairs]
    scores = artifact.predict(x, query_tokens, [views[p.edit].tokens for p in pairs])
    labels = np.array([p.label for p in pairs])
    assert artifact.kind == "interaction" and artifact.uses_tokens
    assert ((scores > 0.5) == labels).mean() >= 0.95, scores
