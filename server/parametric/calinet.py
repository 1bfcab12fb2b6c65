"""CaliNET (Dong et al. 2022, "Calibrating Factual Knowledge in Pretrained Language Models"): calibration memory
slots beside an FFN (by default the last layer's, as the paper), a small set per edit, trained to make the model
say the edit's answer while the FFN's own weights stay frozen.

    slots       FFN(x) + Σ_i σ(k̃_i·x + b̃_i) ṽ_i, x the FFN's input at a position (d_in,), the n slots' keys K̃ (n, d_in)
                and values Ṽ (n, d_out): the paper's FFN-shaped memory of d_c slots whose output is added to the FFN's
                (its code: `wi_ex`, `wo_ex` beside T5's `wi`, `wo`; d_c = 64 for 100 facts on T5-base, decoder layer
                11 of 12). Here a set of `slots` per edit, so each edit is one ledger record rolled back alone.
                σ is relu, T5's FFN activation in the paper's main runs, with a bias per slot (T5 has none): relu
                makes a silent slot exactly zero, so a prompt no slot fires on is answered by the unedited model to
                the last bit, whatever the served FFN's own activation. The forward pass is T-Patcher's neurons'
                (tpatcher.Neurons), n per edit instead of one: one state builder serves both methods.
    loss        L = L_e + a·L_a + m·L_m
                L_e  the paper's calibration objective: the new answer's NLL on the edit's prompts, after each context
                     prefix and in other wordings (the paper trains on each fact in several paraphrased templates)
                L_m  (not in the paper, which trains on a fixed batch of facts and only measures the damage) the
                     memory hinge of tpatcher.memory_loss over every slot: each slot's pre-activation at every
                     position of a memory of other inputs at most `silent_margin` (the same memory as T-Patcher's:
                     the edit's questions about other real subjects, and "{subject} is a"; memory_subjects.py)
                L_a  (not in the paper either) T-Patcher's firing hinge over every slot at each edit prompt's last
                     token: with L_m alone the slots are pushed below zero on the edit as well, where relu passes no
                     gradient and L_e cannot bring them back (on the tiny test models, m = 3 left the answer's NLL at
                     the unedited 5.84 for any number of steps)
    start       the paper starts its slots at random (nn.Linear's default). A random key fires on about half of
                every input, which the memory term must then undo step by step; here each slot's key is the edit
                direction centred on the memory (tpatcher.initial_neuron: 1 at the edit's mean input, 0 at the
                memory's mean) plus a random direction of `key_spread` its size, and each value is random at
                `value_scale` of the FFN's own output at the edit. The random parts, drawn from a seed of the edit's
                id, set the slots apart (identical slots would stay identical under every step).

Each step runs the model only where T-Patcher's does: at the last layer one forward pass serves every step
(tpatcher.answer_loss).
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.models.arch import ArchTemplate
from server.parametric.additions import Addition
from server.parametric.layers import LayerDefaults
from server.parametric.memory_subjects import SubjectTable, shipped_subjects
from server.parametric.method import MethodContext, MethodRequest, one_at_a_time
from server.parametric.prompts import EditPrompts, build_batch
from server.parametric.targets import Progress
from server.parametric.tpatcher import (
    activation_loss,
    answer_loss,
    ffn_module,
    initial_neuron,
    memory_inputs,
    memory_loss,
    module_io,
    pre_activations,
    scaled_adam,
)
from server.types import Edit

KIND = "calinet"


@dataclass(frozen=True)
class SlotOptions:
    slots: int = 4  # n, calibration slots per edit (the paper's d_c, shared by all its facts, is 64)
    steps: int = 25
    lr: float = 0.2  # Adam's step, a share of each parameter's scale (tpatcher.scaled_adam)
    activation_weight: float = 1.0  # a
    memory_weight: float = 3.0  # m
    fire_margin: float = 1.0  # every slot's pre-activation at the edit's prompts is pushed to at least this
    silent_margin: float = -1.0  # every slot's pre-activation on the memory is pushed to at most this
    stop_nll: float = 0.05  # stop once the answer's NLL is below this and no slot fires on the memory
    memory_subjects: int = 16  # other subjects the edit's questions are asked about in the memory
    key_spread: float = 0.5  # each key's random part, as a share of the centred edit direction's norm
    value_scale: float = 0.01  # each value's random start, as a share of the FFN's output norm at the edit


def slot_generator(edit_id: str) -> torch.Generator:
    """A random generator seeded by the edit's id: an edit's slots start the same on every run."""
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(edit_id.encode()).digest()[:8], "little"))


def random_rows(n: int, d: int, norm: float, generator: torch.Generator) -> torch.Tensor:
    """n Gaussian directions of dimension d, each scaled to `norm`: (n, d)."""
    rows = torch.randn(n, d, generator=generator)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12) * norm


def initial_slots(edit_inputs: torch.Tensor, memory: torch.Tensor, n: int, key_spread: float, value_norm: float,
                  d_out: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(K̃ (n, d_in), b̃ (n,), Ṽ (n, d_out)): every slot 0 at the memory's mean input, about 1 at the edit's mean
    (edit_inputs (p, d_in), memory (m, d_in)); keys spread by random parts, values small and random."""
    key, _ = initial_neuron(edit_inputs, memory)  # (d_in,)
    keys = key + random_rows(n, len(key), key_spread * float(key.norm()), generator)  # (n, d_in)
    biases = -(keys @ memory.float().mean(0))  # (n,)
    values = random_rows(n, d_out, value_norm, generator)  # (n, d_out)
    return keys, biases, values


