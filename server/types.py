"""Plain records that flow between the servicers and the core. No protobufs here."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

import numpy as np


class EditKind(enum.Enum):
    """What an edit does to the answers of its namespace (issue 26). The fields each kind uses are on `Edit`."""

    MODIFY = "modify"  # changes a fact the model knows: in-scope queries answer target_new
    INSERT = "insert"  # a fact the model never knew; answered like MODIFY
    ERASE = "erase"  # the fact must no longer be stated: in-scope queries get the server's refusal
    PATCH = "patch"  # a rule in plain words, retrieved and gated like a fact and answered by following it
    REGEX = "regex"  # a textual fix applied to the base model's output in the namespace; never retrieved


def subject_key(subject: str) -> str:
    """The subject as supersession compares it: case-folded, whitespace collapsed."""
    return " ".join(subject.casefold().split())


_NAME_WORD = re.compile(r"\w+")
_EDGE_PUNCTUATION = re.compile(r"^\W+|\W+$")
MAX_NAME_WORDS = 12  # the longest name a query is looked up by (an object such as "Charles IV of Spain" is 4)
NAMED_WORDS = 64  # a query's last words looked in for names: the question is at the end, earlier turns before it


def name_key(name: str) -> str:
    """A name as a query names it (`named_keys`): `subject_key` without punctuation at either end ("U.S." is
    named "u.s")."""
    return subject_key(_EDGE_PUNCTUATION.sub("", name))


def object_key(target_new: str) -> str:
    """The new object as a query names it (`name_key`); "" when it is not a name a reverse question asks about: a
    capital letter or digit first, not a bare number (the object gate was trained on those alone)."""
    core = _EDGE_PUNCTUATION.sub("", target_new)
    if (not core[:1].isupper() and not core[:1].isdigit()) or core.isdigit():
        return ""
    return subject_key(core)


def named_keys(text: str, max_words: int = MAX_NAME_WORDS, last_words: int = NAMED_WORDS) -> list[str]:
    """`subject_key` of every span of the text's last `last_words` words that starts at a word's start and ends at a
    word's end, up to `max_words` words: what the text can name as a whole name ("Who is the son of Babur?" names
    "babur", "son of babur", ...): at most `last_words` · `max_words` of them."""
    words = list(_NAME_WORD.finditer(text))[-last_words:]
    return list(dict.fromkeys(
        subject_key(text[words[i].start():words[j].end()])
        for i in range(len(words)) for j in range(i, min(i + max_words, len(words)))
    ))


# Kinds whose fact's object a reverse question may name (`Edit.fact_object`): the facts with a target, and an erased
# fact, by the answer it erases (its backwards question is refused too).
OBJECT_KINDS = frozenset({EditKind.MODIFY, EditKind.INSERT, EditKind.ERASE})
# Kinds that state a fact or rule about `subject`: indexed, gated, and superseded by a newer edit of the same fact.
FACT_KINDS = frozenset({EditKind.MODIFY, EditKind.INSERT, EditKind.ERASE, EditKind.PATCH})


@dataclass(frozen=True)
class EditSpec:
    """A fact as a caller registers it, before the server assigns an id. The fields per kind: see `Edit`."""

    subject: str
    prompt: str
    target_new: str
    target_true: str | None = None
    paraphrases: tuple[str, ...] = ()
    kind: EditKind = EditKind.MODIFY
    pattern: str = ""
    replacement: str = ""
    aliases: tuple[str, ...] = ()

    def key_texts(self) -> tuple[str, ...]:
        """What the memory will index for this edit (`Edit.key_texts`)."""
        return tuple(k.text for k in edit_keys(self.kind, self.subject, self.prompt, self.paraphrases, self.aliases))


@dataclass(frozen=True)
class EditKey:
    """One text the memory indexes for an edit, and the name the gate reads as that text's subject."""

    text: str
    subject: str


