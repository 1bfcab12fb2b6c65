"""Retrieval then the gate: the best edit of a namespace for a query, and the gate's score for it; and, with the same
classifier, which live edit a new edit of the same fact supersedes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter

import numpy as np

from server.config import SUPERSEDE_THRESHOLD
from server.interfaces import Embedder, Gate, Memory, Replaced
from server.types import (
    FACT_KINDS,
    Edit,
    EditKind,
    EditSpec,
    EncodedText,
    Hit,
    KeyEncodings,
    Timings,
    name_key,
    named_keys,
    subject_key,
)


@dataclass(frozen=True)
class ScopeCheck:
    embedder: Embedder
    memory: Memory
    gate: Gate
    top_k: int
    # True for edits the gate must not see (baked into the weights and taken out of the gate).
    hidden: Callable[[Edit], bool] = lambda edit: False
    threshold: float = 0.5  # the gate score from which a query is in scope (the router's)
    # The gate score from which a new edit asks the same fact as a live one of its subject (and replaces it).
    # Stricter than `threshold`: letting a near question in costs one answer, a wrong supersede loses a fact.
    supersede_threshold: float = SUPERSEDE_THRESHOLD

    def add(
        self, namespace: str, specs: Sequence[EditSpec], token_name: str = "", supersede: bool = True
    ) -> list[Edit]:
        """Stores the edits (durable on return), each superseding the live edit of the same fact if there is one
        (unless `supersede` is False: edits known to coexist, such as an export read back), then prepares the
        gate's side of them.

        Every key text goes through the encoder once (`encode`): its vector is the index's key, and a prompt's
        token vectors serve the supersede decisions and the gate's view of the edit.
        """
        encoded = self.encode(specs)
        replaces = self.superseded(namespace, specs, encoded) if supersede else [None] * len(specs)
        edits = self.memory.add(namespace, specs, replaces, token_name, _key_vectors(specs, encoded, self.embedder.dim))
        self.gate.warm([e for e in edits if e.key_texts() and e.live], encoded)  # a regex patch never meets the gate
        return edits

    def update(self, namespace: str, edit_id: str, spec: EditSpec, token_name: str = "") -> Edit:
        """Changes the edit in place (same id); the gate's view of it is recomputed, as the old one is cached."""
        encoded = self.encode([spec])
        edit = self.memory.update(namespace, edit_id, spec, token_name,
                                  _key_vectors([spec], encoded, self.embedder.dim)[0])
        if edit.key_texts():
            self.gate.warm([edit], encoded)
        return edit

    def encode(self, specs: Sequence[EditSpec]) -> KeyEncodings:
        """The specs' prompts whole (token vectors too), their other key texts as vectors only: a paraphrase's token
        vectors are computed when the gate first needs them (most never are), not for every key of a bulk add."""
        prompts = list(dict.fromkeys(s.prompt for s in specs if s.key_texts()))
        whole = dict(zip(prompts, self.embedder.encode_texts(prompts), strict=True))
        others = list(dict.fromkeys(t for s in specs for t in s.key_texts() if t not in whole))
        vectors = {t: e.vector for t, e in whole.items()} | dict(zip(others, self.embedder.encode(others), strict=True))
        return KeyEncodings(whole, vectors)

    def superseded(
        self, namespace: str, specs: Sequence[EditSpec], encoded: KeyEncodings | None = None
    ) -> list[Replaced]:
        """What each new edit replaces: a live edit's id, the index of an earlier spec of the batch (newer
        supersedes older), or None.

        A fact edit (every kind but REGEX) replaces the newest live or earlier-in-batch fact edit that has the same
        subject up to case and spacing and whose fact the gate scores the new edit's prompt as asking (at or above
        `supersede_threshold`): the same subject asked the same question. Another relation of the same subject ("Where
        was X born" after "X's employer") scores out of scope and both stay. A regex patch replaces the newest
        one with the identical pattern. `encoded` holds the specs' key texts through the encoder, where the
        caller has them.
        """
        existing = self.memory.same_subject(namespace, [s.subject for s in specs if s.kind in FACT_KINDS])
        patterns = {} if all(s.kind is not EditKind.REGEX for s in specs) else {
            e.pattern: e.id for e in self.memory.live_of_kind(namespace, EditKind.REGEX)
        }
        encodings = self._encode_contested(specs, existing, encoded or KeyEncodings({}, {}))
        replaces: list[Replaced] = []
        # Only live edits are candidates: neither an existing edit nor a spec of the batch that an earlier spec
        # already replaces (so a batch of one fact repeated costs one classifier call a spec, not one a pair).
        replaced_ids: set[str] = set()
        heads: dict[tuple[bool, str], list[int]] = {}  # (regex?, subject key or pattern) → live specs of the batch
        for i, spec in enumerate(specs):
            regex = spec.kind is EditKind.REGEX
            group = heads.setdefault((regex, spec.pattern if regex else subject_key(spec.subject)), [])
            if regex:
                replaced: Replaced = group[-1] if group else patterns.get(spec.pattern)
            else:
                candidates: list[tuple[Replaced, Edit]] = [
                    (e.id, e) for e in existing.get(spec.subject, []) if e.id not in replaced_ids
                ] + [(j, _provisional(namespace, specs[j])) for j in group]
                replaced = self._same_fact(spec, candidates, encodings)
            if isinstance(replaced, str):
                replaced_ids.add(replaced)
            elif isinstance(replaced, int):
                group.remove(replaced)
            group.append(i)
            replaces.append(replaced)
        return replaces

    def _encode_contested(
        self, specs: Sequence[EditSpec], existing: dict[str, list[Edit]], encoded: KeyEncodings
    ) -> _Encodings:
        """Every text the supersede decisions may read: the prompts of fact specs that have a same-subject
        candidate, and the key texts of those candidates; taken from `encoded` where it has them, the rest in one
        batched encoder pass (an import of thousands of edits would otherwise pay a pass per edit)."""
        seen: set[str] = set()
        contested: list[EditSpec] = []
        for spec in specs:
            if spec.kind in FACT_KINDS:
                key = subject_key(spec.subject)
                if existing.get(spec.subject) or key in seen:
                    contested.append(spec)
                seen.add(key)
        if not contested:
            return _Encodings({}, {})
        contested_keys = {subject_key(c.subject) for c in contested}
        keys = {t for es in existing.values() for e in es for t in e.key_texts()} | {
            t for spec in specs if spec.kind in FACT_KINDS and subject_key(spec.subject) in contested_keys
            for t in spec.key_texts()
        }
        prompts = [p for p in dict.fromkeys(c.prompt for c in contested) if p not in encoded.prompts]
        queries = encoded.prompts | dict(zip(prompts, self.embedder.encode_texts(prompts), strict=True))
        texts = [t for t in sorted(keys) if t not in encoded.vectors]
        vectors = encoded.vectors | dict(zip(texts, self.embedder.encode(texts), strict=True))
        return _Encodings({c.prompt: queries[c.prompt] for c in contested}, {t: vectors[t] for t in keys})

    def _same_fact(
        self, spec: EditSpec, candidates: Sequence[tuple[Replaced, Edit]], encodings: _Encodings
    ) -> Replaced:
        """The newest candidate (they come oldest first) that has `spec.prompt` among its key texts (up to case
        and spacing: the same question asked again, whatever the gate makes of it) or whose fact the gate scores
        `spec.prompt` as asking, at `supersede_threshold`; None if none."""
        if not candidates:
            return None
        scores = self._fact_scores(spec, [edit for _, edit in candidates], encodings)
        asked = subject_key(spec.prompt)
        matching = [ref for (ref, edit), p in zip(candidates, scores, strict=True)
                    if p >= self.supersede_threshold or asked in map(subject_key, edit.key_texts())]
        return matching[-1] if matching else None

    def same_fact_scores(self, namespace: str, spec: EditSpec) -> list[tuple[Edit, float]]:
        """The gate's score of `spec.prompt` against each live fact edit of its subject: what `superseded`
        compares with `supersede_threshold` (for measuring the rule)."""
        existing = self.memory.same_subject(namespace, [spec.subject])
        candidates = existing.get(spec.subject, [])
        if not candidates:
            return []
        encodings = self._encode_contested([spec], existing, KeyEncodings({}, {}))
        return list(zip(candidates, self._fact_scores(spec, candidates, encodings), strict=True))

    def _fact_scores(self, spec: EditSpec, candidates: Sequence[Edit], encodings: _Encodings) -> list[float]:
        query = encodings.queries[spec.prompt]
        # The cosine of the query and each candidate's closest key text, as retrieval would have found it.
        hits = [Hit(edit, float(max(encodings.keys[t] @ query.vector for t in edit.key_texts())))
                for edit in candidates]
        return self.gate.scores(query, hits)

    def best(self, namespace: str, text: str) -> tuple[Hit | None, float, Timings]:
        """The highest-scoring of the top-k retrieved edits (None when the namespace has none)."""
        return _best(*self.ranked(namespace, text))

    def best_encoded(self, namespace: str, encoded: EncodedText) -> tuple[Hit | None, float, Timings]:
        """`best` for a query already through the encoder (callers that batch encoder passes)."""
        return _best(*self.ranked_encoded(namespace, encoded))

    def ranked(self, namespace: str, text: str) -> tuple[list[tuple[float, Hit]], Timings]:
        """The top-k retrieved edits (and those found by the object the query names) with their gate scores, highest
        first (ties in retrieval order)."""
        t0 = perf_counter()
        encoded = self.embedder.encode_text(text)
        embed_ms = (perf_counter() - t0) * 1e3
        ranked, timings = self.ranked_encoded(namespace, encoded)
        timings.embed_ms = embed_ms
        return ranked, timings

    def ranked_encoded(self, namespace: str, encoded: EncodedText) -> tuple[list[tuple[float, Hit]], Timings]:
        """`ranked` for a query already through the encoder."""
        t1 = perf_counter()
        hits = [h for h in self.memory.search(namespace, encoded.vector, self.top_k) if not self.hidden(h.edit)]
        hits += self._by_object(namespace, encoded.text)
        t2 = perf_counter()
        scores = self.gate.scores(encoded, hits)
        t3 = perf_counter()
        timings = Timings(search_ms=(t2 - t1) * 1e3, gate_ms=(t3 - t2) * 1e3)
        return sorted(zip(scores, hits, strict=True), key=lambda s: s[0], reverse=True), timings

    def closest(self, text: str, edits: Sequence[Edit]) -> list[Edit]:
        """`edits` ordered by the cosine of their prompt to `text`, closest first (ties in the given order): among
        edits of one subject, the relation the text asks. One encoder pass."""
        vectors = self.embedder.encode([text, *(e.prompt for e in edits)])  # (1 + n, dim), normalised
        similarity = vectors[1:] @ vectors[0]  # (n,)
        order = sorted(range(len(edits)), key=lambda i: -float(similarity[i]))
        return [edits[i] for i in order]

    def _by_object(self, namespace: str, text: str) -> list[Hit]:
        """The newest `top_k` edits whose new object the query names and whose subject (or an alias of it) it does
        not (a query naming the subject is the subject keys' to find), as hits for the gate to read from the object;
        none when the gate cannot read edits that way. An edit retrieved by its keys too is scored both ways; the
        better score counts."""
        if not self.gate.reads_objects:
            return []
        named = named_keys(text)
        names = set(named)
        return [Hit(edit, 0.0, by_object=True) for edit in self.memory.with_objects(namespace, named, self.top_k)
                if not self.hidden(edit) and names.isdisjoint(name_key(k.subject) for k in edit.index_keys())]


