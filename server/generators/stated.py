"""Answers stated without a model: the refusal for an erase edit, and the edit's subject for a reverse question.

- **Refusal.** An in-scope query on an erase edit gets the operator's refusal, the same words every time. No model
  runs: an erased fact must not leak through a model asked to refuse it, and the refusal costs nothing.
- **Reverse.** A query the gate found by an edit's new object, which names no subject of the edit (the object gate
  judges it the edit's fact asked backwards: "Who is the son of Wang Chonghua?" after "Wang Jipeng's father is Wang
  Chonghua"), is answered by the edit's subject (route `reverse`; an erase edit, keyed by the answer it erases, gets
  the refusal there). The stored fact answers it exactly; the
  counterfactual model, trained on forward questions, often answers with the object the query names instead
  (docs/BENCHMARKS.md, "Reverse questions answered by the edit's subject").

An answer is written as a continuation (after a space, like the other routes' answers), token ids from the served
model's tokenizer, cut by max_new_tokens and stop strings as a generated text would be. Teacher-forced scoring sees a
model sure of the answer and of nothing else: a target token is predicted (log-probability 0) while the target so far
agrees with the answer, and otherwise EOS is (the target's token has log-probability -inf).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from transformers import PreTrainedTokenizerBase

from server.errors import FailedPrecondition, InvalidArgument
from server.interfaces import StopCheck, TextSink
from server.types import Edit, FinishReason, Generation, GenerationOptions, TokenScores


class StatedGenerator:
    """A generator whose answer is `words(edit)`, stated as the served model's tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, words: Callable[[Edit | None], str]) -> None:
        self._tokenizer = tokenizer
        self._words = words
        eos = tokenizer.eos_token_id
        self._end_id = int(eos) if eos is not None else None

    def generate(
        self,
        prompt: str,
        edit: Edit | None,
        options: GenerationOptions,
        on_text: TextSink | None = None,
        should_stop: StopCheck | None = None,
        related: Sequence[Edit] = (),
    ) -> Generation:
        answer, answer_ids = self._answer(edit)
        ids = answer_ids[: options.max_new_tokens]
        whole = len(ids) == len(answer_ids)
        text = answer if whole else str(self._tokenizer.decode(list(ids), skip_special_tokens=True))
        finish = FinishReason.EOS if whole else FinishReason.LENGTH
        stops = [i + len(s) for s in options.stop if (i := text.find(s)) >= 0]
        if stops:
            text, finish = text[: min(stops)], FinishReason.STOP
        if on_text is not None and text:
            on_text(text)
        return Generation(text, ids, finish, prompt_tokens=0)

    def score(self, prompt: str, edit: Edit | None, target: str, related: Sequence[Edit] = ()) -> TokenScores:
        _, answer_ids = self._answer(edit)
        target_ids = tuple(int(i) for i in self._tokenizer(target, add_special_tokens=False)["input_ids"])
        if not target_ids:
            raise InvalidArgument("target is empty after tokenisation; give a non-empty continuation")
        end_id = self._end_id if self._end_id is not None else answer_ids[-1]
        predicted: list[int] = []
        agrees = True  # the target so far is the answer's beginning
        for position, token in enumerate(target_ids):
            predicted.append(answer_ids[position] if agrees and position < len(answer_ids) else end_id)
            agrees = agrees and predicted[-1] == token
        logprobs = tuple(0.0 if p == t else float("-inf") for p, t in zip(predicted, target_ids, strict=True))
        return TokenScores(target_ids, tuple(predicted), logprobs)

    def _answer(self, edit: Edit | None) -> tuple[str, tuple[int, ...]]:
        text = f" {self._words(edit).strip()}"
        return text, tuple(int(i) for i in self._tokenizer(text, add_special_tokens=False)["input_ids"])


def refusal_generator(tokenizer: PreTrainedTokenizerBase, refusal: str) -> StatedGenerator:
    """The refusal, in the place of whatever in-scope route the gate chose (`Router.answerer`)."""
    return StatedGenerator(tokenizer, lambda edit: refusal)


def reverse_generator(tokenizer: PreTrainedTokenizerBase) -> StatedGenerator:
    """The `reverse` route: the edit's subject."""
    return StatedGenerator(tokenizer, _subject)


def _subject(edit: Edit | None) -> str:
    if edit is None or not edit.subject.strip():
        raise FailedPrecondition("the reverse route answers with an edit's subject; name an edit that has one")
    return edit.subject
