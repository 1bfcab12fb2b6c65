"""Text generation with a Hugging Face causal LM: one decoding path for every generator.

Streams text as it is produced, stops on stop strings or when the caller goes away,
and reports the token ids, so routes can be compared token for token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from transformers import (
    BatchEncoding,
    Cache,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
)
from transformers.generation.streamers import BaseStreamer

from server.errors import InvalidArgument
from server.generators.batching import Decoding, Lane, ModelThread, watching
from server.interfaces import RowWatch, StopCheck, TextSink
from server.types import FinishReason, Generation, GenerationOptions, TokenScores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CausalLM:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    max_prompt_tokens: int | None = None  # None: no limit
    # Watches which edits' state beside the weights acted on which rows (ParametricEditor.watching); None: none.
    watch: RowWatch | None = None
    # The model thread that batches concurrent decoding; None: decode here, alone (exact).
    batching: ModelThread | None = None
    _lane: Lane | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.batching is not None:
            object.__setattr__(self, "_lane", self.batching.lane(self.model, self.watch))

    def decode(
        self,
        prompt: str,
        options: GenerationOptions,
        on_text: TextSink | None = None,
        should_stop: StopCheck | None = None,
        prefill: Cache | None = None,
    ) -> Generation:
        """Continues `prompt` under `options`; greedy decoding is deterministic. `prefill`: the model's cache of
        all but the prompt's last token, from an earlier pass over the same prompt (read once, then extended).

        Called off the model thread with batching on, the request joins the model's running batch and this waits
        for it; on the model thread (a call that has the model to itself), it decodes alone."""
        inputs = self.tokenizer(prompt, return_tensors="pt").to(self.model.device)
        prompt_length = inputs["input_ids"].shape[1]
        self._check_prompt_length(prompt_length)
        tracker = _TextTracker(self.tokenizer, prompt_length, options.stop, on_text, should_stop)
        if self._lane is not None and self.batching is not None and not self.batching.on_thread() \
                and self._batchable(prompt_length + options.max_new_tokens):
            sequence = Decoding(inputs["input_ids"], options, tracker, frozenset(self._eos_ids()),
                                should_stop or (lambda: False), prefill)
            decoded = self.batching.decode(self._lane, sequence).result()
            tracker.end()
            new_ids, acted, queue_ms = decoded.new_ids, decoded.acted, decoded.queue_ms
        else:
            new_ids, acted = self._decode_alone(inputs, options, tracker, prefill)
            queue_ms = 0.0
        return Generation(tracker.final_text(), new_ids, tracker.finish_reason(new_ids, self._eos_ids()),
                          prompt_length, acted, queue_ms)

    def _decode_alone(
        self, inputs: BatchEncoding, options: GenerationOptions, tracker: _TextTracker, prefill: Cache | None
    ) -> tuple[tuple[int, ...], tuple[str, ...]]:
        prompt_length = inputs["input_ids"].shape[1]
        if options.seed is not None:
            torch.manual_seed(options.seed)  # only the model thread samples here
        with torch.inference_mode(), watching(self.watch) as acts:
            output = self.model.generate(  # type: ignore[operator]  # transformers types it loosely
                **inputs,
                generation_config=self._generation_config(options),
                streamer=tracker,
                stopping_criteria=[tracker],
                past_key_values=prefill,
            )  # (1, prompt + new)
        return tuple(int(t) for t in output[0, prompt_length:]), acts.of_row(0) if acts is not None else ()

    def _batchable(self, total_tokens: int) -> bool:
        """Whether a sequence this long fits every layer's window: the batch keeps whole sequences in every layer
        and applies a sliding window through the mask, which a cache cut to its window (the judgement's) is not."""
        window = getattr(self.model.config, "sliding_window", None)
        return window is None or total_tokens < window

    def score(self, prompt: str, target: str) -> TokenScores:
        """Teacher forcing: the model's argmax and log-probability at each token of `target` after `prompt`."""
        prompt_ids = self.tokenizer(prompt)["input_ids"]
        self._check_prompt_length(len(prompt_ids))
        target_ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        if not target_ids:
            raise InvalidArgument("target is empty after tokenisation; give a non-empty continuation")
        ids = torch.tensor([prompt_ids + target_ids], device=self.model.device)  # (1, prompt + target)
        n = len(target_ids)
        with torch.inference_mode(), watching(self.watch) as acts:
            # Logits only where the target is predicted: the output layer is most of a small model's cost.
            logits = self.model(input_ids=ids, logits_to_keep=n + 1).logits[0, :-1]  # (n, vocab)
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (n, vocab)
        wanted = torch.tensor(target_ids, device=logits.device)  # (n,)
        return TokenScores(
            target_ids=tuple(target_ids),
            predicted_ids=tuple(int(i) for i in logits.argmax(dim=-1)),
            target_logprobs=tuple(float(x) for x in logprobs.gather(1, wanted[:, None])[:, 0]),
            acted=acts.of_row(0) if acts is not None else (),
        )

    def _check_prompt_length(self, n_tokens: int) -> None:
        if self.max_prompt_tokens is not None and n_tokens > self.max_prompt_tokens:
            raise InvalidArgument(
                f"prompt is {n_tokens} tokens after tokenisation (with any edit text its route adds); "
                f"the limit is {self.max_prompt_tokens}: shorten the prompt"
            )

    def _generation_config(self, options: GenerationOptions) -> GenerationConfig:
        base = self.model.generation_config
        sampling = {} if options.greedy else {"temperature": options.temperature, "top_p": options.top_p, "top_k": 0}
        return GenerationConfig(
            max_new_tokens=options.max_new_tokens,
            do_sample=not options.greedy,
            bos_token_id=base.bos_token_id,
            eos_token_id=base.eos_token_id,
            pad_token_id=base.pad_token_id if base.pad_token_id is not None else self.tokenizer.pad_token_id,
            **sampling,
        )

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        return set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())


