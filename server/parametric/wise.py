"""WISE (Wang et al. 2024, "WISE: Rethinking the Knowledge Memory for Lifelong Model Editing"): a side memory beside
one MLP down-projection, a copy of its weights that edits change while the weights as served (the main memory) stay
as they were; a router sends each input to the side memory only where the side memory would change it much.

    side memory W' = W + ΔW, ΔW (d_out, d_in) the merged change of every edit; at a position with input x (d_in,)
                the output is W'x where the routing score s(x) = ‖ΔW x‖ = ‖W'x − Wx‖ (the paper's Δ_act) passes
                the threshold, and Wx (the module's own output, untouched) elsewhere
    shards      edits go into knowledge shards of `edits_per_shard`, in order; a shard's edits change only the
                weights of its random mask (a share `mask_ratio` of ΔW's entries; shard_entries), so shards write
                separate subspaces: disjoint for the first 1/ρ shards (500 edits at the defaults), overlapping
                after. A shard's task vector is the sum of its edits' changes
    merging     the shards' task vectors are merged as TIES does (Yadav et al. 2023), by the paper's choice: each
                entry takes the sign of the vectors' sum there, and the mean of the vectors that agree with it.
                (TIES first trims each vector to its largest entries; a mask of ρ = 0.2 already keeps fewer
                entries than the paper's density of 0.53 keeps, so nothing is trimmed.) Entries one shard alone
                writes keep that shard's value, so one shard is its own sum
    loss        L = L_e + r·L_a, as the paper:
                L_e  the new answer's NLL on the edit's prompts (after each context prefix and in other wordings,
                     as ROME's value is optimised), with the side memory at every position (training routes
                     nothing)
                L_a  the routing hinges, on scores as shares of the module's output norm at the edit:
                     max(0, s_memory − α) + max(0, β − s_edit) + max(0, γ − (s_edit − s_memory)), each a mean, with
                     s_edit at the positions that read the answer (each prompt's last token and the answer's) and
                     s_memory at every position of a memory of other inputs: T-Patcher's (the edit's questions
                     about other real subjects, and "{subject} is a"), and the edit's own prompts elsewhere (their
                     earlier tokens, and the unedited model's continuation after the answer, so that the edited
                     prompt does not repeat its answer)
    threshold   the paper's: `act_ratio` times the smallest score any edit had where its own prompt (without a
                prefix) reads the answer, when it was made

Where this differs from the paper, and why:
- The paper routes a whole query by its score's mean over the query's tokens. The server's forward calls are
  prompt chunks and single generated tokens of batched rows, so a mean over "the query" is not defined there; each
  position is routed on its own, and the hinges are on positions: the side memory is trained to pass the threshold
  where the answer is read (the prompt's last token and the answer's) and to stay below α on every other input.
- Merging happens whenever the state is built (every edit, restart and rollback), not at the paper's merge
  points: the state is always the one the remaining edits' changes build, so replay and rollback are exact.
- A new edit trains on the side memory built so far plus its own change, which is the merged side memory as served
  while shards are disjoint; where later shards overlap earlier ones, merging changes the trained values there.
  (The paper's masks are drawn independently and overlap from the second shard.) Its change is also held near
  zero at the earlier edits' keys (a hinge at α, not in the paper): without it, on inputs as alike as a tiny
  model's, the newer edit's answer replaced the earlier one's.

An answer the side memory changed reports the edit whose key (the module's input at the edit prompt's last token)
lies nearest the routed position's input.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.errors import InvalidArgument
from server.models.arch import ArchTemplate
from server.parametric.additions import Act, Addition
from server.parametric.layers import LayerDefaults
from server.parametric.memory_subjects import SubjectTable, shipped_subjects
from server.parametric.method import MethodContext, MethodRequest, one_at_a_time, with_request
from server.parametric.prompts import EditPrompts, build_batch
from server.parametric.targets import Progress, answer_nll, continue_greedily, forward
from server.parametric.tpatcher import memory_inputs, memory_prompts, module_io
from server.types import Edit

KIND = "wise"


@dataclass(frozen=True)
class WiseOptions:
    steps: int = 60
    lr: float = 1.0  # Adam's step, as a share of the module's weight RMS
    mask_ratio: float = 0.2  # ρ: the share of ΔW's entries one shard may change (the paper's default)
    edits_per_shard: int = 100
    routing_weight: float = 1.0  # r
    silent_margin: float = 0.02  # α: the score on other inputs at most this share of the output norm at the edit
    fire_margin: float = 0.5  # β: the score where the answer is read at least this share
    gap_margin: float = 0.3  # γ: and at least this share above the memory's
    act_ratio: float = 0.5  # the threshold: this times the smallest score an edit had at its own prompt
    stop_nll: float = 0.05  # stop once the answer's NLL is below this and the hinges are met
    continuation_tokens: int = 8  # the unedited continuation after each prompt's answer joins the memory
    memory_subjects: int = 16  # other subjects the edit's questions are asked about in the memory


def shard_entries(shard: int, shape: tuple[int, int], ratio: float) -> torch.Tensor:
    """The flat indices (k,) of ΔW (shape (d_out, d_in)) a shard may change: a share `ratio`, sorted. Shards take
    consecutive blocks of one random order of the entries, so the first 1/ratio shards are disjoint; later ones take
    the blocks of another order (drawn from a seed of the round), and overlap earlier ones. The same on every run, so
    a stored change lands where it was made."""
    total = shape[0] * shape[1]
    count = max(1, round(ratio * total))
    blocks = max(1, total // count)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(shard // blocks))
    block = shard % blocks
    return order[block * count : (block + 1) * count].sort().values


def task_vector(changes: Sequence[torch.Tensor], entries: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """One shard's ΔW (d_out, d_in): the sum of its edits' changes (k,) each, at the shard's entries (k,)."""
    flat = torch.zeros(shape[0] * shape[1])
    for change in changes:
        flat.index_add_(0, entries, change.float())
    return flat.reshape(shape)


