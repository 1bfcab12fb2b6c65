"""Continuous batching: the one thread that runs the language models, decoding concurrent requests together.

Requests that arrive together have their prompts read together, in one left-padded pass per model (a request with
a cache handed over, from an earlier pass over its prompt, is read alone from that cache); each then joins its
model's running batch at a token boundary; each step decodes one token for every row; a row leaves when it
finishes. Rows keep their own key-value cache, left-padded to the batch's length, with the attention mask marking
the padding and each row's own positions. Calls that need a model to themselves (scoring, parametric edits, which
may change the weights) wait until every batch has drained, and requests that came after such a call wait for it.

Written here rather than taken from transformers' continuous batching (`init_continuous_batching`): its manager
switches the model to paged attention and packs every request into one row, while this model is shared with
scoring and parametric edits (a plain forward fails while the manager runs), its parametric state reports per row
which edits acted (server/parametric/additions.py), and the counterfactual route starts from the prompt cache the
router's judgement already computed, which the manager cannot take.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Protocol, TypeVar

import torch
import torch.nn.functional as F
from transformers import Cache, DynamicCache, PreTrainedModel
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from server import metrics
from server.errors import Cancelled
from server.generators.output_head import OutputHead
from server.interfaces import RowActs, RowWatch
from server.types import GenerationOptions

T = TypeVar("T")

log = logging.getLogger(__name__)


class TokenSink(Protocol):
    def advance(self, new_ids: list[int]) -> bool:
        """Takes the new tokens so far (streams their text); True when the request must stop (a stop string, or the
        caller went away)."""
        ...


@dataclass
class Decoding:
    """One request's decoding: what the caller gives, then its state while it runs."""

    prompt_ids: torch.Tensor  # (1, prompt)
    options: GenerationOptions
    tokens: TokenSink
    eos_ids: frozenset[int]
    gone: Callable[[], bool]  # the caller went away or its deadline passed
    prefill: Cache | None = None  # a cache of the prompt's first tokens, from an earlier pass over the same prompt
    done: Future[Decoded] = field(default_factory=Future)
    submitted: float = field(default_factory=perf_counter)
    # while it runs
    new_ids: list[int] = field(default_factory=list)
    acted: list[str] = field(default_factory=list)  # edits whose state beside the weights acted on its rows
    generator: torch.Generator | None = None
    queue_ms: float = 0.0

    @property
    def length(self) -> int:
        """Tokens in its cache once its newest token is read: the prompt and every new token but the last."""
        return int(self.prompt_ids.shape[1]) + len(self.new_ids) - 1

    def take(self, token: int) -> bool:
        """Appends the next token; True when the sequence is finished."""
        self.new_ids.append(token)
        stopped = self.tokens.advance(list(self.new_ids))
        return stopped or token in self.eos_ids or len(self.new_ids) >= self.options.max_new_tokens


@dataclass(frozen=True)
class Decoded:
    new_ids: tuple[int, ...]
    acted: tuple[str, ...]
    queue_ms: float


@dataclass
class Lane:
    """One model's running batch."""

    model: PreTrainedModel
    watch: RowWatch | None = None
    # The output layer, applied here to the body's final hidden states (int8 candidates re-scored exactly);
    # None: the model's own forward computes the logits (a model whose output layer is not a float nn.Linear).
    head: OutputHead | None = None
    rows: list[Decoding] = field(default_factory=list)
    cache: DynamicCache | None = None  # every row's keys and values, (rows, heads, columns, head_dim) per layer
    mask: torch.Tensor | None = None  # (rows, columns): 1 where a row has a token, 0 where it is padded

    def forward(self, rows: list[Decoding], **inputs: Any) -> tuple[list[int], Cache]:
        """The next token of each of `rows`, from one forward call over `inputs` (one row each), and the cache it
        extended; the edits whose state beside the weights acted on a row go to that row's request."""
        with torch.inference_mode(), watching(self.watch) as acts:
            if self.head is None:
                out = self.model(**inputs, use_cache=True, logits_to_keep=1)
                tokens = choose_tokens(LogitsHead(), out.logits[:, -1], rows)
            else:
                out = self.model.base_model(**inputs, use_cache=True)
                tokens = choose_tokens(self.head, out.last_hidden_state[:, -1], rows)
        if acts is not None:
            for i, row in enumerate(rows):
                row.acted.extend(e for e in acts.of_row(i) if e not in row.acted)
        return tokens, out.past_key_values


def watching(watch: RowWatch | None) -> AbstractContextManager[RowActs | None]:
    """`watch`'s block (which edits acted on which rows of the forward calls inside it), or a block that sees none."""
    return watch() if watch is not None else nullcontext()


