"""The token batches an edit is computed from: prompts (optionally after a context prefix), the
position of the subject's last token in each, and the positions that predict the answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from server.errors import FailedPrecondition


@dataclass(frozen=True)
class PromptBatch:
    input_ids: torch.Tensor  # (n, seq) right-padded
    attention_mask: torch.Tensor  # (n, seq)
    subject_last: torch.Tensor  # (n,) position of the subject's last token
    answer_ids: torch.Tensor  # (t,) the answer's tokens; t = 0 without an answer
    answer_positions: torch.Tensor  # (n, t) the positions whose logits predict each answer token


@dataclass(frozen=True)
class EditPrompts:
    """The texts an edit's key is averaged over and its output change is optimised on."""

    key: tuple[str, ...]  # the edit's prompt after each context prefix
    value: tuple[str, ...]  # those, then other wordings of the same question (wordings.py)


def with_prefix(prefix: str, prompt: str) -> str:
    """ROME's context templates: "{prefix}. {prompt}", or the prompt alone for an empty prefix."""
    return f"{prefix}. {prompt}" if prefix else prompt


def edit_prompts(prompt: str, prefixes: Sequence[str], other_wordings: Sequence[str] = ()) -> EditPrompts:
    """The prompt after each prefix for the key; the other wordings, unprefixed, join them for the value."""
    prefixed = tuple(with_prefix(p, prompt) for p in prefixes)
    return EditPrompts(key=prefixed, value=prefixed + tuple(other_wordings))


def subject_last_token(tokenizer: PreTrainedTokenizerBase, text: str, subject: str) -> int:
    """Index of the last token overlapping the last occurrence of `subject` in `text`."""
    start = text.rfind(subject)
    if not subject or start < 0:
        raise FailedPrecondition(f"subject {subject!r} does not occur in {text!r}; parametric edits need it")
    end = start + len(subject)
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not inside:
        raise FailedPrecondition(f"subject {subject!r} maps to no token of {text!r}")
    return inside[-1]


def answer_token_ids(tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
    """The answer as it continues a prompt: one leading space, no special tokens."""
    ids = tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
    if not ids:
        raise FailedPrecondition(f"answer {answer!r} is empty after tokenisation")
    return list(ids)


def build_batch(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], subject: str | Sequence[str], answer: str | None = None
) -> PromptBatch:
    """Each text, followed by the answer's tokens when given, right-padded into one batch; `subject` is every
    text's, or one per text."""
    subjects = [subject] * len(texts) if isinstance(subject, str) else list(subject)
    assert len(subjects) == len(texts), f"{len(subjects)} subjects for {len(texts)} texts"
    answer_ids = answer_token_ids(tokenizer, answer) if answer is not None else []
    rows, subject_last, answer_positions = [], [], []
    for text, subject in zip(texts, subjects, strict=True):
        ids = list(tokenizer(text)["input_ids"])
        subject_last.append(subject_last_token(tokenizer, text, subject))
        answer_positions.append([len(ids) - 1 + j for j in range(len(answer_ids))])
        rows.append(ids + answer_ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return PromptBatch(
        input_ids=torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        attention_mask=torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        subject_last=torch.tensor(subject_last),
        answer_ids=torch.tensor(answer_ids, dtype=torch.long),
        answer_positions=torch.tensor(answer_positions, dtype=torch.long).reshape(len(rows), len(answer_ids)),
    )