def merge_shards(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """TIES's sign election and disjoint mean over task vectors of one shape: each entry takes the sign of their
    sum, then the mean of the vectors whose entry is non-zero with that sign. One vector is returned as it is."""
    if len(vectors) == 1:
        return vectors[0]
    stacked = torch.stack(list(vectors))  # (shards, d_out, d_in)
    elected = torch.sign(stacked.sum(0))  # (d_out, d_in)
    agree = (torch.sign(stacked) == elected) & (stacked != 0)
    count = agree.sum(0).clamp_min(1)
    return (stacked * agree).sum(0) / count


def routing_scores(inputs: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """s(x) = ‖ΔW x‖ at each input; inputs (..., d_in), delta (d_out, d_in) → (...,), float32."""
    return (inputs.float() @ delta.float().T).norm(dim=-1)


def routing_loss(edit_scores: torch.Tensor, memory_scores: torch.Tensor, options: WiseOptions,
                 scale: float) -> torch.Tensor:
    """L_a with the margins at `scale` (the output norm at the edit); scores (p,) where the answer is read and
    (m,) on the memory."""
    alpha, beta, gamma = (m * scale for m in (options.silent_margin, options.fire_margin, options.gap_margin))
    silent = torch.relu(memory_scores - alpha).mean()
    fire = torch.relu(beta - edit_scores).mean()
    gap = torch.relu(gamma - (edit_scores.mean() - memory_scores.mean()))
    return silent + fire + gap


ShardKey = tuple[int, float]  # (shard, mask ratio): which entries the shard's edits change


def shard_vectors(additions: Sequence[Addition]) -> dict[ShardKey, torch.Tensor]:
    """Each shard's task vector (d_out, d_in), in the order the shards were first written."""
    by_shard: dict[ShardKey, list[torch.Tensor]] = {}
    for a in additions:
        by_shard.setdefault((int(a.tensors["shard"]), float(a.tensors["mask_ratio"])), []).append(a.tensors["change"])
    shape = matrix_shape(additions[0]) if additions else (0, 0)
    return {key: task_vector(changes, shard_entries(key[0], shape, key[1]), shape)
            for key, changes in by_shard.items()}


def matrix_shape(addition: Addition) -> tuple[int, int]:
    d_out, d_in = (int(d) for d in addition.tensors["shape"].tolist())
    return d_out, d_in


def held_loss(earlier_scores: torch.Tensor, options: WiseOptions, scale: float) -> torch.Tensor:
    """The earlier edits' answers held: the mean excess over α of the new edit's own change's score (n,) at each
    earlier edit's key (0 for none)."""
    if len(earlier_scores) == 0:
        return earlier_scores.sum()
    return torch.relu(earlier_scores - options.silent_margin * scale).mean()


@dataclass(frozen=True)
class SideMemory:
    """One module's side memory: the merged ΔW of every edit, the router's threshold, and each edit's key."""

    edit_ids: tuple[str, ...]  # (n,)
    keys: torch.Tensor  # (n, d_in)
    delta: torch.Tensor  # (d_out, d_in)
    threshold: float

    @staticmethod
    def build(additions: Sequence[Addition]) -> SideMemory:
        """Each addition holds one edit's change at its shard's entries, its shard, the mask ratio, its key and its
        threshold (from its score at its own prompt when it was made)."""
        threshold = min(float(a.tensors["threshold"]) for a in additions)
        return SideMemory(tuple(a.edit_id for a in additions), torch.stack([a.tensors["key"] for a in additions]),
                          merge_shards(list(shard_vectors(additions).values())), threshold)

    def forward(self, inputs: torch.Tensor, output: torch.Tensor) -> tuple[torch.Tensor, list[Act]]:
        """output (batch, seq, d_out) as the side memory gives it at the positions the router sends there, and the
        nearest edit's id at each of those."""
        change = inputs.float() @ self.delta.to(inputs.device).T  # (batch, seq, d_out)
        routed = change.norm(dim=-1) > self.threshold  # (batch, seq)
        if not bool(routed.any()):
            return output, []
        rows, positions = routed.nonzero(as_tuple=True)
        nearest = torch.cdist(inputs[rows, positions].float(), self.keys.float().to(inputs.device)).argmin(-1)
        acts = [Act(r, p, self.edit_ids[e]) for r, p, e in
                zip(rows.tolist(), positions.tolist(), nearest.tolist(), strict=True)]
        return output + (change * routed[..., None]).to(output.dtype), acts


@contextmanager
def side_memory_everywhere(module: nn.Linear, delta: torch.Tensor) -> Iterator[None]:
    """The module's output is W'x = Wx + ΔW x at every position (training routes nothing); the hook computes it from
    the input, so whatever state is attached there already is replaced, not added to."""

    def hook(_: nn.Module, args: tuple[object, ...], __: torch.Tensor) -> torch.Tensor:
        inputs = args[0]
        assert isinstance(inputs, torch.Tensor)
        own = F.linear(inputs, module.weight, module.bias)
        return own + (inputs.float() @ delta.T).to(own.dtype)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def train_side_memory(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    arch: ArchTemplate,
    edit: Edit,
    layer: int,
    prompts: EditPrompts,
    attached: Sequence[Addition],
    options: WiseOptions,
    subjects: SubjectTable,
) -> Generator[Progress, None, Addition]:
    """The side-memory change that writes `edit` at layer `layer`, on top of the side memory `attached` (that
    module's WISE additions so far) builds; yields progress between steps."""
    name = arch.mlp_out.format(layer)
    module = model.get_submodule(name)
    assert isinstance(module, nn.Linear), f"{name} is not a linear map"
    shape = (module.out_features, module.in_features)
    shard = (len(attached) // options.edits_per_shard, options.mask_ratio)
    entries = shard_entries(shard[0], shape, options.mask_ratio)  # (k,)
    vectors = shard_vectors(attached)
    before = merge_shards(list(vectors.values())) if vectors else torch.zeros(shape)  # (d_out, d_in)

    rewrite = build_batch(tokenizer, prompts.value, edit.subject, edit.target_new)
    # The unedited model's continuation after each prompt and its answer: where the side memory must fall silent
    # again (without it the edited prompt repeats its answer).
    extended = continue_greedily(model, rewrite, options.continuation_tokens).batch
    inputs, outputs = module_io(model, module, extended)  # (n, seq, d_in), (n, seq, d_out)
    rows = torch.arange(len(prompts.value))[:, None]
    reads_answer = torch.zeros_like(extended.attention_mask, dtype=torch.bool)
    reads_answer[rows, rewrite.answer_positions] = True  # (n, seq): the prompt's last token and the answer's
    edit_inputs = inputs[reads_answer].float()  # (p, d_in)
    own_prompt = inputs[0][reads_answer[0]].float()  # (t, d_in): value[0] is the edit's prompt without a prefix
    key = own_prompt[0]  # (d_in,) at that prompt's last token, the first position that reads the answer
    scale = float(outputs[reads_answer].float().norm(dim=-1).mean())
    others = subjects.draw(edit.prompt, edit.subject, options.memory_subjects)
    memory = torch.cat([memory_inputs(model, tokenizer, module, memory_prompts(edit, prompts, others)),  # (m, d_in)
                        inputs[extended.attention_mask.bool() & ~reads_answer].float()])

    change = torch.zeros(len(entries), requires_grad=True)  # (k,)
    lr = options.lr * float(module.weight.float().pow(2).mean().sqrt())
    optimiser = torch.optim.Adam([change], lr=lr)

    earlier = torch.stack([a.tensors["key"] for a in attached]) if attached else torch.zeros(0, shape[1])

    def own_change() -> torch.Tensor:
        """What this edit adds to ΔW (d_out, d_in): SideMemory.build merges it so while the shards are disjoint."""
        return torch.zeros(shape[0] * shape[1]).index_add(0, entries, change).reshape(shape)

    for step in range(options.steps):
        optimiser.zero_grad()
        mine = own_change()
        delta = before + mine
        with side_memory_everywhere(module, delta):
            nll = answer_nll(forward(model, rewrite, rewrite.answer_positions), rewrite.answer_ids)
        edit_scores, memory_scores = routing_scores(edit_inputs, delta), routing_scores(memory, delta)
        routing = routing_loss(edit_scores, memory_scores, options, scale) + held_loss(
            routing_scores(earlier, mine), options, scale)
        yield Progress(KIND, step + 1, options.steps, float(nll.detach()), edit.id)
        if nll.item() < options.stop_nll and routing.item() == 0.0:
            break
        (nll + options.routing_weight * routing).backward()
        optimiser.step()

    with torch.no_grad():
        reached = float(routing_scores(own_prompt, before + own_change()).min())
    tensors = {"change": change.detach(), "shard": torch.tensor([shard[0]]),
               "mask_ratio": torch.tensor([options.mask_ratio]), "shape": torch.tensor(shape), "key": key,
               "threshold": torch.tensor([options.act_ratio * reached])}
    return Addition(edit.id, name, KIND, tensors)


@dataclass(frozen=True)
class Wise:
    """One side memory per module, each edit trained on it with the earlier edits' changes merged in."""

    name = KIND
    batched = False
    reads_earlier = False
    subjects: SubjectTable | None = None  # the memory's subjects; None: the shipped table, read at the first edit
    options: WiseOptions = WiseOptions()  # a request's steps and lr replace these

    def edited_layers(self, request: MethodRequest, defaults: LayerDefaults) -> tuple[int, ...]:
        # The paper edits a mid-to-late MLP (LLaMA-2-7B's 27 of 32); on Gemma-3-270M ROME's layer, 12 of 18, is
        # where one MLP was measured to write a fact's answer.
        return (defaults.rome if request.layer is None else request.layer,)

    def check(self, request: MethodRequest) -> None:
        if request.steps is not None and request.steps < 1:
            raise InvalidArgument(f"options.steps must be at least 1 for wise, got {request.steps}")
        # A negated test, so that NaN is refused too.
        if request.lr is not None and not request.lr > 0.0:
            raise InvalidArgument(f"options.lr must be positive for wise, got {request.lr}")

    def compute(
        self, context: MethodContext, request: MethodRequest, edits: Sequence[Edit]
    ) -> Generator[Progress, None, list[Addition]]:
        (layer,) = context.layers
        options = with_request(self.options, request, "steps", "lr")
        subjects = shipped_subjects() if self.subjects is None else self.subjects
        name = context.arch.mlp_out.format(layer)

        def one(edit: Edit) -> Generator[Progress, None, Addition]:
            attached = [a for a in context.additions.additions if a.module == name and a.kind == KIND]
            return (yield from train_side_memory(context.model, context.tokenizer, context.arch, edit, layer,
                                                 context.prompts[edit.id], attached, options, subjects))

        return (yield from one_at_a_time(context, edits, one))