class Head(Protocol):
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits (rows, vocab) from the forward call's last-position output (rows, ...)."""
        ...

    def greedy(self, x: torch.Tensor) -> torch.Tensor:
        """The argmax token of each row (rows,)."""
        ...


class LogitsHead:
    """For a forward call that already returns logits: the model's own output layer."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()

    def greedy(self, x: torch.Tensor) -> torch.Tensor:
        return x.argmax(dim=-1)


def choose_tokens(head: Head, x: torch.Tensor, rows: list[Decoding]) -> list[int]:
    """Each row's next token from the last position's output x (rows, ...): greedy, or sampled under the row's own
    options and seed."""
    chosen = [0] * len(rows)
    greedy = [i for i, row in enumerate(rows) if row.options.greedy]
    if greedy:
        for i, token in zip(greedy, head.greedy(x[greedy]).tolist(), strict=True):
            chosen[i] = int(token)
    for i, row in enumerate(rows):
        if row.options.greedy:
            continue
        scores = head.logits(x[i : i + 1])  # (1, vocab)
        scores = TemperatureLogitsWarper(row.options.temperature)(None, scores)  # type: ignore[arg-type]
        if row.options.top_p < 1.0:
            scores = TopPLogitsWarper(row.options.top_p)(None, scores)  # type: ignore[arg-type]
        probs = torch.softmax(scores, dim=-1)
        chosen[i] = int(torch.multinomial(probs, 1, generator=row.generator)[0, 0])
    return chosen


def left_pad(tensor: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    """`tensor` padded with zeros before its existing columns along `dim` up to `columns`."""
    missing = columns - tensor.shape[dim]
    if missing <= 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [missing, 0]  # F.pad lists the last dim first
    return F.pad(tensor, pad)


KeysValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values, (rows, heads, columns, head_dim)


def keys_values(cache: Cache) -> KeysValues:
    return [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[union-attr,misc]


def merged(a: KeysValues, b: KeysValues) -> KeysValues:
    """The rows of `b` after those of `a`, both left-padded to the longer one's columns."""
    layers = []
    for (ka, va), (kb, vb) in zip(a, b, strict=True):
        columns = max(ka.shape[2], kb.shape[2])
        layers.append((torch.cat([left_pad(ka, columns, 2), left_pad(kb, columns, 2)]),
                       torch.cat([left_pad(va, columns, 2), left_pad(vb, columns, 2)])))
    return layers


def whole_layers(cache: Cache) -> KeysValues:
    """The cache's keys and values, checked to hold all of the sequence's tokens in every layer: in the batch,
    sliding-window layers keep every token and rely on the attention mask for their window, so that rows of any
    length can be stacked."""
    layers = keys_values(cache)
    lengths = {int(k.shape[2]) for k, _ in layers}
    if len(lengths) != 1:
        raise ValueError(f"cache layers hold different lengths {sorted(lengths)}: a sliding window was passed")
    return layers


def kept_rows(layers: KeysValues, mask: torch.Tensor, kept: list[int]) -> tuple[KeysValues, torch.Tensor]:
    """Rows `kept` of a cache and its mask (rows, columns), without the columns that are padding in all of them."""
    index = torch.tensor(kept)
    mask = mask[index]
    first = int(mask.any(dim=0).nonzero()[0, 0])  # the first column some row still uses
    return [(keys[index, :, first:], values[index, :, first:]) for keys, values in layers], mask[:, first:]