def slots_loss(edit_nll: torch.Tensor, edit_pre: torch.Tensor, memory_pre: torch.Tensor,
               options: SlotOptions) -> torch.Tensor:
    """L = L_e + a·L_a + m·L_m; edit_pre (p, n) every slot's pre-activation at each edit prompt's last token,
    memory_pre (m, n) at every memory position."""
    fire = activation_loss(edit_pre.flatten(), options.fire_margin)
    return edit_nll + options.activation_weight * fire + options.memory_weight * memory_loss(
        memory_pre.flatten(), options.silent_margin)


def train_slots(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    arch: ArchTemplate,
    edit: Edit,
    layer: int,
    prompts: EditPrompts,
    options: SlotOptions,
    subjects: SubjectTable,
) -> Generator[Progress, None, Addition]:
    """The calibration slots that write `edit` beside layer `layer`'s FFN; yields progress between steps."""
    name = ffn_module(arch, layer)
    module = model.get_submodule(name)
    rewrite = build_batch(tokenizer, prompts.value, edit.subject, edit.target_new)
    plain = build_batch(tokenizer, prompts.value, edit.subject)
    rows, ends = torch.arange(len(prompts.value)), plain.attention_mask.sum(dim=1) - 1  # each prompt's last token
    inputs, outputs = module_io(model, module, plain)
    edit_inputs, value_norm = inputs[rows, ends].float(), float(outputs[rows, ends].float().norm(dim=1).mean())
    others = subjects.draw(edit.prompt, edit.subject, options.memory_subjects)
    memory = memory_inputs(model, tokenizer, module, edit, prompts, others)  # (m, d_in)
    keys0, biases0, values0 = initial_slots(edit_inputs, memory, options.slots, options.key_spread,
                                            options.value_scale * value_norm, outputs.shape[-1],
                                            slot_generator(edit.id))
    keys, biases, values = (t.clone().requires_grad_(True) for t in (keys0, biases0, values0))
    key_norm = float(keys0.norm(dim=1).mean())
    optimiser = scaled_adam(keys, biases, values, key_norm, value_norm, options.lr)
    edit_nll = answer_loss(model, arch, layer, rewrite)
    for step in range(options.steps):
        optimiser.zero_grad()
        nll = edit_nll(keys, biases, values)
        edit_pre, memory_pre = pre_activations(edit_inputs, keys, biases), pre_activations(memory, keys, biases)
        yield Progress("calibrate", step + 1, options.steps, float(nll.detach()), edit.id)
        if (float(nll.detach()) < options.stop_nll and float(edit_pre.detach().min()) >= options.fire_margin
                and float(memory_pre.detach().max()) <= options.silent_margin):
            break
        slots_loss(nll, edit_pre, memory_pre, options).backward()
        optimiser.step()
    tensors = {"key": keys.detach(), "bias": biases.detach(), "value": values.detach()}
    return Addition(edit.id, name, KIND, tensors)


@dataclass(frozen=True)
class CaliNet:
    """A set of calibration slots per edit beside one FFN, each set trained with the earlier ones attached."""

    name = KIND
    batched = False
    subjects: SubjectTable | None = None  # the memory's subjects; None: the shipped table, read at the first edit
    options: SlotOptions = SlotOptions()  # a request's steps and lr replace these

    def edited_layers(self, request: MethodRequest, defaults: LayerDefaults) -> tuple[int, ...]:
        return (defaults.last if request.layer is None else request.layer,)

    def check(self, request: MethodRequest) -> None:
        """Nothing beyond the editor's layer checks."""

    def compute(
        self, context: MethodContext, request: MethodRequest, edits: Sequence[Edit]
    ) -> Generator[Progress, None, list[Addition]]:
        (layer,) = context.layers
        changes = {k: v for k, v in (("steps", request.steps), ("lr", request.lr)) if v is not None}
        options = replace(self.options, **changes)  # type: ignore[arg-type]
        subjects = shipped_subjects() if self.subjects is None else self.subjects
        return (yield from one_at_a_time(context, edits, lambda edit: train_slots(
            context.model, context.tokenizer, context.arch, edit, layer, context.prompts[edit.id], options, subjects,
        )))
