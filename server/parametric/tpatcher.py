"""T-Patcher (Huang et al. 2023, "Transformer-Patcher: One Mistake Worth One Neuron"): a neuron per answer token of
each edit added to an FFN (by default the last layer's), trained to fire on the edit's question and to stay silent
elsewhere.

    neuron      a = relu(k·x + b), x the FFN's input at a position (d_in,); the FFN's output there gains a·v (d_out,)
                (the paper adds k and b as an extra row of the FFN's first linear map and v as an extra column of
                its second; the FFN here may be gated, so the neuron sits beside it with an activation of its own:
                relu makes "silent" exactly zero, so a prompt the neuron does not fire on is answered by the
                unedited model to the last bit)
    neurons     one per answer token: the paper's multiple-neuron patching for generation (its `act_loc` list, a
                neuron per decoding step), so that a several-token answer is written token by token: neuron j fires
                where the prompt followed by the answer's first j tokens predicts token j (a single value vector
                cannot ask for different tokens at different positions; on zsRE one neuron per edit wrote 0.40 of
                the answers whole, TF 0.65: docs/BENCHMARKS.md, T-Patcher). Firing on the subject (`fire_at`), one;
                CaliNET (`per_token` off), a set of slots at the prompt's last token.
    loss        L = L_e + a·L_a + m·L_m, as the paper:
                L_e  the new answer's NLL on the edit's prompts (after each context prefix and in other wordings,
                     as ROME's value is optimised), with the neurons in the FFN at every position
                L_a  hinge: each neuron's pre-activation at its place in each of those prompts (the position that
                     predicts its answer token) at least FIRE_MARGIN (with `fire_at` "subject", at the subject's last
                     token, a layer below the last: docs/BENCHMARKS.md)
                L_m  hinge: the pre-activation at every position of a memory of other inputs, and at the places of
                     the edit's other neurons, at most SILENT_MARGIN (below 0), averaged over the positions that
                     break it (the paper's "margin" loss)
    memory      (the paper's is the FFN inputs of its training set, every position of its targets; the server has
                no such set at edit time) every position of: the edit's prompt and its other wordings with the
                subject replaced by real
                subjects that a training file asks the same question about (memory_subjects.py: another singer
                for "plays", another town for "is located in"; the neighbourhood a neuron keyed to the question
                alone would break), and ROME's "{subject} is a" (the same subject asked something else). The
                subjects are drawn from a table shipped in artifacts/tpatcher/, seeded by the edit's prompt and
                subject; an unknown template gets subjects of any question. (Eight fixed stand-ins, "John Smith",
                "Paris", ..., taught the neuron the relation, not the subject: docs/BENCHMARKS.md, T-Patcher.)
                Where the edit has an old answer (`target_true`), they are subjects that share it, as far as the
                table has them: at the last token the question about a subject with the same answer reads much as
                the edit's, and CounterFact's neighbourhood is exactly those subjects.
                With several answer tokens, each memory prompt is continued by the model's greedy tokens, as many as
                the answer has after its first (where another subject's own answer is written, which a neuron keyed
                inside an answer could take), and the edit's prompts join it at the position after the answer (where
                the neuron of the answer's last tokens would otherwise fire again and repeat it).
                Options add `own_subject_questions` other questions of the table about the edit's subject (never one
                of its own wordings nor of their kind) and continue each prompt about the subject by at least
                `own_subject_tokens` greedy tokens (8 and 24 by default): they keep zsRE's same-subject questions and
                cost some of its paraphrases (docs/BENCHMARKS.md, "The memory asks about the edit's own subject").
    start       k = (x̄_e − μ) / ‖x̄_e − μ‖², b = −k·μ (x̄_e the mean edit input at the neuron's place, μ the
                memory's mean): the neuron starts at 1 on the edit and at 0 on the memory's centre; v = 0 (the
                paper starts k at x_e / ‖x_e‖² with b = 0: centring first keeps it from starting at 1 on every
                position, which share a large common direction)

At the last layer a neuron firing inside a prompt changes only the prediction of that prompt's next token, which the
prompt already gives: only its last position and the generated ones matter for an answer.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.errors import InvalidArgument
from server.models.arch import ArchTemplate, num_layers
from server.parametric.additions import Act, Addition
from server.parametric.layers import LayerDefaults
from server.parametric.memory_subjects import SubjectTable, shipped_subjects
from server.parametric.method import MethodContext, MethodRequest, one_at_a_time, with_request
from server.parametric.prompts import EditPrompts, PromptBatch, build_batch
from server.parametric.tap import recording
from server.parametric.targets import Progress, answer_nll, extend_greedily, forward
from server.parametric.wordings import SLOT, template
from server.types import Edit

KIND = "tpatcher"
KL_PROMPT = "{} is a"  # ROME's prompt about the subject itself
FIRE_AT = ("last", "subject")  # PatchOptions.fire_at
MAX_MEMORY_SUBJECTS = 256  # a request's memory_subjects: each costs a forward pass of the edit's prompts per step
MAX_OWN_SUBJECT = 64  # a request's own_subject_questions (rows) and own_subject_tokens (greedy passes, once per edit)


@dataclass(frozen=True)
class PatchOptions:
    # 100 steps: the memory's hinge needs them (counterfact/train.json 20–59: greedy locality 0.675 at 25, 0.925 at 100)
    steps: int = 100
    lr: float = 0.2  # Adam's step, relative to each parameter's scale (see `train_patch`)
    activation_weight: float = 1.0  # a
    memory_weight: float = 3.0  # m: chosen on counterfact/train.json cases 0–5 (docs/BENCHMARKS.md)
    fire_margin: float = 1.0  # the pre-activation on the edit's prompts is pushed to at least this
    silent_margin: float = -1.0  # and on the memory (and at the other neurons' places) to at most this
    stop_nll: float = 0.05  # stop once the answer's NLL is below this and both hinges are met
    memory_subjects: int = 16  # other subjects the edit's questions are asked about in the memory
    # of those, how many share the edit's old answer (`target_true`, where the edit has one; the rest are asked the
    # same question): CounterFact's neighbourhood, which a neuron at the last token confuses with the edit
    # (memory_subjects.py); all 16 kept the most neighbours on counterfact/train.json (docs/BENCHMARKS.md). Firing
    # at the last token only.
    same_answer_subjects: int = 16
    # Where the neurons must fire on the edit's prompts: "last", the prompt's last token and (`per_token`) each
    # position after it that predicts an answer token (the paper's, where the answer is read), or "subject", the
    # subject's last token, one neuron (where ROME writes; at a layer below the last, attention carries it to the
    # answer). Firing on the subject, the memory leaves out the prompt about the edit's own subject.
    fire_at: str = "last"
    # The memory's prompts about the edit's own subject, firing at the last token: ROME's "{} is a" and this many
    # other questions of the table asked about the subject, each continued by at least `own_subject_tokens` of the
    # model's greedy tokens. On zsRE a neuron silent only up to the subject's other answers fired after them and wrote
    # the edit's ("The place of death of Juan María Bordaberry is a mystery. Gabrielle"; docs/BENCHMARKS.md). 8 and 24
    # from knowedit/wiki_recent_train.json (same subject 0.45 -> 0.82), at no cost on counterfact/train.json 20–35.
    own_subject_questions: int = 8
    own_subject_tokens: int = 24
    per_token: bool = True  # a neuron per answer token; off, the start's neurons all fire at the prompt's last token

    def __post_init__(self) -> None:
        if self.fire_at not in FIRE_AT:
            raise ValueError(f"fire_at must be one of {', '.join(FIRE_AT)}, got {self.fire_at!r}")


def pre_activations(inputs: torch.Tensor, keys: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
    """k·x + b of every neuron; inputs (..., d_in), keys (n, d_in), biases (n,) → (..., n), in float32."""
    return inputs.float() @ keys.float().T + biases.float()


def neuron_output(inputs: torch.Tensor, keys: torch.Tensor, biases: torch.Tensor,
                  values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_i relu(k_i·x + b_i) v_i (..., d_out), the activations (..., n)) for inputs (..., d_in)."""
    activations = torch.relu(pre_activations(inputs, keys, biases))  # (..., n)
    return activations @ values.float(), activations