def left_padded(prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts (1, length) each, as one batch of ids (rows, columns) left-padded with 0, and its mask."""
    columns = max(int(prompt.shape[1]) for prompt in prompts)
    ids = torch.cat([left_pad(prompt, columns, 1) for prompt in prompts])
    mask = torch.cat([left_pad(torch.ones_like(prompt), columns, 1) for prompt in prompts])
    return ids, mask


MAX_PASS_TOKENS = 4096  # padded tokens in one prompt pass: bounds its activations and attention scores


def prompt_groups(lengths: list[int], max_tokens: int = MAX_PASS_TOKENS) -> list[list[int]]:
    """Which prompts to read in one padded pass (indices into `lengths`): prompts of like length together, so that
    padding at most doubles the tokens a pass reads, and no pass above `max_tokens` unless one prompt is."""
    groups: list[list[int]] = []
    group: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        padded = (len(group) + 1) * lengths[i]  # sorted, so prompt i is the group's longest
        if group and (padded > 2 * (sum(lengths[j] for j in group) + lengths[i]) or padded > max_tokens):
            groups.append(group)
            group = []
        group.append(i)
    if group:
        groups.append(group)
    return groups


class ModelThread:
    """The one thread that runs the language models: calls that need a model to themselves, one at a time, and
    decoding requests, up to `max_batch` rows per model at once, joining and leaving at token boundaries.

    Requests are taken in the order they came: a call waits for the batches to drain, and requests behind it wait
    for the call.
    """

    def __init__(self, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self._inbox: queue.Queue[_Call | tuple[Lane, Decoding] | None] = queue.Queue()
        self._waiting: list[_Call | tuple[Lane, Decoding]] = []  # in the order they came
        self._lanes: list[Lane] = []
        self._thread = threading.Thread(target=self._loop, name="model", daemon=True)
        self._thread.start()

    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def lane(self, model: PreTrainedModel, watch: RowWatch | None = None) -> Lane:
        """A batch of its own for `model` (rows of different models cannot share a forward call)."""
        lane = Lane(model, watch, self._head_for(model))
        self._lanes.append(lane)
        return lane

    def _head_for(self, model: PreTrainedModel) -> OutputHead | None:
        """An output head for `model`, shared with a lane whose model has the same output weights."""
        if shared := next((lane.head for lane in self._lanes if lane.head is not None and lane.head.reads(model)),
                          None):
            return shared
        try:
            return OutputHead(model)
        except TypeError as exc:  # int8 serving quantised the output layer already
            log.info("decoding reads the model's own output layer: %s", exc)
            return None

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Runs `fn` alone on the model thread, once every batch has drained. Cancelling the future before it
        starts keeps it from running."""
        call = _Call(fn)
        self._inbox.put(call)
        return call.future

    def decode(self, lane: Lane, sequence: Decoding) -> Future[Decoded]:
        self._inbox.put((lane, sequence))
        return sequence.done

    def shutdown(self) -> None:
        self._inbox.put(None)
        self._thread.join()

    # The model thread.

    def _loop(self) -> None:
        while True:
            busy = any(lane.rows for lane in self._lanes)
            if not self._collect(block=not busy and not self._waiting):
                self._fail_all(Cancelled("the server is shutting down"))
                return
            self._admit()
            if any(lane.rows for lane in self._lanes):
                for lane in self._lanes:
                    if lane.rows:
                        self._step(lane)
            elif self._waiting and isinstance(call := self._waiting[0], _Call):
                self._waiting.pop(0)
                call.run()

    def _collect(self, block: bool) -> bool:
        """Moves what has arrived into the waiting line; False on shutdown."""
        try:
            item = self._inbox.get(block=block)
            while True:
                if item is None:
                    return False
                self._waiting.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            return True

    def _admit(self) -> None:
        """Reads the prompts of the requests at the head of the line (up to the first call) into their batches,
        those for the same model together."""
        arrivals: dict[int, tuple[Lane, list[Decoding]]] = {}  # by id(lane)
        while self._waiting and not isinstance(self._waiting[0], _Call):
            lane, sequence = self._waiting[0]
            _, arrived = arrivals.setdefault(id(lane), (lane, []))
            if len(lane.rows) + len(arrived) >= self.max_batch:
                break
            self._waiting.pop(0)
            sequence.queue_ms = (perf_counter() - sequence.submitted) * 1e3
            if sequence.gone():
                log.info("not run: the caller went away or its deadline passed while queued (%.0f ms)",
                         sequence.queue_ms)
                sequence.done.set_exception(
                    Cancelled("the caller went away or its deadline passed before the model was free"))
                continue
            if sequence.options.seed is not None:
                sequence.generator = torch.Generator(device=lane.model.device).manual_seed(sequence.options.seed)
            arrived.append(sequence)
        for lane, arrived in arrivals.values():
            handed = [s for s in arrived if s.prefill is not None]
            fresh = [s for s in arrived if s.prefill is None]
            groups = [[s] for s in handed]
            groups += [[fresh[i] for i in group] for group in prompt_groups([s.prompt_ids.shape[1] for s in fresh])]
            for group in groups:
                self._start(lane, group)

    def _start(self, lane: Lane, sequences: list[Decoding]) -> None:
        """The prompts' pass and their first tokens; the rows join the batch unless done. When a pass over several
        prompts fails, each is read again alone, so that one bad prompt fails only its own request."""
        try:
            tokens, cache, mask = self._read_prompts(lane, sequences)
        except Exception as exc:
            if len(sequences) > 1:
                for sequence in sequences:
                    self._start(lane, [sequence])
                return
            log.exception("reading a prompt failed")
            sequences[0].done.set_exception(exc)
            return
        finished = [sequence.take(token) for sequence, token in zip(sequences, tokens, strict=True)]
        for sequence, done in zip(sequences, finished, strict=True):
            if done:
                self._finish(sequence)
        kept = [i for i, done in enumerate(finished) if not done]
        if not kept:
            return
        layers, mask = kept_rows(whole_layers(cache), mask, kept)
        if lane.cache is None or lane.mask is None:
            lane.cache, lane.mask = DynamicCache(ddp_cache_data=layers), mask
        else:
            columns = max(lane.mask.shape[1], mask.shape[1])
            lane.cache = DynamicCache(ddp_cache_data=merged(keys_values(lane.cache), layers))
            lane.mask = torch.cat([left_pad(lane.mask, columns, 1), left_pad(mask, columns, 1)])
        lane.rows.extend(sequences[i] for i in kept)

    def _read_prompts(self, lane: Lane, sequences: list[Decoding]) -> tuple[list[int], Cache, torch.Tensor]:
        """One pass over the prompts (after a handed cache's part, for a request read alone): each one's first new
        token, the cache, and its mask (rows, columns)."""
        metrics.BATCH_SIZE.labels("model").observe(len(sequences))
        if len(sequences) == 1:  # no padding, so no mask: the same pass as decoding alone
            sequence = sequences[0]
            cache = sequence.prefill if sequence.prefill is not None else DynamicCache()
            cached, length = cache.get_seq_length(), sequence.prompt_ids.shape[1]
            tokens, cache = lane.forward(sequences, input_ids=sequence.prompt_ids[:, cached:], past_key_values=cache,
                                         cache_position=torch.arange(cached, length))
            return tokens, cache, torch.ones(1, length, dtype=torch.long)
        ids, mask = left_padded([sequence.prompt_ids for sequence in sequences])
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (rows, columns): each row counts from its first token
        tokens, cache = lane.forward(sequences, input_ids=ids, attention_mask=mask, position_ids=positions,
                                     past_key_values=DynamicCache(), cache_position=torch.arange(ids.shape[1]))
        return tokens, cache, mask

    def _step(self, lane: Lane) -> None:
        """One token for every row of the lane's batch; finished rows leave it."""
        assert lane.cache is not None and lane.mask is not None
        rows = lane.rows
        metrics.BATCH_SIZE.labels("model").observe(len(rows))
        columns = lane.mask.shape[1]
        mask = torch.cat([lane.mask, torch.ones(len(rows), 1, dtype=torch.long)], dim=1)  # (rows, columns + 1)
        ids = torch.tensor([[row.new_ids[-1]] for row in rows])  # (rows, 1)
        positions = torch.tensor([[row.length] for row in rows])  # (rows, 1): each row's own position
        try:
            tokens, _ = lane.forward(rows, input_ids=ids, attention_mask=mask, position_ids=positions,
                                     past_key_values=lane.cache, cache_position=torch.tensor([columns]))
        except Exception as exc:  # the batch's state is unknown: its requests fail, the thread goes on
            log.exception("a decoding step failed")
            self._drop_lane(lane, exc)
            return
        lane.mask = mask
        finished = [row.take(token) for row, token in zip(rows, tokens, strict=True)]
        if any(finished):
            for row, done in zip(rows, finished, strict=True):
                if done:
                    self._finish(row)
            self._keep(lane, [i for i, done in enumerate(finished) if not done])

    def _keep(self, lane: Lane, kept: list[int]) -> None:
        """Only the rows `kept` stay, and the columns that are padding in every one of them go."""
        assert lane.cache is not None and lane.mask is not None
        if not kept:
            lane.rows, lane.cache, lane.mask = [], None, None
            return
        layers, lane.mask = kept_rows(keys_values(lane.cache), lane.mask, kept)
        lane.cache = DynamicCache(ddp_cache_data=layers)
        lane.rows = [lane.rows[i] for i in kept]

    def _finish(self, sequence: Decoding) -> None:
        sequence.done.set_result(
            Decoded(tuple(sequence.new_ids), tuple(sequence.acted), sequence.queue_ms))

    def _drop_lane(self, lane: Lane, exc: BaseException) -> None:
        for row in lane.rows:
            row.done.set_exception(exc)
        lane.rows, lane.cache, lane.mask = [], None, None

    def _fail_all(self, exc: BaseException) -> None:
        for lane in self._lanes:
            self._drop_lane(lane, exc)
        for item in self._waiting:
            if isinstance(item, _Call):
                if item.future.set_running_or_notify_cancel():
                    item.future.set_exception(exc)
            else:
                item[1].done.set_exception(exc)
        self._waiting = []


@dataclass
class _Call:
    """A function that needs the models to itself, and where its result goes."""

    fn: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():  # cancelled while it waited
            return
        metrics.BATCH_SIZE.labels("model").observe(1)
        try:
            self.future.set_result(self.fn())
        except BaseException as exc:  # handed to the caller, whatever it is
            self.future.set_exception(exc)
