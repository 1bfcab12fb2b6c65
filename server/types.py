"""Plain records that flow between the servicers and the core. No protobufs here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class EditSpec:
    """A fact as a caller registers it, before the server assigns an id."""

    subject: str
    prompt: str
    target_new: str
    target_true: str | None = None
    paraphrases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Edit:
    """A stored fact in one namespace."""

    id: str
    namespace: str
    subject: str
    prompt: str
    target_new: str
    target_true: str | None
    paraphrases: tuple[str, ...]
    created_at_unix_s: float

    def statement(self) -> str:
        """The fact as one sentence, e.g. 'The Space Needle is located in the city of Taipei.'"""
        return f"{self.prompt.rstrip()} {self.target_new.strip()}."

    def key_texts(self) -> tuple[str, ...]:
        """The texts the memory indexes for this edit: its prompt and every paraphrase."""
        return (self.prompt, *self.paraphrases)


@dataclass(frozen=True)
class EncodedText:
    """A text as the sentence encoder sees it, from one forward pass."""

    text: str
    vector: np.ndarray  # (dim,) unit-length sentence embedding
    token_vectors: np.ndarray  # (n_tokens, dim) contextual token embeddings, special tokens included
    token_spans: tuple[tuple[int, int], ...]  # character span of each token; (0, 0) for special tokens


@dataclass(frozen=True)
class Hit:
    """An edit found by retrieval, with the cosine similarity of its closest key text."""

    edit: Edit
    similarity: float


# Temperatures below this decode greedily. Sampling divides the logits by the temperature: far below it they
# overflow to inf and the probabilities become NaN, and well before that sampling already picks the argmax
# (a logit gap of 0.01 is a factor e^10 at 1e-3), so greedy is what such a temperature asks for.
GREEDY_BELOW_TEMPERATURE = 1e-3


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int
    temperature: float = 0.0  # below GREEDY_BELOW_TEMPERATURE (0 included) → greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW_TEMPERATURE


@dataclass(frozen=True)
class Query:
    namespace: str
    text: str
    route: Route | None = None  # None: the gate decides; otherwise this route answers
    edit_id: str | None = None  # with a forced in-scope route: the edit to answer from


class Route(enum.Enum):
    BASE = "base"
    COUNTERFACTUAL = "counterfactual"
    IKE = "ike"
    PARAMETRIC = "parametric"
    PROMPT = "prompt"


class FinishReason(enum.Enum):
    LENGTH = "length"
    EOS = "eos"
    STOP = "stop"


@dataclass(frozen=True)
class Generation:
    """What a generator produced for one prompt."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    prompt_tokens: int = 0  # tokens the model read, any edit text or demonstrations its route added included


@dataclass(frozen=True)
class TokenScores:
    """Teacher-forced view of a target continuation: per target token."""

    target_ids: tuple[int, ...]
    predicted_ids: tuple[int, ...]  # argmax of the model at each target position
    target_logprobs: tuple[float, ...]


@dataclass
class Timings:
    embed_ms: float = 0.0
    search_ms: float = 0.0
    gate_ms: float = 0.0
    queue_ms: float = 0.0
    generate_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True)
class Judgement:
    """The counterfactual model's first look at (edit, query): does the fact bear on it, and how sure is it."""

    abstains: bool  # the answer is the abstention word: the fact does not answer this query
    confidence: float  # mean probability of the answer's first tokens (`answer_confidence`)


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on a query: which route answers, from which edit, with what score."""

    route: Route
    edit: Edit | None
    score: float
    timings: Timings = field(default_factory=Timings)
    abstained: bool = False  # in scope by the gate, but the counterfactual model said its edit does not bear on it

    @property
    def route_label(self) -> str:
        """The route's name for logs, marking base answers the counterfactual model handed over."""
        return f"{self.route.value} (abstained)" if self.abstained else self.route.value


@dataclass(frozen=True)
class Answer:
    generation: Generation
    decision: Decision
    timings: Timings
