"""The in-scope route `counterfactual`: the counterfactual model (trained by counterfactual/) answers from the edit.

It reads the edit and the query in the prompt format it was trained on and writes the answer, then its end
marker. It is a second model object, the base weights with the LoRA adapter merged in, not peft's adapter
toggle on the served model: the served model must stay exactly the base (out-of-scope answers), parametric
edits write its modules by name (peft would wrap and rename them), and a toggle would be state shared by every
thread that touches the model. The copy shares the embeddings with the base model (about 0.4 GB extra for
Gemma-3-270M) and, merged, runs at the base model's speed. Nothing writes its weights after loading, so the
router may ask it for its judgement on an I/O thread while the model thread generates (it is given its own
tokenizer for that, see server/app.py).

To a query its fact does not bear on (a gate false alarm: another entity, another relation of the subject) the
model answers with its format's abstention word; `judge` reads that, and the router sends such queries to the
base model. The judgement's pass over the prompt is kept (its cache, less the last prompt token) and handed to the
answer that follows, so an in-scope query reads its prompt once, not twice.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace

import torch
from transformers import Cache, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from server.generators.counterfactual_adapter import PromptFormat
from server.generators.decoding import CausalLM
from server.generators.in_prompt import EditInPromptGenerator, with_related
from server.types import Edit, EditKind, GenerationOptions, Judgement, Route

CONFIDENCE_TOKENS = 3  # the judgement reads at most this many first answer tokens
# A judged prompt: each fact's (edit id, version), in the order the prompt states them, and the query.
PrefillKey = tuple[tuple[tuple[str, int], ...], str]
KEPT_PREFILLS = 32  # judgements whose prompt cache waits for its answer (an abstention's is never asked for)


def answer_confidence(token_probs: Sequence[float], ends: Sequence[bool]) -> float:
    """Mean probability of the greedy answer's first tokens, those before its end marker; 0 for an empty answer."""
    answer: list[float] = []
    for p, end in zip(token_probs, ends, strict=False):
        if end:
            break
        answer.append(p)
    return sum(answer) / len(answer) if answer else 0.0


class CounterfactualGenerator(EditInPromptGenerator):
    route = Route.COUNTERFACTUAL

    def __init__(self, lm: CausalLM, prompt_format: PromptFormat) -> None:
        super().__init__(lm)
        self._format = prompt_format
        # tokens that spell the abstention word (one for Gemma 3): the least a judgement must generate
        self._abstain_tokens = len(lm.tokenizer(f" {prompt_format.abstain}", add_special_tokens=False)["input_ids"])
        # the judged prompt (prefill_key) → the judgement's cache of it; judged on I/O threads, read on the model's
        self._prefills: OrderedDict[PrefillKey, Cache] = OrderedDict()
        self._prefills_lock = threading.Lock()

    def prefill(self, edit: Edit, query: str, related: Sequence[Edit] = ()) -> Cache | None:
        """The cache the judgement of this edit (and related ones) and query left, if it has not been used yet."""
        with self._prefills_lock:
            return self._prefills.pop(prefill_key(edit, query, related), None)

    def prompt_for(self, edit: Edit, query: str, related: Sequence[Edit] = ()) -> str:
        """The fact, or the patch's rule, and the related facts after it, then the query."""
        fact = edit.statement() if edit.kind is EditKind.PATCH else self._format.fact(edit.prompt, edit.target_new)
        return self._format.render_statement(with_related(fact, related), query)

    def adjust_options(self, options: GenerationOptions) -> GenerationOptions:
        if not self._format.answer_end:
            return options
        return replace(options, stop=(*options.stop, self._format.answer_end))  # the model goes on past its answer

    def judge(
        self, edit: Edit, query: str, with_confidence: bool = False, related: Sequence[Edit] = ()
    ) -> Judgement:
        """Whether the model abstains on `query` under `edit` (and the related facts after it), and
        (`with_confidence`) how sure it is of its greedy answer; without it the judgement reads only as many tokens as
        the abstention word has (0.0 confidence)."""
        model, tokenizer = self._lm.model, self._lm.tokenizer
        inputs = tokenizer(self.prompt_for(edit, query, related), return_tensors="pt").to(model.device)
        prompt_length = inputs["input_ids"].shape[1]
        base = model.generation_config
        new_tokens = max(self._abstain_tokens, CONFIDENCE_TOKENS if with_confidence else 1)
        config = GenerationConfig(
            max_new_tokens=new_tokens, do_sample=False, eos_token_id=base.eos_token_id,
            pad_token_id=base.pad_token_id if base.pad_token_id is not None else tokenizer.pad_token_id,
            output_logits=True, return_dict_in_generate=True,
        )
        with torch.inference_mode():
            out = model.generate(**inputs, generation_config=config)  # type: ignore[operator]  # typed loosely
        self._keep_prefill(prefill_key(edit, query, related), out.past_key_values, prompt_length)
        new_ids = [int(t) for t in out.sequences[0, prompt_length:]]  # (<= new_tokens,)
        # out.logits: one (1, vocab) tensor per new token, before any logits processor
        probs = [float(torch.softmax(step[0].float(), dim=-1)[i]) for step, i in zip(out.logits, new_ids, strict=False)]
        ends = answer_ends(model, tokenizer, self._format, new_ids)
        cut = ends.index(True) if True in ends else len(new_ids)
        answer = str(tokenizer.decode(new_ids[:cut], skip_special_tokens=True))
        confidence = answer_confidence(probs, ends) if with_confidence else 0.0
        return Judgement(self._format.abstains(answer), confidence)

    def _keep_prefill(self, key: PrefillKey, cache: Cache | None, prompt_length: int) -> None:
        """Keeps the cache of all but the prompt's last token, which `generate` feeds again to get its first
        logits. A sliding-window layer past its window cannot be cut back: such a prompt is read again."""
        if cache is None:
            return
        try:
            cache.crop(-(cache.get_seq_length() - (prompt_length - 1)))  # a negative count: tokens to drop
        except RuntimeError:
            return
        with self._prefills_lock:
            self._prefills[key] = cache
            while len(self._prefills) > KEPT_PREFILLS:
                self._prefills.popitem(last=False)


def prefill_key(edit: Edit, query: str, related: Sequence[Edit]) -> PrefillKey:
    return tuple((e.id, e.version) for e in (edit, *related)), query


def answer_ends(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt_format: PromptFormat, ids: Sequence[int]
) -> list[bool]:
    """For each generated token: True for EOS and for a token holding the format's end marker."""
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos) if isinstance(eos, list) else {eos}
    marker = prompt_format.answer_end.strip() or prompt_format.answer_end  # " ." is "." once decoded alone
    return [i in eos_ids or (bool(marker) and marker in tokenizer.decode([i])) for i in ids]
