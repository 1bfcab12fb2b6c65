"""Features of a (query, edit) pair for the scope classifier: pure functions over encoder outputs.

Two signals separate an in-scope query from its near misses:
- the subject: neighbourhood prompts ask the same relation of another subject, so whether the
  edit's subject occurs in the query matters most;
- the relation: same-subject prompts ask another relation, so the query and the edit prompt are
  compared with the subject's tokens left out ("relation vectors", mean-pooled token embeddings).
Queries often carry unrelated text before the question (CounterFact's paraphrases do), so the
query side looks at the sentence that holds the subject, or at the last sentence when the subject
is absent.

The `interaction` design also reads the token vectors themselves (`token_inputs`): each token's
contextual embedding with two flags, "inside the edit's subject" and "inside its new target".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

import numpy as np

from server.types import EncodedText

WORD = re.compile(r"\w+")
SENTENCE_END = re.compile(r"[.!?](?=\s)")
SCALAR_FEATURES = (
    "similarity_best_key",  # cosine of the whole query to the edit's closest key text (retrieval's score)
    "similarity_prompt",  # cosine of the query's sentence to the edit prompt
    "similarity_relation",  # cosine of the relation vectors (subject left out on both sides)
    "subject_in_query",  # the subject occurs in the query (case-insensitive)
    "subject_words_in_query",  # share of the subject's words found among the query's words
    "target_in_query",  # the new target occurs in the query (reverse questions name it)
    "subject_words_near_query",  # mean over the subject's words of the closest query word's spelling similarity
)
TOKEN_FLAGS = 2  # in the subject, in the new target
MAX_TOKENS = 48  # per side; longer texts keep their end, where the question is


@dataclass(frozen=True)
class EditView:
    """The edit side of a pair, computed once per edit."""

    subject: str
    target_new: str
    prompt_vector: np.ndarray  # (dim,) unit
    relation_vector: np.ndarray  # (dim,) unit: the prompt's tokens outside the subject, pooled
    tokens: np.ndarray  # (n_tokens, dim + TOKEN_FLAGS) float16: token_inputs of the prompt


def find_span(text: str, phrase: str) -> tuple[int, int] | None:
    """Character span of the first case-insensitive occurrence of `phrase` in `text`."""
    start = text.casefold().find(phrase.casefold())
    return None if start < 0 or not phrase.strip() else (start, start + len(phrase))


def sentence_around(text: str, span: tuple[int, int] | None) -> tuple[int, int]:
    """Character range of the sentence holding `span`, or of the last sentence when there is no span."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    anchor = span[0] if span is not None else len(text.rstrip()) - 1
    start = max([e for e in ends if e <= anchor], default=0)
    stop = min([e for e in ends if e > anchor], default=len(text))
    return start, stop


def pooled(encoded: EncodedText, keep: np.ndarray) -> np.ndarray:
    """Unit mean of the kept token embeddings (all of them if none is kept): (dim,)."""
    vectors = encoded.token_vectors[keep] if keep.any() else encoded.token_vectors
    mean = vectors.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def sentence_and_relation(encoded: EncodedText, subject: str) -> tuple[np.ndarray, np.ndarray]:
    """The subject's sentence pooled, and the same without the subject's tokens: (dim,), (dim,)."""
    span = find_span(encoded.text, subject)
    start, stop = sentence_around(encoded.text, span)
    spans = np.array(encoded.token_spans, dtype=np.int64).reshape(-1, 2)  # (n_tokens, 2)
    real = spans[:, 1] > spans[:, 0]  # special tokens have empty spans
    in_sentence = real & (spans[:, 0] >= start) & (spans[:, 1] <= stop)
    in_subject = real & (spans[:, 0] < span[1]) & (spans[:, 1] > span[0]) if span else np.zeros_like(real)
    return pooled(encoded, in_sentence), pooled(encoded, in_sentence & ~in_subject)


def token_inputs(encoded: EncodedText, subject: str, target_new: str) -> np.ndarray:
    """(min(n_tokens, MAX_TOKENS), dim + TOKEN_FLAGS): token vectors with their subject and target flags."""
    spans = np.array(encoded.token_spans, dtype=np.int64).reshape(-1, 2)  # (n_tokens, 2)
    real = spans[:, 1] > spans[:, 0]
    flags = np.zeros((len(spans), TOKEN_FLAGS), dtype=np.float32)
    for column, phrase in enumerate((subject, target_new)):
        span = find_span(encoded.text, phrase)
        if span is not None:
            flags[:, column] = real & (spans[:, 0] < span[1]) & (spans[:, 1] > span[0])
    return np.concatenate([encoded.token_vectors, flags], axis=1)[-MAX_TOKENS:]


def object_statement(prompt: str, target_new: str) -> str:
    """The edit's fact stated whole, the text the object gate reads an edit by: its prompt and new object ("Who is
    Nebaioth's father? Babur"), so that the object is a span of it, as the subject is of the prompt."""
    return f"{prompt.rstrip()} {target_new.strip()}"


def edit_view(encoded_prompt: EncodedText, subject: str, target_new: str) -> EditView:
    sentence, relation = sentence_and_relation(encoded_prompt, subject)
    tokens = token_inputs(encoded_prompt, subject, target_new).astype(np.float16)  # half the cache's memory
    return EditView(subject, target_new, sentence, relation, tokens)


def spelling_similarity(word: str, words: list[str]) -> float:
    """The best difflib ratio of `word` to any of `words` (1.0 when it is among them).

    zsRE's paraphrases misspell subjects ("Who's Nebajoths Dad?" for Nebaioth); a different entity of the
    same relation differs by whole words ("Boniface VIII" for Boniface IX), which this scores low.
    """
    if word in words:
        return 1.0
    matcher = SequenceMatcher(a=word, autojunk=False)
    best = 0.0
    for other in words:
        matcher.set_seq2(other)
        if matcher.real_quick_ratio() > best and matcher.quick_ratio() > best:
            best = max(best, matcher.ratio())
    return best


def pair_features(query: EncodedText, edit: EditView, similarity_best_key: float) -> np.ndarray:
    """(len(SCALAR_FEATURES) + 2 * dim,): the scalar features in their order, then the relation
    vectors' elementwise product and absolute difference."""
    query_word_list = WORD.findall(query.text.casefold())
    query_words = set(query_word_list)
    subject_words = WORD.findall(edit.subject.casefold())
    sentence, relation = sentence_and_relation(query, edit.subject)  # (dim,), (dim,)
    scalars = [
        similarity_best_key,
        float(sentence @ edit.prompt_vector),
        float(relation @ edit.relation_vector),
        float(find_span(query.text, edit.subject) is not None),
        sum(w in query_words for w in subject_words) / max(1, len(subject_words)),
        float(find_span(query.text, edit.target_new) is not None),
        sum(spelling_similarity(w, query_word_list) for w in subject_words) / max(1, len(subject_words)),
    ]
    return np.concatenate([
        np.asarray(scalars, dtype=np.float32),
        relation * edit.relation_vector,
        np.abs(relation - edit.relation_vector),
    ]).astype(np.float32)