def alias_prompt(prompt: str, subject: str, alias: str) -> str:
    """The prompt with its first occurrence of `subject` replaced by `alias` (validation makes sure a fact edit's
    prompt holds its subject)."""
    return prompt.replace(subject, alias, 1) if subject else prompt


def edit_keys(
    kind: EditKind, subject: str, prompt: str, paraphrases: tuple[str, ...], aliases: tuple[str, ...]
) -> tuple[EditKey, ...]:
    """An edit's keys: its prompt and paraphrases, read with its subject, then one key per alias, the prompt with
    the subject replaced by the alias and read with the alias as its subject (issue 24). A regex patch has none."""
    if kind is EditKind.REGEX:
        return ()
    return (*(EditKey(t, subject) for t in (prompt, *paraphrases)),
            *(EditKey(alias_prompt(prompt, subject, a), a) for a in aliases))


@dataclass(frozen=True)
class Edit:
    """A stored edit in one namespace. Which fields each kind uses (validation enforces it):

    - MODIFY, INSERT: `subject` occurs in `prompt` (a cloze or question) whose answer becomes `target_new`;
      `target_true` is the answer before the edit when known (INSERT: usually none).
    - ERASE: `subject` and `prompt` name the fact to stop stating; `target_new` is "" (the refusal is the server's
      setting, not the edit's); `target_true` is the erased answer when known.
    - PATCH: `prompt` is the rule in plain words ("If asked whether Pluto is a planet, say it is a dwarf planet"),
      `subject` (occurring in it) what the rule is about, `target_new` ""; paraphrases are further key texts
      (e.g. questions the rule covers).
    - REGEX: `pattern` (a Python `re` pattern, compiled when added) and `replacement` (an `re.sub` template, may
      be "") rewrite the base model's output in the namespace; `subject` is an optional label; `prompt`,
      `target_new`, `target_true`, `paraphrases` and `aliases` are empty: a regex patch has no key texts and is
      never retrieved.

    `aliases` (fact kinds) are other names of `subject` ("Zic family member 3" for ZIC3): each adds a key text,
    the prompt naming the alias instead (`edit_keys`), so a query that names only the alias finds the edit.

    Lifecycle: `version` is 1 when added and grows by one with each UpdateEdit (same id). `supersedes` is the id of
    the live edit of the same fact that this one replaced when it was added ("" for none). Only live edits answer;
    `superseded_by` is set on an edit that a newer one replaced (it is history until that one is deleted).
    `updated_at_unix_s` is when this version was written (`created_at_unix_s` for version 1).
    """

    id: str
    namespace: str
    subject: str
    prompt: str
    target_new: str
    target_true: str | None
    paraphrases: tuple[str, ...]
    created_at_unix_s: float
    kind: EditKind = EditKind.MODIFY
    pattern: str = ""
    replacement: str = ""
    version: int = 1
    supersedes: str = ""
    superseded_by: str = ""
    updated_at_unix_s: float = 0.0
    aliases: tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        """Answers queries (not replaced by a newer edit of the same fact)."""
        return not self.superseded_by

    def statement(self) -> str:
        """The fact as one sentence, e.g. 'The Space Needle is located in the city of Taipei.'; a patch's rule."""
        if self.kind is EditKind.PATCH:
            return self.prompt.strip()
        return f"{self.prompt.rstrip()} {self.target_new.strip()}."

    def index_keys(self) -> tuple[EditKey, ...]:
        """The texts the memory indexes for this edit, each with the subject the gate reads in it (`edit_keys`)."""
        return edit_keys(self.kind, self.subject, self.prompt, self.paraphrases, self.aliases)

    def key_texts(self) -> tuple[str, ...]:
        """The texts the memory indexes for this edit: its prompt, every paraphrase, the prompt under each alias
        (none for a regex patch)."""
        return tuple(k.text for k in self.index_keys())

    @property
    def fact_object(self) -> str:
        """The object of the edit's fact, as a reverse question names it: the new object, or for an erase edit the
        answer it erases ("" when not given); "" for kinds without one."""
        if self.kind is EditKind.ERASE:
            return self.target_true or ""
        return self.target_new if self.kind in OBJECT_KINDS else ""

    @property
    def object_key(self) -> str:
        """What a reverse question finds this edit by (`object_key` of `fact_object`)."""
        return object_key(self.fact_object)

    def spec(self) -> EditSpec:
        """The caller's fields of this edit, as AddEdits or UpdateEdit would take them."""
        return EditSpec(self.subject, self.prompt, self.target_new, self.target_true, self.paraphrases, self.kind,
                        self.pattern, self.replacement, self.aliases)