class _TextTracker(BaseStreamer, StoppingCriteria):
    """Decodes new tokens as they come: streams text deltas and stops on stop strings or cancellation.

    generate() asks the stopping criteria about each new token before it hands the token to the
    streamer, so both paths read the tokens they are given and decode only when the tokens changed.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_length: int,
        stop: tuple[str, ...],
        on_text: TextSink | None,
        should_stop: StopCheck | None,
    ) -> None:
        self._tokenizer = tokenizer
        self._prompt_length = prompt_length
        self._stop = stop
        self._on_text = on_text
        self._should_stop = should_stop
        self._ids: list[int] = []  # the new tokens so far, from whichever path saw them first
        self._put_ids: list[int] = []
        self._seen_prompt = False
        self._text = ""
        self._sent = 0  # characters already passed to on_text

    # BaseStreamer: generate() first puts the prompt, then each new token.
    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self._put_ids.extend(int(t) for t in value.reshape(-1))
        if len(self._put_ids) > len(self._ids):  # not yet seen by __call__
            self._update(list(self._put_ids))
        self._emit(self._streamable_text())

    def end(self) -> None:
        self._emit(self.final_text())

    # StoppingCriteria: input_ids is (1, prompt + new) and already holds the newest token.
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        self._update([int(t) for t in input_ids[0, self._prompt_length:]])
        return torch.full((input_ids.shape[0],), self._must_stop(), dtype=torch.bool, device=input_ids.device)

    # The batching model thread's sink (batching.TokenSink): every new token so far, after each step.
    def advance(self, new_ids: list[int]) -> bool:
        self._update(new_ids)
        self._emit(self._streamable_text())
        return self._must_stop()

    def _must_stop(self) -> bool:
        """A stop string is in the text, or the caller went away."""
        stopped = self._should_stop is not None and self._should_stop()
        if stopped:
            log.info("generation stopped after %d new tokens: the caller went away or its deadline passed",
                     len(self._ids))
        return self._cut_at_stop() is not None or stopped

    def final_text(self) -> str:
        cut = self._cut_at_stop()
        return self._text if cut is None else self._text[:cut]

    def finish_reason(self, new_ids: tuple[int, ...], eos_ids: set[int]) -> FinishReason:
        if self._cut_at_stop() is not None:
            return FinishReason.STOP
        if new_ids and new_ids[-1] in eos_ids:
            return FinishReason.EOS
        return FinishReason.LENGTH

    def _update(self, ids: list[int]) -> None:
        if ids != self._ids:
            self._ids = ids
            self._text = str(self._tokenizer.decode(ids, skip_special_tokens=True))

    def _cut_at_stop(self) -> int | None:
        """The end of the earliest stop string in the text, if any."""
        ends = [i + len(s) for s in self._stop if (i := self._text.find(s)) >= 0]
        return min(ends) if ends else None

    def _streamable_text(self) -> str:
        """The text so far, less a partial UTF-8 character and a tail that may yet become a stop string."""
        text = self.final_text().rstrip("\ufffd")
        if self._stop and self._cut_at_stop() is None:
            hold = max(len(s) for s in self._stop) - 1
            text = text[: max(self._sent, len(text) - hold)]
        return text

    def _emit(self, text: str) -> None:
        if self._on_text is not None and len(text) > self._sent:
            self._on_text(text[self._sent:])
            self._sent = len(text)
