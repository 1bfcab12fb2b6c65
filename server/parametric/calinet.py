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
                (tpatcher.Neurons), n per edit at the prompt's last token instead of one per answer token: one state
                builder serves both methods.
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

Training, the memory and the forward pass are T-Patcher's (tpatcher.train_neurons): at the last layer one forward
pass serves every step (tpatcher.answer_loss).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial

import torch

from server.parametric.tpatcher import PatchOptions, Start, Starter, TPatcher, initial_neuron
from server.types import Edit

KIND = "calinet"


@dataclass(frozen=True)
class SlotOptions(PatchOptions):
    """T-Patcher's loss (m = 3), CaliNET's own steps and memory, and the slots' start."""

    slots: int = 4  # n, calibration slots per edit (the paper's d_c, shared by all its facts, is 64)
    per_token: bool = False  # every slot fires at the prompt's last token (the paper's calibration of one answer)
    # CaliNET's steps and memory as they were measured (docs/BENCHMARKS.md, CaliNET)
    steps: int = 25
    same_answer_subjects: int = 0
    own_subject_questions: int = 0
    own_subject_tokens: int = 0
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


def slots_start(options: SlotOptions, generator: torch.Generator, edit_inputs: torch.Tensor,
                edit_outputs: torch.Tensor, memory: torch.Tensor) -> Start:
    """`initial_slots` at the one place (the prompt's last token, or the subject's; edit_inputs (p, 1, d_in)), every
    slot firing there; steps scaled by the slots' mean key norm and the FFN's mean output norm at the edit."""
    value_norm = float(edit_outputs[:, 0].norm(dim=1).mean())
    keys, biases, values = initial_slots(edit_inputs[:, 0], memory, options.slots, options.key_spread,
                                         options.value_scale * value_norm, edit_outputs.shape[-1], generator)
    return Start(keys, biases, values, float(keys.norm(dim=1).mean()), value_norm,
                 torch.zeros(options.slots, dtype=torch.long))


@dataclass(frozen=True)
class CaliNet(TPatcher):
    """A set of calibration slots per edit beside one FFN, trained as T-Patcher's neurons (tpatcher.train_neurons)."""

    name = KIND
    options: SlotOptions = SlotOptions()  # a request's steps and lr replace these

    def starter(self, edit: Edit, options: PatchOptions) -> Starter:
        assert isinstance(options, SlotOptions)
        return partial(slots_start, options, slot_generator(edit.id))
