"""The HTTP API's request bodies: OpenAI's shapes for answering, EditService's for edits, AnswerMultiHop's.

Shapes only: ranges, limits and required texts are the service's to check, so a bad value gets the same message
over HTTP as over gRPC. Unknown fields are ignored in the OpenAI requests (chat apps send many we do not use),
refused in ours.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from server.types import EditKind

LENIENT = ConfigDict(extra="ignore")
STRICT = ConfigDict(extra="forbid")


class TextPart(BaseModel):
    model_config = LENIENT
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = LENIENT
    role: str
    content: str | list[TextPart] | None = None


class StreamOptions(BaseModel):
    model_config = LENIENT
    include_usage: bool = False


class Sampling(BaseModel):
    """What chat and text completions share. No temperature means greedy (OpenAI's default is 1): out-of-scope
    answers are then the base model's exact tokens."""

    model_config = LENIENT
    model: str | None = None  # any value is accepted: one model is served
    max_tokens: int | None = None  # None: the server's default_max_new_tokens
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None


class ChatCompletionRequest(Sampling):
    messages: list[Message]
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens; wins when both are set


class CompletionRequest(Sampling):
    prompt: str | list[str]


class EditBody(BaseModel):
    """An edit as AddEdits and UpdateEdit take it (EditSpec). `kind` by its lower-case name, as editctl and the
    README write it; which fields each kind uses is the service's to check. A regex patch sets only `pattern`,
    `replacement` and optionally `subject`, so the texts a fact needs default to empty here, as in the proto."""

    model_config = STRICT
    subject: str = ""
    prompt: str = ""
    target_new: str = ""
    target_true: str | None = None
    paraphrases: list[str] = Field(default_factory=list)
    kind: EditKind = EditKind.MODIFY
    pattern: str = ""
    replacement: str = ""
    aliases: list[str] = Field(default_factory=list)


class AddEditsBody(BaseModel):
    model_config = STRICT
    edits: list[EditBody]
    skip_supersede: bool = False  # as AddEditsRequest.skip_supersede


class CorrectionBody(BaseModel):
    """The Correct RPC: a correction of one exchange, as free text or as the edit's fields."""

    model_config = STRICT
    question: str
    answer: str = ""
    text: str | None = None
    edit: EditBody | None = None
    dry_run: bool = False


class MultiHopBody(BaseModel):
    """The AnswerMultiHop RPC: the question, and optionally its single-hop steps ("#k": step k's answer)."""

    model_config = STRICT
    question: str
    steps: list[str] = Field(default_factory=list)
