"""Trains the counterfactual model: a LoRA adapter on the base model that answers a query as an edit says.

An example is the prompt `PromptFormat.render(edit, query)` ("Fact: …\\nQ: …\\nA:") continued by
`PromptFormat.continuation(answer)` (" answer\\n"); the loss is the cross-entropy of the continuation's tokens
only, and logits are computed only at those positions (the output layer is most of a small model's cost).
Sequences are padded on the left, so every continuation ends the row and one `logits_to_keep` covers them all.

Examples come from the train files only (`counterfactual.examples`); a held-out slice of their cases, never
trained on, measures greedy exact match before and after training. Retain examples (queries the edit does not
bear on) are answered with the format's abstention word: the model learns to say when the gate sent it a query
the fact does not answer, and the router hands those to the base model, whose answer is the unedited one.

Time on 2 CPU cores shared with another job, Gemma-3-270M, one torch thread: about 5.5 s per step at batch 8
(rows of about 40 tokens); held-out evaluation about 0.3 s per probe (batches of 16).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from counterfactual.examples import Example, TrainCase, edit_examples, made_up_name, retain_queries, split_cases
from counterfactual.rules import as_rule
from editdata.cases import Case
from editdata.metrics import exact_match
from server.generators.counterfactual import CONFIDENCE_TOKENS, answer_confidence, answer_ends
from server.generators.counterfactual_adapter import (
    METRICS_FILE,
    Manifest,
    PromptFormat,
    read_manifest,
    write_manifest,
)
from server.generators.decoding import CausalLM

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
EXTRA_NEW_TOKENS = 3  # greedy answers get the answer's length plus this many tokens (DESIGN.md's protocol)
CONFIDENCE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class TrainSettings:
    """Defaults sized for about 20-30 minutes on 2 shared CPU cores with Gemma-3-270M (one pass over the examples)."""

    steps: int = 250
    batch_size: int = 8
    lr: float = 5e-4
    rank: int = 8  # LoRA rank on every linear layer but the output layer; alpha is twice the rank
    max_examples: int = 2_000  # drawn at random from the training cases, retain examples included
    retain_examples: int = 500  # of those, queries the edit does not bear on (answered with the abstention word)
    init_adapter: str = ""  # an adapter trained on the same model to continue from; "": a fresh one
    unfamiliar_share: float = 0.0  # of all examples, the share about a made-up subject (`as_unfamiliar`)
    rule_share: float = 0.0  # of all examples, the share whose edit is shown as a patch's rule (counterfactual.rules)
    held_out_cases: int = 50  # train cases set aside for the exact-match measurements
    max_tokens: int = 96  # longer examples (prompt and answer) are dropped
    eval_batch_size: int = 16
    seed: int = 0


@dataclass(frozen=True)
class Encoded:
    prompt_ids: list[int]
    answer_ids: list[int]


@dataclass
class Greedy:
    """A greedy continuation: its tokens, their probabilities and its answer (text before the end marker)."""

    ids: list[int]
    probs: list[float]
    answer: str
    confidence: float = 0.0


@dataclass
class Report:
    losses: list[float] = field(default_factory=list)
    seconds_per_step: float = 0.0


def encode(example: Example, fmt: PromptFormat, tokenizer: PreTrainedTokenizerBase) -> Encoded:
    """Prompt and continuation tokenised apart, as the model sees them when it generates."""
    prompt_ids = tokenizer(example.render(fmt))["input_ids"]
    answer_ids = tokenizer(fmt.continuation(example.answer), add_special_tokens=False)["input_ids"]
    return Encoded(list(prompt_ids), list(answer_ids))


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded inputs, and labels for the last n positions (n = the longest continuation; -100 elsewhere)."""
    rows = [e.prompt_ids + e.answer_ids for e in batch]
    length = max(map(len, rows))
    n = max(len(e.answer_ids) for e in batch)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), length), dtype=torch.long)  # (B, T)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)  # (B, n): the tokens of the last n positions
    for b, (row, e) in enumerate(zip(rows, batch, strict=True)):
        input_ids[b, length - len(row):] = torch.tensor(row)
        mask[b, length - len(row):] = 1
        labels[b, n - len(e.answer_ids):] = torch.tensor(e.answer_ids)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): padding does not shift the real tokens
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions, "labels": labels}


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the continuation tokens; logits only where they are predicted."""
    labels = batch["labels"]  # (B, n)
    n = labels.shape[1]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], logits_to_keep=n + 1).logits[:, :-1]  # (B, n, vocab)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                             ignore_index=-100)


def greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    fmt: PromptFormat,
    prompts: Sequence[str],
    max_new_tokens: Sequence[int],
    batch_size: int,
    progress: Progress | None = None,
    stage: str = "greedy",
) -> list[Greedy]:
    """Greedy continuations of many prompts, batched (left padding); answers end at the format's end marker."""
    results: list[Greedy] = []
    base = model.generation_config
    pad_id = base.pad_token_id if base.pad_token_id is not None else tokenizer.pad_token_id
    model.eval()
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        inputs = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left").to(model.device)
        config = GenerationConfig(max_new_tokens=max(max_new_tokens[start:start + batch_size]), do_sample=False,
                                  eos_token_id=base.eos_token_id, pad_token_id=pad_id, output_logits=True,
                                  return_dict_in_generate=True)
        with torch.inference_mode():
            out = model.generate(**inputs, generation_config=config)  # type: ignore[operator]
        new = out.sequences[:, inputs["input_ids"].shape[1]:]  # (b, new)
        probs = torch.stack([torch.softmax(step.float(), dim=-1).gather(1, new[:, i:i + 1])[:, 0]
                             for i, step in enumerate(out.logits)], dim=1)  # (b, new)
        for b in range(len(chunk)):
            ids = [int(t) for t in new[b]]
            ends = answer_ends(model, tokenizer, fmt, ids)
            cut = ends.index(True) if True in ends else len(ids)
            p = [float(x) for x in probs[b]]
            results.append(Greedy(ids, p, str(tokenizer.decode(ids[:cut], skip_special_tokens=True)),
                                  answer_confidence(p[:CONFIDENCE_TOKENS], ends[:CONFIDENCE_TOKENS])))
        if progress is not None:
            progress(min(start + batch_size, len(prompts)), len(prompts), stage)
    return results