def _best(ranked: Sequence[tuple[float, Hit]], timings: Timings) -> tuple[Hit | None, float, Timings]:
    p, hit = ranked[0] if ranked else (0.0, None)
    return hit, p, timings


@dataclass(frozen=True)
class _Encodings:
    """The encoder's view of the texts one batch's supersede decisions read."""

    queries: dict[str, EncodedText]  # new prompts with token vectors, for the gate
    keys: dict[str, np.ndarray]  # candidates' key texts → (dim,) unit vectors


def _key_vectors(specs: Sequence[EditSpec], encoded: KeyEncodings, dim: int) -> list[np.ndarray]:
    """Each spec's (n_keys, dim) index keys, from its key texts' encodings (none for a regex patch)."""
    return [np.stack([encoded.vectors[t] for t in spec.key_texts()]) if spec.key_texts()
            else np.zeros((0, dim), dtype=np.float32) for spec in specs]


def _provisional(namespace: str, spec: EditSpec) -> Edit:
    """A spec of the batch as the gate sees an edit; the id is unique because the gate caches its views by id."""
    return Edit(f"pending-{uuid.uuid4().hex}", namespace, spec.subject, spec.prompt, spec.target_new, spec.target_true,
                spec.paraphrases, 0.0, spec.kind, spec.pattern, spec.replacement, aliases=spec.aliases)
