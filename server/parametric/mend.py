"""MEND (Mitchell et al. 2022, "Fast Model Editing at Scale"): a trained editor network turns the gradient of one
edit's loss at a few MLP down-projections into a weight update, in one forward and one backward pass.

    gradient  a linear layer y_i = W u_i (W (d_out, d_in)) at positions i has ∇W L = Σ_i δ_i u_iᵀ, with u_i its input
              (d_in,) and δ_i = ∂L/∂y_i (d_out,): one rank-one term per position (`gradient_factors`), so the editor
              reads 2 vectors per position instead of a d_out × d_in matrix
    editor    z = [u; δ] (d_in + d_out,), each half standardised by running statistics recorded in training, then two
              low-rank residual blocks shared by the edited layers, with a scale s and offset o per layer (the paper's
              eq. 3): h = z + relu(s¹ ⊙ (U₁V₁z + b₁) + o¹), g(z) = h + s² ⊙ (U₂V₂h + b₂) + o²; g(z) splits into
              (ũ, δ̃). The last block is linear, as in the authors' code (a relu there could only add to z, never
              take a shared direction out of it). U starts at zero, so an untrained editor is the identity
    update    W̃ = W − α_ℓ Σ_i δ̃_i ũ_iᵀ, with a learned step α_ℓ per layer (kept positive as exp(log α_ℓ)); stored
              as one rank-one delta per position (u = −α_ℓ δ̃_i, v = ũ_i), so the ledger replays and rolls it back as
              it does ROME's
    training  scripts/train_mend.py: c_edit · NLL of the new answer after the edit's prompt and a paraphrase, with
              the update in place, + c_loc · KL(unedited ‖ edited) on an unrelated prompt; gradients flow through the
              update into the editor (the edit's own gradient is an input, not differentiated)

The trained editor is an artifact made for one model's weights: `artifacts/mend/<name>/` holds `mend.json` (the
manifest, naming the model's fingerprint) and `mend.safetensors`. Applying MEND on a model no artifact was trained
for raises FailedPrecondition.

KE (ke.py) shares all of this but the network: the reading of the edit, the update's application, the training
losses, the artifact and the method; `GradientEditor` is what either network provides.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.errors import FailedPrecondition, InvalidArgument
from server.models.arch import ArchTemplate
from server.parametric.deltas import WeightDelta
from server.parametric.layers import LayerDefaults
from server.parametric.method import MethodContext, MethodRequest, on_current
from server.parametric.prompts import answer_token_ids
from server.parametric.targets import Progress
from server.types import Edit

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"  # a trained editor is in ARTIFACTS/<method>/<name>/
MANIFEST = "mend.json"
WEIGHTS = "mend.safetensors"
EDITED_LAYERS = 3  # the paper edits the MLPs of the last three blocks


# --- the gradient's factors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenBatch:
    """Prompt + answer rows, right-padded, and the positions whose logits predict each answer token."""

    input_ids: torch.Tensor  # (n, seq)
    attention_mask: torch.Tensor  # (n, seq)
    answer_ids: torch.Tensor  # (n, t) the answer's tokens, padded with -1 past a row's answer
    answer_positions: torch.Tensor  # (n, t) the positions that predict them (0 where padded)
    read: torch.Tensor  # (n, seq) bool: the positions whose gradient factors the editor reads (`token_batch`)


def token_batch(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]]) -> TokenBatch:
    """Each (prompt, answer) as prompt tokens then the answer's tokens (prompts.answer_token_ids), right-padded.

    The editor reads every real position but a leading BOS: the layer's input there is the same in every prompt, so
    an update keyed on it would change every answer of the model (Gemma's BOS is also its attention sink).
    """
    rows, answers = [], []
    for prompt, answer in pairs:
        ids = list(tokenizer(prompt)["input_ids"])
        answers.append((len(ids), answer_token_ids(tokenizer, answer)))
        rows.append(ids + answers[-1][1])
    width, t = max(map(len, rows)), max(len(a) for _, a in answers)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    read = mask.bool()
    read[:, 0] &= torch.tensor([r[0] != tokenizer.bos_token_id for r in rows])
    return TokenBatch(
        input_ids=torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        attention_mask=mask,
        answer_ids=torch.tensor([a + [-1] * (t - len(a)) for _, a in answers]),
        answer_positions=torch.tensor([[start - 1 + j if j < len(a) else 0 for j in range(t)]
                                       for start, a in answers]),
        read=read,
    )


def answer_loss(logits: torch.Tensor, batch: TokenBatch) -> torch.Tensor:
    """Mean NLL of the answer tokens over every row's real answer tokens; logits (n, t, vocab) at answer_positions."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # (n, t, vocab)
    real = batch.answer_ids >= 0  # (n, t)
    picked = logprobs.gather(2, batch.answer_ids.clamp_min(0)[..., None])[..., 0]  # (n, t)
    return -(picked * real).sum() / real.sum()


def answer_logits(model: nn.Module, batch: TokenBatch, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Logits (n, t, vocab) at the answer positions only (the vocabulary is most of the cost), with `weights`
    (parameter name → tensor) in place of the model's own where given."""
    kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
              "logits_to_keep": batch.answer_positions}
    if weights is None:
        return model(**kwargs).logits  # type: ignore[no-any-return]
    return torch.func.functional_call(model, weights, kwargs=kwargs).logits  # type: ignore[no-any-return]


@contextmanager
def probing(modules: dict[str, nn.Module]) -> Iterator[dict[str, tuple[list[torch.Tensor], torch.Tensor]]]:
    """Records each module's input and adds a zero leaf tensor to its output, so ∂L/∂(leaf) = ∂L/∂y = δ.

    Adding a leaf, rather than detaching the output, keeps the paths from a lower edited layer through the higher
    ones: the gradient at layer 15 includes what layers 16 and 17 make of it.
    """
    seen: dict[str, tuple[list[torch.Tensor], torch.Tensor]] = {}

    def hook_for(name: str):  # type: ignore[no-untyped-def]
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            leaf = torch.zeros_like(output, dtype=torch.float32, requires_grad=True)  # (n, seq, d_out)
            seen[name] = ([args[0].detach()], leaf)
            return output + leaf.to(output.dtype)
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def gradient_factors(
    model: nn.Module, modules: Sequence[str], batch: TokenBatch, positions: torch.Tensor | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(u (m, d_in), δ (m, d_out)) per module of the answer's NLL, over the m `positions` ((n, seq) bool; default
    `batch.read`). Over all real positions the module's weight gradient (d_out, d_in) is δᵀ u. Detached: MEND reads
    the gradient, it does not train through it.

    GPT-2's Conv1D takes the same (n, seq, d_in) input, so u and δ mean the same there.
    """
    with torch.enable_grad(), probing({n: model.get_submodule(n) for n in modules}) as seen:
        loss = answer_loss(answer_logits(model, batch), batch)
        leaves = [seen[n][1] for n in modules]
        grads = torch.autograd.grad(loss, leaves)
    chosen = batch.read if positions is None else positions  # (n, seq)
    return {n: (seen[n][0][0][chosen].float(), g[chosen].float()) for n, g in zip(modules, grads, strict=True)}


def gradient_from_factors(u: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Σ_i δ_i u_iᵀ = δᵀ u: (m, d_in), (m, d_out) → (d_out, d_in)."""
    return delta.T @ u


@dataclass(frozen=True)
class EditReading:
    """What an editor network reads of one edit: its gradient's factors and its tokens."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module → (u (m, d_in), δ (m, d_out))
    tokens: torch.Tensor  # (seq, d_model) the edit row's input embeddings (KE conditions on them; MEND does not)


def read_edit(model: PreTrainedModel | nn.Module, modules: Sequence[str], edit: TokenBatch) -> EditReading:
    """The gradient's factors of the one-row batch `edit` and the embeddings of its real tokens, detached."""
    embed: nn.Module = model.get_input_embeddings()  # type: ignore[operator,assignment]
    with torch.no_grad():
        tokens = embed(edit.input_ids[0][edit.attention_mask[0].bool()]).float()  # (seq, d_model)
    return EditReading(gradient_factors(model, modules, edit), tokens)


# --- the editor network ----------------------------------------------------------------------------------------


class GradientEditor(nn.Module):
    """A trained network that maps an edit's reading at one edited layer to its update as factors (A (r, d_out),
    B (r, d_in)), ΔW = Aᵀ B; MEND's (below) and KE's (ke.py)."""

    family: str  # what the manifest records (MendConfig.family)

    def __init__(self, config: MendConfig) -> None:
        super().__init__()
        self.config = config

    def observe(self, layer: int, u: torch.Tensor, delta: torch.Tensor) -> None:
        """Adds training gradients to running statistics, for a network that standardises its input; else nothing."""

    def update(self, layer: int, u: torch.Tensor, delta: torch.Tensor,
               tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class MendConfig:
    """What the editor was trained for; recorded in the manifest and checked against the served model."""

    model_fingerprint: str
    model_type: str
    modules: tuple[str, ...]  # the edited down-projections, in layer order
    layers: tuple[int, ...]
    d_in: int
    d_out: int
    rank: int = 64  # MEND: the blocks' low rank; KE: its conditioners' hidden width
    edit_lr: float = 1e-4  # MEND: α's starting value; KE: the largest step (σ(η) scales it)
    family: str = "mend"  # which network the artifact holds: "mend", or "ke" (server/parametric/ke.py)


class EditorNetwork(GradientEditor):
    """g: (u, δ) → (ũ, δ̃) for every edited layer of one shape; `layer` is the index into MendConfig.modules."""

    family = "mend"

    count: torch.Tensor  # (n,) rows observed per layer
    mean: torch.Tensor  # (n, dim)
    m2: torch.Tensor  # (n, dim) sums of squared deviations from the mean

    def __init__(self, config: MendConfig) -> None:
        super().__init__(config)
        dim, n, r = config.d_in + config.d_out, len(config.modules), config.rank
        self.down = nn.Parameter(torch.randn(2, r, dim) / math.sqrt(dim))  # V₁, V₂ (r, dim)
        self.up = nn.Parameter(torch.zeros(2, dim, r))  # U₁, U₂ (dim, r): zero, so g starts as the identity
        self.bias = nn.Parameter(torch.zeros(2, dim))  # b₁, b₂
        self.scale = nn.Parameter(torch.ones(2, n, dim))  # s¹, s² per layer
        self.offset = nn.Parameter(torch.zeros(2, n, dim))  # o¹, o² per layer
        self.log_lr = nn.Parameter(torch.full((n,), math.log(config.edit_lr)))  # log α per layer
        # Running mean and variance of z per layer (Welford), updated in training only.
        self.register_buffer("count", torch.zeros(n))
        self.register_buffer("mean", torch.zeros(n, dim))
        self.register_buffer("m2", torch.zeros(n, dim))

    def observe(self, layer: int, u: torch.Tensor, delta: torch.Tensor) -> None:
        """Adds the rows of z = [u; δ] (m, dim) to the layer's running statistics (training; Chan et al.'s merge of
        two groups' means and sums of squares)."""
        z = torch.cat([u, delta], dim=-1).detach()  # (m, dim)
        n_old, n_new = self.count[layer].clone(), float(z.shape[0])
        mean_new = z.mean(0)
        step = mean_new - self.mean[layer]
        total = n_old + n_new
        self.mean[layer] += step * (n_new / total)
        self.m2[layer] += ((z - mean_new) ** 2).sum(0) + step**2 * (n_old * n_new / total)
        self.count[layer] = total

    def standardise(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """z (m, dim) less the layer's running mean, over its running standard deviation."""
        if self.count[layer] < 2:  # nothing observed yet: unscaled
            return z
        std = (self.m2[layer] / (self.count[layer] - 1)).sqrt()  # (dim,)
        # A feature nearly constant over the examples seen would be blown up by its tiny deviation: floor each
        # half's deviations at a thousandth of that half's mean (u and δ differ in scale by orders of magnitude).
        d_in = self.config.d_in
        floor = torch.cat([std[:d_in].mean().expand(d_in), std[d_in:].mean().expand(std.shape[0] - d_in)]) * 1e-3
        return (z - self.mean[layer]) / torch.maximum(std, floor + 1e-12)

    def forward(self, layer: int, u: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ũ (m, d_in), δ̃ (m, d_out)) from u (m, d_in), δ (m, d_out)."""
        h = self.standardise(layer, torch.cat([u, delta], dim=-1))  # (m, dim)
        for block in range(2):
            low = (h @ self.down[block].T) @ self.up[block].T + self.bias[block]  # (m, dim) through rank r
            added = self.scale[block, layer] * low + self.offset[block, layer]
            h = h + (torch.relu(added) if block == 0 else added)
        return h[:, : self.config.d_in], h[:, self.config.d_in :]

    def step_size(self, layer: int) -> torch.Tensor:
        return self.log_lr[layer].exp()

    def update(self, layer: int, u: torch.Tensor, delta: torch.Tensor,
               tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The update −α Σ_i δ̃_i ũ_iᵀ as factors (A (m, d_out), B (m, d_in)), ΔW = Aᵀ B (d_out, d_in)."""
        u_new, delta_new = self(layer, u, delta)
        return -self.step_size(layer) * delta_new, u_new


def edited_weights(
    model: nn.Module, arch: ArchTemplate, network: GradientEditor, reading: EditReading
) -> dict[str, torch.Tensor]:
    """Each edited module's weight plus its update, differentiable in the network (training); parameter name →
    tensor in the module's own layout (Conv1D stores (d_in, d_out))."""
    weights = {}
    for layer, name in enumerate(network.config.modules):
        a, b = network.update(layer, *reading.factors[name], reading.tokens)
        change = a.T @ b  # (d_out, d_in)
        weight: torch.Tensor = model.get_submodule(name).weight  # type: ignore[assignment]
        weights[f"{name}.weight"] = weight + (change if arch.out_features_first else change.T).to(weight.dtype)
    return weights


def editor_deltas(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, network: GradientEditor, edit: Edit
) -> list[WeightDelta]:
    """One rank-one delta per edited module and row of its update's factors (MEND: one per token position of the
    edit's prompt and new answer; KE: one more)."""
    reading = read_edit(model, network.config.modules, token_batch(tokenizer, [(edit.prompt, edit.target_new)]))
    deltas = []
    with torch.no_grad():
        for layer, name in enumerate(network.config.modules):
            a, b = network.update(layer, *reading.factors[name], reading.tokens)  # (r, d_out), (r, d_in)
            deltas += [WeightDelta(edit.id, name, a[i].clone(), b[i].clone()) for i in range(a.shape[0])]
    return deltas


@dataclass(frozen=True)
class TrainingExample:
    """One edit and what its update is judged on (the paper's x_e, x_e' and x_loc)."""

    edit: TokenBatch  # one row: the edit's prompt and new answer, whose gradient the editor reads
    equivalent: TokenBatch  # rows that should give the new answer after the edit (the prompt, paraphrases)
    unrelated: TokenBatch  # rows whose answer distribution must not move


def training_example(
    tokenizer: PreTrainedTokenizerBase, prompt: str, target_new: str, paraphrases: Sequence[str],
    unrelated: Sequence[tuple[str, str]],
) -> TrainingExample:
    """The edit (prompt, new answer), its equivalents (the prompt, then each paraphrase) and unrelated (prompt,
    answer) pairs as token batches."""
    return TrainingExample(
        edit=token_batch(tokenizer, [(prompt, target_new)]),
        equivalent=token_batch(tokenizer, [(prompt, target_new), *((p, target_new) for p in paraphrases)]),
        unrelated=token_batch(tokenizer, unrelated),
    )


def teacher_forced_scores(
    model: nn.Module, arch: ArchTemplate, network: GradientEditor | None, example: TrainingExample
) -> dict[str, float]:
    """With the example's edit in place (`network` None: unedited), the share of the new answer's tokens predicted
    by argmax after the prompt (reliability) and after the paraphrases (generalization; NaN without one), and the
    share of the unrelated answers' positions whose argmax is as unedited (locality)."""
    with torch.no_grad():
        before = answer_logits(model, example.unrelated).argmax(-1)  # (n, t)
    weights = None
    if network is not None:
        reading = read_edit(model, network.config.modules, example.edit)
        with torch.no_grad():
            weights = edited_weights(model, arch, network, reading)
    with torch.no_grad():
        equivalent = example.equivalent
        hit = answer_logits(model, equivalent, weights).argmax(-1) == equivalent.answer_ids  # (n, t)
        real = equivalent.answer_ids >= 0
        per_row = (hit & real).sum(1) / real.sum(1)  # (n,)
        kept = answer_logits(model, example.unrelated, weights).argmax(-1) == before
        loc_real = example.unrelated.answer_ids >= 0
    return {"reliability": float(per_row[0]),
            "generalization": float(per_row[1:].mean()) if len(per_row) > 1 else math.nan,
            "locality": float((kept & loc_real).sum() / loc_real.sum())}


def kl_to(original: torch.Tensor, logits: torch.Tensor, batch: TokenBatch) -> torch.Tensor:
    """Mean over real answer positions of KL(original ‖ current); log-probabilities and logits (n, t, vocab)."""
    current = torch.log_softmax(logits.float(), dim=-1)
    per_position = (original.exp() * (original - current)).sum(-1)  # (n, t)
    real = batch.answer_ids >= 0
    return (per_position * real).sum() / real.sum()


def training_losses(
    model: nn.Module, arch: ArchTemplate, network: GradientEditor, example: TrainingExample, observe: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_edit, L_loc) of one example, differentiable in the network: the new answer's NLL on the equivalent rows and
    KL(unedited ‖ edited) on the unrelated rows, both with the editor's update in place. `observe` first adds the
    edit's gradient factors to the network's running statistics."""
    reading = read_edit(model, network.config.modules, example.edit)
    if observe:
        for layer, name in enumerate(network.config.modules):
            network.observe(layer, *reading.factors[name])
    with torch.no_grad():
        original = torch.log_softmax(answer_logits(model, example.unrelated).float(), dim=-1)  # (n, t, vocab)
    weights = edited_weights(model, arch, network, reading)
    edit_loss = answer_loss(answer_logits(model, example.equivalent, weights), example.equivalent)
    loc_loss = kl_to(original, answer_logits(model, example.unrelated, weights), example.unrelated)
    return edit_loss, loc_loss


# --- the artifact ----------------------------------------------------------------------------------------------


def save_artifact(network: GradientEditor, directory: Path, extra: dict[str, object] | None = None) -> None:
    """Writes the manifest and the weights (atomically each: a reader sees the old or the new file)."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in network.state_dict().items()}
    tmp = directory / (WEIGHTS + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(directory / WEIGHTS)
    manifest = {**asdict(network.config), **(extra or {})}
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(directory / MANIFEST)


def read_config(directory: Path) -> MendConfig:
    body = json.loads((directory / MANIFEST).read_text())
    fields = MendConfig.__dataclass_fields__
    known = {k: v for k, v in body.items() if k in fields}
    return MendConfig(**known | {"modules": tuple(known["modules"]), "layers": tuple(known["layers"])})


def load_artifact(directory: Path, network_class: type[GradientEditor] = EditorNetwork) -> GradientEditor:
    """The editor in `directory`, in float32 (it may be stored narrower); its manifest must name the class's
    family."""
    config = read_config(directory)
    if config.family != network_class.family:
        raise FailedPrecondition(f"{directory} holds a {config.family} editor, not a {network_class.family} one")
    network = network_class(config)
    tensors = load_file(str(directory / WEIGHTS))
    network.load_state_dict({k: v.float() for k, v in tensors.items()})
    return network.eval().requires_grad_(False)


def served_by(fingerprint: str, model_id: str) -> bool:
    """The editor's model id is the fingerprint, with the serving precision appended when not fp32 ("-bf16",
    server/app.py): an editor trained on the weights serves them at any precision."""
    return model_id == fingerprint or model_id.startswith(fingerprint + "-")


def find_artifact(root: Path, model_id: str, method: str = "mend") -> Path:
    """The artifact directory under `root` trained on the served weights; FailedPrecondition naming what exists."""
    found = sorted(p.parent for p in root.glob(f"*/{MANIFEST}")) if root.exists() else []
    for directory in found:
        if served_by(read_config(directory).model_fingerprint, model_id):
            return directory
    others = ", ".join(f"{d.name} ({read_config(d).model_fingerprint})" for d in found) or "none"
    raise FailedPrecondition(
        f"{method.upper()} needs an editor network trained on the served model ({model_id}); {root} holds {others}. "
        f"Train one with scripts/train_mend.py --method {method}"
    )


class Mend:
    """One edit at a time, each computed with the earlier ones in place, at the layers its artifact was trained for.
    KE (ke.py) is the same method with another network."""

    name = "mend"
    batched = False
    reads_earlier = False
    network_class: type[GradientEditor] = EditorNetwork

    def __init__(self, root: Path | None = None) -> None:
        self._root = root or ARTIFACTS / self.name
        self._loaded: dict[Path, GradientEditor] = {}  # read once per method instance, not per edit

    def edited_layers(self, request: MethodRequest, defaults: LayerDefaults) -> tuple[int, ...]:
        """The last three layers: the artifact fixes them, and `compute` checks that it matches."""
        return tuple(range(max(0, defaults.last - EDITED_LAYERS + 1), defaults.last + 1))

    def check(self, request: MethodRequest) -> None:
        given = [k for k, v in asdict(request).items()
                 if k not in ("method", "in_gate") and v not in (None, ())]
        if given:
            raise InvalidArgument(f"{self.name.upper()} takes no options (its trained editor fixes its layers and "
                                  f"step); remove {', '.join(given)}")

    def network(self, model_id: str) -> GradientEditor:
        directory = find_artifact(self._root, model_id, self.name)
        if directory not in self._loaded:
            self._loaded[directory] = load_artifact(directory, self.network_class)
        return self._loaded[directory]

    def compute(
        self, context: MethodContext, request: MethodRequest, edits: Sequence[Edit]
    ) -> Generator[Progress, None, list[WeightDelta]]:
        network = self.network(context.model_id)
        expected = tuple(context.arch.mlp_out.format(i) for i in context.layers)
        if network.config.modules != expected:
            raise FailedPrecondition(f"the {self.name.upper()} editor edits {', '.join(network.config.modules)}, "
                                     f"but this model's last layers are {', '.join(expected)}; retrain it with "
                                     f"scripts/train_mend.py --method {self.name}")

        def one(edit: Edit) -> Generator[Progress, None, list[WeightDelta]]:
            yield Progress(self.name, 0, 1, None, edit.id)
            return editor_deltas(context.model, context.tokenizer, network, edit)

        changes: list[WeightDelta] = []
        for edit in edits:
            changes += yield from on_current(context, one(edit), changes)
        return changes
