"""The `interaction` design: a small transformer that reads the query's and the edit's token vectors together.

Pooled features cannot tell "Who is X's father?" from "The employer of X is": both are near in embedding
space and name the same subject. Here the frozen encoder's contextual token vectors of both texts (the query's
from the pass retrieval already made, the edit's cached per edit) go through two attention layers, so each
query word can be compared with each edit word; the scalar pair features join at the head. A cross-encoder
would re-run MiniLM on every (query, edit) pair (about 54 ms for 8 pairs on 2 cores); this costs a few ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from server.gate.features import SCALAR_FEATURES, TOKEN_FLAGS


@dataclass(frozen=True)
class InteractionConfig:
    token_dim: int  # the encoder's embedding size
    width: int = 128
    layers: int = 2
    heads: int = 4
    head_hidden: int = 64
    n_scalars: int = len(SCALAR_FEATURES)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class InteractionNet(nn.Module):
    def __init__(self, config: InteractionConfig) -> None:
        super().__init__()
        d = config.width
        self.project = nn.Linear(config.token_dim + TOKEN_FLAGS, d)
        self.segment = nn.Embedding(2, d)  # 0: query token, 1: edit token
        self.summary = nn.Parameter(torch.zeros(1, 1, d))  # the position whose output is scored
        layer = nn.TransformerEncoderLayer(d, config.heads, 2 * d, dropout=0.1, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Sequential(nn.Linear(d + config.n_scalars, config.head_hidden), nn.ReLU(),
                                  nn.Linear(config.head_hidden, 1))

    def forward(
        self, query: torch.Tensor, query_pad: torch.Tensor, edit: torch.Tensor, edit_pad: torch.Tensor,
        scalars: torch.Tensor,
    ) -> torch.Tensor:
        """Logits (b,) of P(in scope). query (b, nq, dim + flags), query_pad (b, nq) True at padding; edit
        likewise; scalars (b, n_scalars) standardised."""
        b = query.shape[0]
        h = torch.cat([self.summary.expand(b, -1, -1),
                       self.project(query) + self.segment.weight[0],
                       self.project(edit) + self.segment.weight[1]], dim=1)  # (b, 1 + nq + ne, d)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool), query_pad, edit_pad], dim=1)
        h = self.norm(self.blocks(h, src_key_padding_mask=pad))
        return self.head(torch.cat([h[:, 0], scalars], dim=1))[:, 0]


def padded(sequences: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, n_max, width) float32 zero-padded, and (b, n_max) True at padding."""
    n = max(len(s) for s in sequences)
    out = np.zeros((len(sequences), n, sequences[0].shape[1]), dtype=np.float32)
    pad = np.ones((len(sequences), n), dtype=bool)
    for i, s in enumerate(sequences):
        out[i, : len(s)], pad[i, : len(s)] = s, False
    return torch.from_numpy(out), torch.from_numpy(pad)


def logits(
    net: InteractionNet, query_tokens: Sequence[np.ndarray], edit_tokens: Sequence[np.ndarray], scalars: np.ndarray
) -> torch.Tensor:
    """The net on a batch of pairs given as per-pair token arrays and (b, n_scalars) standardised scalars."""
    query, query_pad = padded(query_tokens)
    edit, edit_pad = padded(edit_tokens)
    return net(query, query_pad, edit, edit_pad, torch.from_numpy(np.asarray(scalars, dtype=np.float32)))
