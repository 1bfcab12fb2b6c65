"""The answer to an in-scope query on an erase edit: the operator's refusal, the same words every time.

No model runs: an erased fact must not leak through a model asked to refuse it, and the refusal costs nothing.
It is written as a continuation (after a space, like the other routes' answers), token ids from the served
model's tokenizer, cut by max_new_tokens and stop strings as a generated text would be. Teacher-forced scoring
sees a model sure of the refusal and of nothing else: a target token is predicted (log-probability 0) while the
target so far agrees with the refusal, and otherwise EOS is (the target's token has log-probability -inf).
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from server.errors import InvalidArgument
from server.interfaces import StopCheck, TextSink
from server.types import Edit, FinishReason, Generation, GenerationOptions, TokenScores


class RefusalGenerator:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, refusal: str) -> None:
        self._tokenizer = tokenizer
        self.text = f" {refusal.strip()}"
        self._ids = tuple(int(i) for i in tokenizer(self.text, add_special_tokens=False)["input_ids"])
        eos = tokenizer.eos_token_id
        self._end_id = int(eos) if eos is not None else self._ids[-1]

    def generate(
        self,
        prompt: str,
        edit: Edit | None,
        options: GenerationOptions,
        on_text: TextSink | None = None,
        should_stop: StopCheck | None = None,
    ) -> Generation:
        ids = self._ids[: options.max_new_tokens]
        whole = len(ids) == len(self._ids)
        text = self.text if whole else str(self._tokenizer.decode(list(ids), skip_special_tokens=True))
        finish = FinishReason.EOS if whole else FinishReason.LENGTH
        stops = [i + len(s) for s in options.stop if (i := text.find(s)) >= 0]
        if stops:
            text, finish = text[: min(stops)], FinishReason.STOP
        if on_text is not None and text:
            on_text(text)
        return Generation(text, ids, finish, prompt_tokens=0)

    def score(self, prompt: str, edit: Edit | None, target: str) -> TokenScores:
        target_ids = tuple(int(i) for i in self._tokenizer(target, add_special_tokens=False)["input_ids"])
        if not target_ids:
            raise InvalidArgument("target is empty after tokenisation; give a non-empty continuation")
        predicted: list[int] = []
        agrees = True  # the target so far is the refusal's beginning
        for position, token in enumerate(target_ids):
            predicted.append(self._ids[position] if agrees and position < len(self._ids) else self._end_id)
            agrees = agrees and predicted[-1] == token
        logprobs = tuple(0.0 if p == t else float("-inf") for p, t in zip(predicted, target_ids, strict=True))
        return TokenScores(target_ids, tuple(predicted), logprobs)
