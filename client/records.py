"""The client's plain records: what callers pass to and get back from EditcacheClient.

Frozen dataclasses with no protobuf or gRPC in them; `client.convert` maps them to and from the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EDIT_KINDS = ("modify", "insert", "erase", "patch", "regex")


@dataclass(frozen=True)
class EditInput:
    """A fact to register: an edit without the server-set fields.

    `kind` is one of EDIT_KINDS. "erase" and "patch" leave `target_new` empty ("patch": the rule is `prompt`);
    "regex" sets only `pattern`, `replacement` and optionally `subject` as a label (the README's "Edit kinds").
    `aliases` are other names of the subject: the server also finds the edit by the prompt naming each of them.
    """

    subject: str
    prompt: str
    target_new: str
    target_true: str | None = None
    paraphrases: tuple[str, ...] = ()
    kind: str = "modify"
    pattern: str = ""
    replacement: str = ""
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("paraphrases", "aliases"):
            if isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a sequence of strings, not one string")
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.kind not in EDIT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(EDIT_KINDS)}; got {self.kind!r}")


@dataclass(frozen=True)
class EditRecord:
    """A stored edit, as the server returned it.

    `version` is 1 when added and grows with each update; `supersedes` names the edit of the same fact this one
    replaced ("" for none); `superseded_by` is set on an edit a newer one replaced (history, not answering).
    """

    id: str
    namespace: str
    subject: str
    prompt: str
    target_new: str
    target_true: str | None
    paraphrases: tuple[str, ...]
    created_at_unix_s: float
    kind: str = "modify"
    pattern: str = ""
    replacement: str = ""
    version: int = 1
    supersedes: str = ""
    superseded_by: str = ""
    updated_at_unix_s: float = 0.0
    aliases: tuple[str, ...] = ()
    # With get_edit(history=True): the earlier versions of this id, then the edits it superseded, newest first.
    history: tuple[EditRecord, ...] = ()

    def to_input(self) -> EditInput:
        """The caller's fields of this edit, as add_edits or update_edit take them."""
        return EditInput(self.subject, self.prompt, self.target_new, self.target_true, self.paraphrases, self.kind,
                         self.pattern, self.replacement, self.aliases)


@dataclass(frozen=True)
class EditEventRecord:
    """One entry of a namespace's audit log.

    `action` is "add", "update", "supersede", "delete", "restore", "parametric_apply" or "parametric_rollback";
    `before` and `after` are the edit (or the baked edit) as JSON objects, None where there was none; `token_name`
    is the caller's token ("" when the server runs without auth).
    """

    seq: int
    at_unix_s: float
    namespace: str
    token_name: str
    action: str
    edit_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass(frozen=True)
class EditEventPage:
    events: tuple[EditEventRecord, ...]  # oldest first
    next_page_token: str  # empty on the last page


@dataclass(frozen=True)
class EditPage:
    """One page of a namespace's edits, oldest first."""

    edits: tuple[EditRecord, ...]
    next_page_token: str  # empty on the last page
    total: int  # edits in the namespace


@dataclass(frozen=True)
class GenerationOptions:
    """How `generate`, `stream` and `chat` decode. The zero values mean the server's defaults (greedy).

    `top_p` is the nucleus mass in (0, 1] (0 means 1); generation ends after any of the `stop` strings.
    """

    max_new_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            raise TypeError("stop must be a sequence of strings, not one string")
        object.__setattr__(self, "stop", tuple(self.stop))


@dataclass(frozen=True)
class ParametricOptions:
    """How `apply_parametric` edits the weights; None (and empty) take the server's defaults for the model.

    `layer` is ROME's, FT's, GRACE's and WISE's (T-Patcher's and CaliNET's: whose FFN), `layers` MEMIT's and
    AlphaEdit's; `mom2_weight` is MEMIT's λ, `norm_constraint` FT's largest change of one weight, `null_space_cutoff`
    AlphaEdit's eigenvalue cut-off in (0, 1], `deferral_radius` GRACE's ε as a share of the key's norm, in (0, 10];
    `fire_at` ("last" or "subject") and `memory_subjects` (in [0, 256]; at least 1 firing at the subject) are
    T-Patcher's and CaliNET's, and so are `own_subject_questions` and `own_subject_tokens` (each in [0, 64]; firing
    at the last token only).
    """

    layer: int | None = None
    layers: tuple[int, ...] = ()
    steps: int | None = None
    lr: float | None = None
    mom2_weight: float | None = None
    norm_constraint: float | None = None
    null_space_cutoff: float | None = None
    deferral_radius: float | None = None
    fire_at: str | None = None  # T-Patcher, CaliNET: "last" or "subject"
    memory_subjects: int | None = None  # T-Patcher, CaliNET: other subjects asked the edit's questions in the memory
    own_subject_questions: int | None = None  # T-Patcher, CaliNET: other questions about the edit's subject
    own_subject_tokens: int | None = None  # T-Patcher, CaliNET: the model's tokens continuing each, at least
    remove_from_gate: bool = False  # the gate stops seeing the edits: only the weights carry them

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))


