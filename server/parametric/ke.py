"""KE, KnowledgeEditor (De Cao et al. 2021, "Editing Factual Knowledge in Language Models"): MEND's predecessor. A
hyper-network conditioned on the edit itself turns the gradient of the edit's loss into the update.

    condition  c = tanh(L [h→; h←]) (CONDITION,): a bidirectional LSTM over the input embeddings of the edit's
               prompt and new answer (the served model's own embedding table, frozen: the paper fine-tunes a copy,
               which for Gemma's 262k-token vocabulary would be a 168M-parameter artifact), its two final states
    update     per edited layer, a conditioner c → (α (d_out,), γ (d_in,), β (d_out,), ξ (d_in,), η) and
               ΔW = s σ(η) (∇W L ⊙ softmax(α) γᵀ + softmax(β) ξᵀ), the paper's eq. 4 with s its largest step.
               With ∇W L = Σ_i δ_i u_iᵀ (mend.gradient_factors) that is the sum of rank-one terms
               (softmax(α) ⊙ δ_i)(γ ⊙ u_i)ᵀ and one more, so the update is stored as rank-one deltas like MEND's, and
               ledger replay and rollback are ROME's
    training   scripts/train_mend.py --method ke: MEND's objective on the same train files (the paper's constrained
               form, with its Lagrangian, is replaced by MEND's fixed weights so that the two are compared on one
               objective and budget)

Where MEND reads each position's (u, δ) through one shared network and learns a step, KE reads what the edit says
(its tokens) and only re-weights the gradient's rows and columns; docs/BENCHMARKS.md compares the two.
"""

from __future__ import annotations

import torch
from torch import nn

from server.parametric.mend import GradientEditor, Mend, MendConfig

LSTM_HIDDEN = 256  # per direction, as the authors' code
CONDITION = 256  # c's size (the authors': 1024 for BERT-base's edits)


class KnowledgeEditor(GradientEditor):
    """The edit's condition and one conditioner per edited layer; `layer` indexes MendConfig.modules."""

    family = "ke"

    def __init__(self, config: MendConfig) -> None:
        super().__init__(config)
        d_model = config.d_out  # a down-projection writes the residual stream, whose width the embeddings share
        self.lstm = nn.LSTM(d_model, LSTM_HIDDEN, batch_first=True, bidirectional=True)
        self.condition = nn.Sequential(nn.Linear(2 * LSTM_HIDDEN, CONDITION), nn.Tanh())
        self.conditioners = nn.ModuleList(
            nn.Sequential(nn.Linear(CONDITION, config.rank), nn.Tanh(),
                          nn.Linear(config.rank, 2 * (config.d_out + config.d_in) + 1))
            for _ in config.modules
        )

    def condition_on(self, tokens: torch.Tensor) -> torch.Tensor:
        """c (CONDITION,) from the edit's embeddings (seq, d_model)."""
        _, (final, _) = self.lstm(tokens[None])  # final: (2, 1, LSTM_HIDDEN), forward then backward
        return self.condition(final[:, 0].reshape(-1))  # type: ignore[no-any-return]

    def update(self, layer: int, u: torch.Tensor, delta: torch.Tensor,
               tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ΔW = Aᵀ B with A (m + 1, d_out), B (m + 1, d_in) from u (m, d_in), δ (m, d_out)."""
        d_in, d_out = self.config.d_in, self.config.d_out
        alpha, gamma, beta, xi, eta = self.conditioners[layer](self.condition_on(tokens)).split(
            [d_out, d_in, d_out, d_in, 1])
        step = self.config.edit_lr * torch.sigmoid(eta)  # (1,)
        a = torch.cat([delta * torch.softmax(alpha, -1), torch.softmax(beta, -1)[None]]) * step  # (m + 1, d_out)
        b = torch.cat([u * gamma, xi[None]])  # (m + 1, d_in)
        return a, b


class Ke(Mend):
    """MEND's method (one edit at a time, the artifact's layers, no options) with KE's network."""

    name = "ke"
    network_class = KnowledgeEditor