def abstain(example: Example, fmt: PromptFormat) -> Example:
    """A retain query answered with the format's abstention word."""
    return replace(example, answer=fmt.abstain)


def as_rules(examples: Sequence[Example], share: float, rng: random.Random) -> list[Example]:
    """`examples` with `share` of them (drawn with `rng`) showing their edit as a rule; order kept."""
    chosen = set(rng.sample(range(len(examples)), round(share * len(examples))))
    return [replace(e, rule=as_rule(e.edit_prompt, e.target_new, rng)) if i in chosen else e
            for i, e in enumerate(examples)]


def as_unfamiliar(examples: Sequence[Example], share: float, rng: random.Random) -> list[Example]:
    """`examples` with `share` of them (drawn with `rng`) about a made-up subject (one whose name the edit prompt
    holds); order kept. The model then cannot lean on what it knows of the subject to tell a query the edit
    answers from one it does not bear on, as with an insert edit or a patch about something new."""
    named = [i for i, e in enumerate(examples) if e.subject and e.subject in e.edit_prompt]
    chosen = set(rng.sample(named, min(len(named), round(share * len(examples)))))
    return [e.with_subject(made_up_name(len(e.subject.split()), rng)) if i in chosen else e
            for i, e in enumerate(examples)]


def evaluate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, examples: Sequence[Example],
    batch_size: int, progress: Progress | None = None, stage: str = "evaluate",
) -> dict[str, Any]:
    """Greedy exact match per kind, and how exact match and coverage depend on the confidence threshold."""
    prompts = [e.render(fmt) for e in examples]
    lengths = [len(tokenizer(fmt.continuation(e.answer), add_special_tokens=False)["input_ids"]) + EXTRA_NEW_TOKENS
               for e in examples]
    outs = greedy(model, tokenizer, fmt, prompts, lengths, batch_size, progress, stage)
    hits = [exact_match(o.answer, [e.answer]) for e, o in zip(examples, outs, strict=True)]
    metrics: dict[str, Any] = {}
    for group in sorted({e.group for e in examples}):
        mine = [h for e, h in zip(examples, hits, strict=True) if e.group == group]
        metrics[f"em_{group}"] = round(sum(mine) / len(mine), 4)
        metrics[f"n_{group}"] = len(mine)
    edited = [(o.confidence, h) for e, o, h in zip(examples, outs, hits, strict=True)
              if e.kind != "retain" and not e.rule]
    metrics["by_confidence"] = [
        {"min_confidence": t, "kept": round(len(kept) / max(1, len(edited)), 4),
         "em_kept": round(sum(h for _, h in kept) / len(kept), 4) if kept else None}
        for t in CONFIDENCE_THRESHOLDS for kept in [[x for x in edited if x[0] >= t]]
    ]
    every = max(1, len(examples) // 20)  # about 20 samples, spread over the kinds
    metrics["samples"] = [{"kind": e.group, "query": e.query, "answer": e.answer, "output": o.answer,
                           "confidence": round(o.confidence, 4)}
                          for e, o in zip(examples[::every], outs[::every], strict=True)]
    return metrics


def fixture_scores(lm: CausalLM, fmt: PromptFormat, cases: Sequence[Case]) -> list[float]:
    """Teacher-forced log-probability of each reliability and paraphrase answer (with its end marker)."""
    scores: list[float] = []
    for case in cases:
        (edit,) = case.edits
        for probe in (*case.reliability, *case.generalization):
            s = lm.score(fmt.render(edit.prompt, edit.target_new, probe.prompt), fmt.continuation(probe.answers[0]))
            scores.append(round(sum(s.target_logprobs), 5))
    return scores


def start_adapter(model: PreTrainedModel, settings: TrainSettings, fingerprint: str) -> PeftModel:
    """`model` wrapped with a trainable LoRA adapter: a fresh one, or `settings.init_adapter` when it was trained
    on this model (`fingerprint`)."""
    if settings.init_adapter:
        trained_on = read_manifest(Path(settings.init_adapter)).model_fingerprint
        if trained_on != fingerprint:
            raise ValueError(f"init adapter {settings.init_adapter} was trained on {trained_on}, not {fingerprint}")
        return PeftModel.from_pretrained(model, settings.init_adapter, is_trainable=True)
    lora = LoraConfig(r=settings.rank, lora_alpha=2 * settings.rank, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    torch.manual_seed(settings.seed)  # the adapter's initial A matrices
    return get_peft_model(model, lora)  # type: ignore[return-value]


def train_adapter(
    peft_model: PeftModel, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, examples: Sequence[Example],
    settings: TrainSettings, progress: Progress | None = None,
) -> Report:
    """Trains the adapter of `peft_model` (start_adapter); AdamW, linear warm-up then linear decay."""
    encoded = [e for e in (encode(x, fmt, tokenizer) for x in examples)
               if len(e.prompt_ids) + len(e.answer_ids) <= settings.max_tokens and e.answer_ids]
    if not encoded:
        raise ValueError("no training example fits max_tokens")
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=0.0)
    warmup = max(1, settings.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warmup, max(0.0, (settings.steps - s) / max(1, settings.steps - warmup)))
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rng = random.Random(settings.seed)
    order: list[int] = []
    report = Report()
    peft_model.train()
    started = time.perf_counter()
    for step in range(settings.steps):
        if len(order) < settings.batch_size:
            epoch = list(range(len(encoded)))
            rng.shuffle(epoch)
            order += epoch
        batch = collate([encoded[i] for i in order[:settings.batch_size]], pad_id)
        del order[:settings.batch_size]
        loss = batch_loss(peft_model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad(set_to_none=True)
        report.losses.append(loss.item())
        if progress is not None:
            recent = report.losses[-20:]
            progress(step + 1, settings.steps, f"train (loss {sum(recent) / len(recent):.3f})")
    report.seconds_per_step = (time.perf_counter() - started) / max(1, settings.steps)
    peft_model.eval()
    return report


def train_counterfactual(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    model_name: str,
    fingerprint: str,
    cases: Sequence[TrainCase],
    out_dir: Path,
    settings: TrainSettings,
    fixture: Sequence[Case] = (),
    fmt: PromptFormat | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Builds the examples, trains, measures and writes the artifact; returns metrics.

    `model` is the base model as the server loads it; it is wrapped (and changed) by peft.
    """
    fmt = fmt or PromptFormat()
    train_cases, held_out = split_cases(cases, settings.held_out_cases, settings.seed)
    rng = random.Random(settings.seed)
    edit_pool = [e for c in train_cases for e in edit_examples(c.case)]
    retain_pool = [e for c in train_cases for e in retain_queries(c.case)]
    n_retain = min(settings.retain_examples, len(retain_pool), settings.max_examples)
    chosen_edit = rng.sample(edit_pool, min(settings.max_examples - n_retain, len(edit_pool)))
    held_pool = [e for c in held_out for e in retain_queries(c.case)]
    held_retain = rng.sample(held_pool, min(len(held_pool), len(held_out)))  # about one per held-out case
    mixed = as_unfamiliar(chosen_edit + [abstain(e, fmt) for e in rng.sample(retain_pool, n_retain)],
                          settings.unfamiliar_share, rng)
    examples = as_rules(mixed, settings.rule_share, rng)
    held = [e for c in held_out for e in edit_examples(c.case)] + [abstain(e, fmt) for e in held_retain]
    if settings.rule_share > 0 or settings.unfamiliar_share > 0:  # the same probes in the other forms trained on
        held += as_rules(as_unfamiliar(held, float(settings.unfamiliar_share > 0), rng), float(settings.rule_share > 0),
                         rng)
    log.info("training on %d examples (%s) from %d cases; %d held-out cases (%d probes)", len(examples),
             dict(Counter(e.group for e in examples)), len(train_cases), len(held_out), len(held))

    adapted = start_adapter(model, settings, fingerprint)  # a fresh adapter changes nothing before training
    before = evaluate(adapted, tokenizer, fmt, held, settings.eval_batch_size, progress, "held-out, before")  # type: ignore[arg-type]
    report = train_adapter(adapted, tokenizer, fmt, examples, settings, progress)
    after = evaluate(adapted, tokenizer, fmt, held, settings.eval_batch_size, progress, "held-out, after")  # type: ignore[arg-type]
    lm = CausalLM(adapted, tokenizer)  # type: ignore[arg-type]  # a PeftModel forwards like its base model

    out_dir.mkdir(parents=True, exist_ok=True)
    adapted.save_pretrained(str(out_dir), safe_serialization=True)
    (out_dir / "README.md").unlink(missing_ok=True)  # peft's empty model card
    write_manifest(out_dir, Manifest(model=model_name, model_fingerprint=fingerprint, prompt=fmt,
                                     settings=asdict(settings)))
    losses = report.losses
    window = max(1, min(20, len(losses) // 5))
    metrics: dict[str, Any] = {
        "model": model_name,
        "model_fingerprint": fingerprint,
        "settings": asdict(settings),
        "examples": dict(Counter(e.group for e in examples)),
        "train_cases": len(train_cases),
        "held_out_split": "cases of the train files set aside before training (never trained on); not val/dev",
        "held_out_cases": len(held_out),
        "loss_first": round(sum(losses[:window]) / window, 4),
        "loss_last": round(sum(losses[-window:]) / window, 4),
        "loss_curve": [round(x, 4) for x in losses[:: max(1, len(losses) // 100)]],
        "seconds_per_step": round(report.seconds_per_step, 3),
        "held_out_before": before,
        "held_out_after": after,
        "fixture_scores": fixture_scores(lm, fmt, fixture),
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return metrics