@dataclass(frozen=True)
class GenerationResult:
    """An answer and why it was given.

    `route` is "base", "counterfactual", "ike", "parametric", "prompt" or "reverse";
    `edit_id` is None on the base route; `timings_ms` has the keys embed,
    search, gate, queue, generate and total; `finish_reason` is "length",
    "eos" or "stop".
    """

    text: str
    route: str
    edit_id: str | None
    gate_score: float
    timings_ms: dict[str, float]
    token_ids: tuple[int, ...]
    finish_reason: str
    abstained: bool = False  # the gate let it in, the counterfactual model handed it to the base model
    # Further edits the in-scope answer read after edit_id, in the order its prompt states them (several edits
    # per answer: others the gate let in, then edits about an earlier fact's new object).
    related_edit_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class HopResult:
    """One step of a multi-hop answer: the step as asked (earlier answers filled in), its answer, and where the answer
    came from: `route` "base" with `edit_id` None, or the route of the edit whose new object it is."""

    question: str
    answer: str
    route: str
    edit_id: str | None
    related_edit_ids: tuple[str, ...] = ()  # further edits the step's answer read after edit_id


@dataclass(frozen=True)
class MultiHopResult:
    """A multi-hop answer: `answer` is the last step's; `plan` the steps as given or planned; `hops` every step asked;
    `edit_ids` the edits that answered steps, in order; `timings_ms` has the keys queue and total."""

    answer: str
    plan: tuple[str, ...]
    hops: tuple[HopResult, ...]
    edit_ids: tuple[str, ...]
    timings_ms: dict[str, float]


@dataclass(frozen=True)
class ScoreResult:
    """Teacher-forced scores of a continuation: per target token, the model's argmax and log-probability."""

    route: str
    edit_id: str | None
    gate_score: float
    target_ids: tuple[int, ...]
    predicted_ids: tuple[int, ...]
    target_logprobs: tuple[float, ...]
    timings_ms: dict[str, float]
    abstained: bool = False  # as in GenerationResult
    related_edit_ids: tuple[str, ...] = ()  # as in GenerationResult

    @property
    def token_accuracy(self) -> float:
        """Share of target tokens that are the model's argmax (EasyEdit's rewrite_acc)."""
        hits = sum(t == p for t, p in zip(self.target_ids, self.predicted_ids, strict=True))
        return hits / len(self.target_ids)


@dataclass(frozen=True)
class ServerInfo:
    model: str
    model_type: str
    parameters: int
    encoder: str
    gate: str
    threshold: float
    top_k: int
    in_scope_route: str
    routes: tuple[str, ...]
    version: str
    model_fingerprint: str = ""
    degraded: tuple[str, ...] = ()  # a sentence per default part the server could not use, and what answers instead


@dataclass(frozen=True)
class ChatTurn:
    """One turn of a conversation: role "system" (first turn only), "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class ChatResult:
    """A chat answer and why it was given.

    `reply` is the assistant's turn (send it back as the next request's assistant turn); `generation` is the
    raw continuation with its route, edit id, gate score, token ids and timings; `edit` is the edit that
    answered (None on the base route); `prompt` is the conversation as the model read it; `gate_query` the
    text the gate scored (the latest user turn, or it after the previous exchange for a follow-up).
    """

    reply: str
    generation: GenerationResult
    edit: EditRecord | None
    prompt: str
    gate_query: str

    @property
    def route(self) -> str:
        return self.generation.route

    @property
    def edit_id(self) -> str | None:
        return self.generation.edit_id

    @property
    def gate_score(self) -> float:
        return self.generation.gate_score


@dataclass(frozen=True)
class Correction:
    """A correction as the server read it: the edit it stored (or, with dry_run, would store)."""

    edit: EditRecord  # id "" when not stored
    stored: bool
    extraction: tuple[str, ...]  # free-text corrections: the extraction model's raw outputs


@dataclass(frozen=True)
class ParametricProgress:
    stage: str  # "prefixes", "statistics", "value", "fine-tune", "layer"
    step: int
    total: int
    loss: float | None
    edit_id: str | None


@dataclass(frozen=True)
class BakedEditRecord:
    """An edit whose deltas are in the served model's weights."""

    namespace: str
    edit_id: str
    method: str
    application_id: int
    modules: tuple[str, ...]
    in_gate: bool
    created_at_unix_s: float


@dataclass(frozen=True)
class ParametricResult:
    application_id: int
    edits: tuple[BakedEditRecord, ...]
    seconds: float


@dataclass(frozen=True)
class NeuronScore:
    neuron: int  # index among the layer's FFN intermediate neurons
    attribution: float  # its integrated gradient: the share of the answer's probability it accounts for
    activation: float  # at the prompt's last token


@dataclass(frozen=True)
class LayerNeurons:
    layer: int
    module: str  # e.g. "model.layers.17.mlp.down_proj"
    neurons: tuple[NeuronScore, ...]  # highest attribution first


@dataclass(frozen=True)
class AttributionResult:
    """The FFN neurons that carry an answer after a prompt (KN's attribution, `EditcacheClient.attribute`)."""

    answer_token: str
    probability: float
    layers: tuple[LayerNeurons, ...]