def activation_loss(edit_pre: torch.Tensor, margin: float) -> torch.Tensor:
    """L_a: mean hinge of the edit's pre-activations (m,) below `margin`."""
    return torch.relu(margin - edit_pre).mean()


def memory_loss(memory_pre: torch.Tensor, margin: float) -> torch.Tensor:
    """L_m: the mean excess over `margin` of the memory's pre-activations (m,) that exceed it; 0 when none do."""
    excess = memory_pre - margin
    broken = excess > 0
    return excess[broken].mean() if bool(broken.any()) else excess.sum() * 0.0


def initial_neuron(edit_inputs: torch.Tensor, memory_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(k (d_in,), b ()) that give 1 at the edit inputs' mean and 0 at the memory's; inputs (m, d_in)."""
    centre = memory_inputs.float().mean(0)
    direction = edit_inputs.float().mean(0) - centre
    key = direction / direction.norm().clamp_min(1e-12) ** 2
    return key, -(key @ centre)


@dataclass(frozen=True)
class Neurons:
    """One module's added neurons, in the order they were made, each row naming the edit it belongs to."""

    edit_ids: tuple[str, ...]  # (n,)
    keys: torch.Tensor  # (n, d_in)
    biases: torch.Tensor  # (n,)
    values: torch.Tensor  # (n, d_out)

    @staticmethod
    def build(additions: Sequence[Addition]) -> Neurons:
        """Each addition holds one or more neurons: key (r, d_in), bias (r,), value (r, d_out)."""
        ids = tuple(a.edit_id for a in additions for _ in range(len(a.tensors["bias"])))
        return Neurons(ids, torch.cat([a.tensors["key"] for a in additions]),
                       torch.cat([a.tensors["bias"] for a in additions]),
                       torch.cat([a.tensors["value"] for a in additions]))

    def forward(self, inputs: torch.Tensor, output: torch.Tensor) -> tuple[torch.Tensor, list[Act]]:
        """output (batch, seq, d_out) plus every neuron's contribution, and where each fired."""
        added, activations = neuron_output(inputs, self.keys, self.biases, self.values)  # (b, s, d_out), (b, s, n)
        fired = activations > 0
        if not bool(fired.any()):
            return output, []
        acts = [Act(row, position, self.edit_ids[neuron]) for row, position, neuron in fired.nonzero().tolist()]
        return output + added.to(output.dtype), acts


def ffn_module(arch: ArchTemplate, layer: int) -> str:
    """The FFN of a layer: the module holding both of its projections (e.g. "model.layers.17.mlp")."""
    up, down = arch.mlp_in.format(layer).split("."), arch.mlp_out.format(layer).split(".")
    common = [a for a, b in zip(up, down, strict=False) if a == b]
    assert common == up[: len(common)] and len(common) < len(up), f"no common parent of {up} and {down}"
    return ".".join(common)


def as_rows(key: torch.Tensor, bias: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One neuron (d_in,), (), (d_out,) or n of them (n, d_in), (n,), (n, d_out) → the n-neuron shapes."""
    return key.reshape(-1, key.shape[-1]), bias.reshape(-1), value.reshape(-1, value.shape[-1])


@contextmanager
def adding_neuron(module: nn.Module, key: torch.Tensor, bias: torch.Tensor, value: torch.Tensor) -> Iterator[None]:
    """The neuron (or neurons, `as_rows`) in the module's output at every position, out of place so gradients reach
    k, b and v."""

    def hook(_: nn.Module, args: tuple[object, ...], output: torch.Tensor) -> torch.Tensor:
        inputs = args[0]
        assert isinstance(inputs, torch.Tensor)
        added = neuron_output(inputs, *as_rows(key, bias, value))[0]
        return output + added.to(output.dtype)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def module_io(model: PreTrainedModel, module: nn.Module, batch: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's input (batch, seq, d_in) and output (batch, seq, d_out) at every position, without gradients."""
    with torch.no_grad(), recording(module) as seen:
        forward(model, batch)
    assert seen.input is not None and seen.output is not None, "the module did not run"
    return seen.input, seen.output


def scaled_adam(key: torch.Tensor, bias: torch.Tensor, value: torch.Tensor, key_norm: float, value_norm: float,
                lr: float) -> torch.optim.Adam:
    """Adam over neurons (k (..., d_in), b (...), v (..., d_out)), each step moving a coordinate by about its lr:
    scaled so that `lr` is a share of each parameter's size (a key's norm `key_norm`, b's unit margins, and
    `value_norm` for v: the FFN's own output at the edit)."""
    d_in, d_out = key.shape[-1], value.shape[-1]
    return torch.optim.Adam([
        {"params": [key], "lr": lr * key_norm / d_in**0.5},
        {"params": [bias], "lr": lr},
        {"params": [value], "lr": lr * value_norm / d_out**0.5},
    ])


NeuronLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def answer_loss(model: PreTrainedModel, arch: ArchTemplate, layer: int, rewrite: PromptBatch) -> NeuronLoss:
    """L_e as a function of the neuron (k (d_in,), b (), v (d_out,)), or of several (`as_rows`: a neuron per answer
    token, CaliNET's slots).

    At the last layer nothing after the FFN looks at other positions: the answer's logits are the final norm and
    LM head of the residual the unpatched model reached there, with the FFN's output changed by the neuron (through
    the norm Gemma applies to it before the residual add). So one forward pass serves every step, instead of one
    per step (the model's other layers are most of the cost). Elsewhere each step runs the model with the neuron.
    """
    name = ffn_module(arch, layer)
    module = model.get_submodule(name)
    if layer != num_layers(model.config) - 1:
        def through_model(key: torch.Tensor, bias: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
            with adding_neuron(module, key, bias, value):
                return answer_nll(forward(model, rewrite, rewrite.answer_positions), rewrite.answer_ids)

        return through_model
    final_norm = model.get_submodule(arch.final_norm)
    with torch.no_grad(), recording(module) as ffn, recording(final_norm) as top:
        forward(model, rewrite, rewrite.answer_positions)
    assert ffn.input is not None and ffn.output is not None and top.input is not None, "the model did not run"
    rows = torch.arange(len(rewrite.answer_positions))[:, None]  # (n, 1) with answer_positions (n, t)
    inputs, outputs = ffn.input[rows, rewrite.answer_positions], ffn.output[rows, rewrite.answer_positions]
    residual = top.input[rows, rewrite.answer_positions]  # (n, t, d_model)
    out_norm = None if arch.mlp_out_norm is None else model.get_submodule(arch.mlp_out_norm.format(layer))
    head = model.get_submodule(arch.lm_head)
    softcap = getattr(model.config, "final_logit_softcapping", None)

    def at_the_top(key: torch.Tensor, bias: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        added = neuron_output(inputs, *as_rows(key, bias, value))[0].to(outputs.dtype)  # (n, t, d_out)
        changed = added if out_norm is None else out_norm(outputs + added) - out_norm(outputs)
        hidden = residual + changed
        logits = head(final_norm(hidden))  # (n, t, vocab)
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        return answer_nll(logits, rewrite.answer_ids)

    return at_the_top


@dataclass(frozen=True)
class MemoryGroup:
    """Memory prompts about one subject, each continued by the model's `continued` greedy tokens."""

    texts: tuple[str, ...]
    subject: str
    continued: int = 0


def memory_prompts(edit: Edit, prompts: EditPrompts, subjects: Sequence[str],
                   own_questions: Sequence[str] = (KL_PROMPT,), continued: int = 0,
                   own_continued: int = 0) -> list[MemoryGroup]:
    """The memory's prompts, a group per subject they are about: the edit's prompt and its other wordings (without
    the context prefixes: half the cost) about each of `subjects`, continued by `continued` tokens, then
    `own_questions` (templates, "{}" the subject) about the edit's own subject, continued by at least
    `own_continued`."""
    questions = (prompts.key[0], *prompts.value[len(prompts.key):])  # the prompt and its other wordings, no prefix
    about_others = [MemoryGroup(tuple(t.replace(edit.subject, s) for t in questions), s, continued) for s in subjects]
    own = MemoryGroup(tuple(q.replace(SLOT, edit.subject) for q in own_questions), edit.subject,
                      max(continued, own_continued))
    return [*about_others, *([own] if own_questions else [])]


def own_subject_questions(edit: Edit, prompts: EditPrompts, subjects: SubjectTable,
                          options: PatchOptions) -> tuple[str, ...]:
    """Other questions of the table to ask the edit's own subject: never one of the edit's own wordings (the neuron
    must fire there) nor one of their kind (it reads like them), nor ROME's prompt, which the memory holds already."""
    wordings = {template(p, edit.subject) for p in prompts.value}
    return subjects.questions(edit.prompt, edit.subject, options.own_subject_questions,
                              exclude={KL_PROMPT, *(w for w in wordings if w is not None)},
                              answers=(edit.target_new, edit.target_true))


def memory_inputs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, module: nn.Module,
                  groups: Sequence[MemoryGroup]) -> torch.Tensor:
    """The module's input at every position of the groups' prompts and their continuations, (m, d_in)."""
    batches = [build_batch(tokenizer, list(g.texts), g.subject) for g in groups]
    batches = [extend_greedily(model, b, g.continued)[0] if g.continued else b
               for b, g in zip(batches, groups, strict=True)]
    return torch.cat([module_io(model, module, b)[0][b.attention_mask.bool()] for b in batches]).float()


def patch_loss(edit_nll: torch.Tensor, fire_pre: torch.Tensor, silent_pre: torch.Tensor,
               options: PatchOptions) -> torch.Tensor:
    """L = L_e + a·L_a + m·L_m; fire_pre the pre-activations that must fire (each neuron at its places in the edit's
    prompts), silent_pre those that must not (the memory's positions, the other neurons' places), any shapes."""
    fire = activation_loss(fire_pre.flatten(), options.fire_margin)
    return edit_nll + options.activation_weight * fire + options.memory_weight * memory_loss(
        silent_pre.flatten(), options.silent_margin)


def firing_mask(places: torch.Tensor, f: int) -> torch.Tensor:
    """(f, n): neuron i must fire at place j when j is its place (`places` (n,) in [0, f)); at the other places, the
    other neurons' (each of the f has one), it must stay silent."""
    return torch.arange(f)[:, None] == places[None, :]


@dataclass(frozen=True)
class Start:
    """Where training starts: n neurons, and the sizes `scaled_adam` scales their steps by."""

    keys: torch.Tensor  # (n, d_in)
    biases: torch.Tensor  # (n,)
    values: torch.Tensor  # (n, d_out)
    key_norm: float
    value_norm: float
    places: torch.Tensor  # (n,) the place each neuron fires at: a column of the edit's places (p, f)


# (edit inputs (p, f, d_in), the FFN's outputs there (p, f, d_out), memory inputs (m, d_in)) → the start, for each
# edit prompt's f places: the positions predicting the answer's tokens, or the subject's last token (f = 1)
Starter = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Start]


def neuron_per_place(edit_inputs: torch.Tensor, edit_outputs: torch.Tensor, memory: torch.Tensor) -> Start:
    """T-Patcher's start, a neuron per place: `initial_neuron`'s key and bias there, v = 0; steps scaled by the keys'
    mean norm and the FFN's output at the first prompt's first place."""
    starts = [initial_neuron(edit_inputs[:, j], memory) for j in range(edit_inputs.shape[1])]
    keys = torch.stack([key for key, _ in starts])  # (f, d_in)
    biases = torch.stack([bias for _, bias in starts])  # (f,)
    return Start(keys, biases, torch.zeros(len(starts), edit_outputs.shape[-1]), float(keys.norm(dim=1).mean()),
                 float(edit_outputs[0, 0].norm()), torch.arange(len(starts)))


def train_neurons(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    arch: ArchTemplate,
    edit: Edit,
    layer: int,
    prompts: EditPrompts,
    options: PatchOptions,
    subjects: SubjectTable,
    start: Starter,
    kind: str,
) -> Generator[Progress, None, Addition]:
    """The neurons that write `edit` beside layer `layer`'s FFN, from `start`; yields progress between steps."""
    name = ffn_module(arch, layer)
    module = model.get_submodule(name)
    rewrite = build_batch(tokenizer, prompts.value, edit.subject, edit.target_new)
    on_subject = options.fire_at == "subject"
    # (p, f) the places neurons fire at in each prompt: the subject's last token, or each position predicting an
    # answer token (the prompt's last token first); the prompt's own positions read the same without the answer
    places = (rewrite.subject_last[:, None] if on_subject
              else rewrite.answer_positions if options.per_token else rewrite.answer_positions[:, :1])
    inputs, outputs = module_io(model, module, rewrite)
    rows = torch.arange(len(prompts.value))[:, None]
    edit_inputs = inputs[rows, places].float()  # (p, f, d_in)
    edit_outputs = outputs[rows, places].float()  # (p, f, d_out): starters read the first place's
    # the old answer's subjects are the last token's confusion; the subject's token tells subjects apart already
    alike = 0 if on_subject else options.same_answer_subjects
    others = subjects.draw(edit.prompt, edit.subject, options.memory_subjects, edit.target_true, alike)
    # firing on the subject, its own token tells the edit's subject apart from the others only
    own = () if on_subject else (KL_PROMPT, *own_subject_questions(edit, prompts, subjects, options))
    later = places.shape[1] - 1  # answer tokens with a neuron of their own after the first
    memory = memory_inputs(model, tokenizer, module, memory_prompts(
        edit, prompts, others, own, continued=later, own_continued=options.own_subject_tokens))  # (m, d_in)
    if later:  # the position after the answer, which reads much as the answer's own positions do
        memory = torch.cat([memory, inputs[rows[:, 0], rewrite.attention_mask.sum(dim=1) - 1].float()])
    first = start(edit_inputs, edit_outputs, memory)
    fire = firing_mask(first.places, places.shape[1])  # (f, n)
    keys, biases, values = (t.clone().requires_grad_(True) for t in (first.keys, first.biases, first.values))
    optimiser = scaled_adam(keys, biases, values, first.key_norm, first.value_norm, options.lr)
    edit_nll = answer_loss(model, arch, layer, rewrite)
    for step in range(options.steps):
        optimiser.zero_grad()
        nll = edit_nll(keys, biases, values)
        edit_pre = pre_activations(edit_inputs, keys, biases)  # (p, f, n)
        fire_pre = edit_pre[:, fire]
        silent_pre = torch.cat([pre_activations(memory, keys, biases).flatten(), edit_pre[:, ~fire].flatten()])
        yield Progress(kind, step + 1, options.steps, float(nll.detach()), edit.id)
        if (nll.item() < options.stop_nll and float(fire_pre.detach().min()) >= options.fire_margin
                and float(silent_pre.detach().max()) <= options.silent_margin):
            break
        patch_loss(nll, fire_pre, silent_pre, options).backward()
        optimiser.step()
    tensors = {"key": keys.detach(), "bias": biases.detach(), "value": values.detach()}
    return Addition(edit.id, name, kind, tensors)


@dataclass(frozen=True)
class TPatcher:
    """A neuron per answer token of each edit beside one FFN, each edit's trained with the earlier ones attached.
    CaliNET (calinet.py) is this with a set of slots per edit at the prompt's last token and another start."""

    name = KIND
    batched = False
    reads_earlier = False
    subjects: SubjectTable | None = None  # the memory's subjects; None: the shipped table, read at the first edit
    options: PatchOptions = PatchOptions()  # a request's steps and lr replace these

    def edited_layers(self, request: MethodRequest, defaults: LayerDefaults) -> tuple[int, ...]:
        return (defaults.last if request.layer is None else request.layer,)

    def check(self, request: MethodRequest) -> None:
        if request.fire_at is not None and request.fire_at not in FIRE_AT:
            raise InvalidArgument(f"options.fire_at must be one of {', '.join(FIRE_AT)}, got {request.fire_at!r}")
        if request.memory_subjects is not None and not 0 <= request.memory_subjects <= MAX_MEMORY_SUBJECTS:
            raise InvalidArgument(f"options.memory_subjects must be in [0, {MAX_MEMORY_SUBJECTS}], "
                                  f"got {request.memory_subjects}")
        for name in ("own_subject_questions", "own_subject_tokens"):
            value = getattr(request, name)
            if value is not None and not 0 <= value <= MAX_OWN_SUBJECT:
                raise InvalidArgument(f"options.{name} must be in [0, {MAX_OWN_SUBJECT}], got {value}")
        options = self.request_options(request)
        if options.fire_at == "subject" and options.memory_subjects == 0:  # the memory would hold nothing
            raise InvalidArgument("options.fire_at subject needs options.memory_subjects of at least 1: firing at the "
                                  "subject, the memory holds only the other subjects' prompts")
        # firing at the subject, the defaults' questions are left out; a request asking for them is refused
        if options.fire_at == "subject" and (request.own_subject_questions or request.own_subject_tokens):
            raise InvalidArgument("options.own_subject_questions and own_subject_tokens need options.fire_at last: "
                                  "firing at the subject, the memory holds no prompt about the edit's own subject")

    def request_options(self, request: MethodRequest) -> PatchOptions:
        """This method's options with those the request sets: one list for the check and the computation."""
        return with_request(self.options, request, "steps", "lr", "fire_at", "memory_subjects",
                            "own_subject_questions", "own_subject_tokens")

    def starter(self, edit: Edit, options: PatchOptions) -> Starter:
        return neuron_per_place

    def compute(
        self, context: MethodContext, request: MethodRequest, edits: Sequence[Edit]
    ) -> Generator[Progress, None, list[Addition]]:
        (layer,) = context.layers
        options = self.request_options(request)
        subjects = shipped_subjects() if self.subjects is None else self.subjects
        return (yield from one_at_a_time(context, edits, lambda edit: train_neurons(
            context.model, context.tokenizer, context.arch, edit, layer, context.prompts[edit.id], options, subjects,
            self.starter(edit, options), self.name,
        )))