class EditAction(enum.Enum):
    """What a change did to an edit, in the audit log."""

    ADD = "add"
    UPDATE = "update"
    SUPERSEDE = "supersede"  # a newer edit of the same fact replaced this one
    DELETE = "delete"
    RESTORE = "restore"  # the edit that superseded this one was deleted: this one is live again
    PARAMETRIC_APPLY = "parametric_apply"
    PARAMETRIC_ROLLBACK = "parametric_rollback"


@dataclass(frozen=True)
class EditEvent:
    """One entry of the audit log: a change to one edit, committed with the change itself."""

    namespace: str
    token_name: str  # the caller's token; "" when the server runs without auth
    action: EditAction
    edit_id: str
    before_json: str  # the edit (or the parametric application) before and after, as JSON; "" for none
    after_json: str
    at_unix_s: float = 0.0  # set by the store when 0
    seq: int = 0  # set by the store: the log's order


@dataclass(frozen=True)
class EncodedText:
    """A text as the sentence encoder sees it, from one forward pass."""

    text: str
    vector: np.ndarray  # (dim,) unit-length sentence embedding
    token_vectors: np.ndarray  # (n_tokens, dim) contextual token embeddings, special tokens included
    token_spans: tuple[tuple[int, int], ...]  # character span of each token; (0, 0) for special tokens


@dataclass(frozen=True)
class KeyEncodings:
    """Edits' key texts through the encoder, each once: the prompts whole (their token vectors are the gate's view
    of an edit and the query of a supersede decision), every key text's unit vector (the index keys)."""

    prompts: dict[str, EncodedText]
    vectors: dict[str, np.ndarray]  # text → (dim,)


@dataclass(frozen=True)
class Hit:
    """An edit found by retrieval, with the cosine similarity of its closest key text; or, `by_object`, found
    because the query names its new object (a reverse question), which the gate reads the edit from."""

    edit: Edit
    similarity: float
    by_object: bool = False


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
    REVERSE = "reverse"  # a question found by an edit's object, answered by its subject (an erase edit: the refusal)


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
    acted: tuple[str, ...] = ()  # edits whose state beside the weights acted on it (a GRACE entry), in order
    queue_ms: float = 0.0  # waiting for a place in the model's running batch


@dataclass(frozen=True)
class TokenScores:
    """Teacher-forced view of a target continuation: per target token."""

    target_ids: tuple[int, ...]
    predicted_ids: tuple[int, ...]  # argmax of the model at each target position
    target_logprobs: tuple[float, ...]
    acted: tuple[str, ...] = ()  # edits whose state beside the weights acted on it, in order


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
    # The edit was found by the new object the query names (a reverse question): its answer is not the edit's target.
    by_object: bool = False
    # Further facts an in-scope answer reads after `edit` (issue 24 item 2): edits the gate also let in, then edits
    # about an earlier fact's new object (the country an edit moved the subject to, whose capital was edited too).
    related: tuple[Edit, ...] = ()

    @property
    def route_label(self) -> str:
        """The route's name for logs, marking base answers the counterfactual model handed over."""
        return f"{self.route.value} (abstained)" if self.abstained else self.route.value


@dataclass(frozen=True)
class Answer:
    generation: Generation
    decision: Decision
    timings: Timings
