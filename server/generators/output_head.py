"""The output layer for decoding: greedy tokens from an int8 copy of it, made exact by re-scoring its best candidates
with the float weights.

In a small model the output layer is most of the weights (Gemma-3-270M: 168M of 268M parameters, its tied
embedding), and every decoding step reads all of it. An int8 copy, made as --precision int8 makes its layers (int8
weights with a scale per output row, the input quantised per call, VNNI kernels), reads a quarter of the bytes.
Its `candidates` highest logits are recomputed from the float weights, and the greedy token is the best of those:
it differs from the float layer's only when the float argmax is not among the int8 layer's top candidates
(docs/BENCHMARKS.md measures how often answers agree). Sampling reads the float layer's full logits.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from server.models.load import quantise_for_serving

CANDIDATES = 8


def logit_softcap(model: PreTrainedModel) -> float | None:
    """Gemma's cap on the final logits (logits = cap · tanh(logits / cap)); None for models without one."""
    cap = getattr(model.config, "final_logit_softcapping", None)
    return float(cap) if cap else None


class OutputHead:
    """The model's output layer applied to final hidden states (rows, d): full logits, or greedy tokens."""

    def __init__(self, model: PreTrainedModel, candidates: int = CANDIDATES) -> None:
        layer = model.get_output_embeddings()
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"the output layer is a {type(layer).__name__}, not a float nn.Linear")
        self._layer = layer
        self._softcap = logit_softcap(model)
        self._candidates = candidates
        self._int8: nn.Module | None = None
        self._built_from: tuple[int, int] | None = None  # the weight's (storage, version) the int8 copy was made of
        self._int8_layer()  # at start (seconds for Gemma-3-270M), not in the first answer

    def reads(self, model: PreTrainedModel) -> bool:
        """Whether `model`'s output layer is this head's weights (the counterfactual copy shares the base model's)."""
        layer = model.get_output_embeddings()
        return isinstance(layer, nn.Linear) and layer.weight is self._layer.weight and layer.bias is self._layer.bias

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's own logits (rows, vocab), in float32."""
        logits = self._layer(hidden).float()
        if self._softcap is not None:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    def greedy(self, hidden: torch.Tensor) -> torch.Tensor:
        """The argmax token of each row (rows,): the int8 copy's top candidates, re-scored with the float weights.
        The softcap is monotonic, so it cannot change which candidate is best."""
        rough = self._int8_layer()(hidden.float())  # (rows, vocab)
        candidates = rough.topk(self._candidates, dim=-1).indices  # (rows, k)
        weight = self._layer.weight[candidates]  # (rows, k, d)
        exact = torch.einsum("rkd,rd->rk", weight.float(), hidden.float())  # (rows, k)
        if self._layer.bias is not None:
            exact = exact + self._layer.bias[candidates].float()
        return candidates.gather(1, exact.argmax(dim=-1, keepdim=True))[:, 0]

    def _int8_layer(self) -> nn.Module:
        """The int8 copy, made again whenever the float weights changed since it was made."""
        weight = self._layer.weight
        source = (weight.untyped_storage().data_ptr(), weight._version)
        if self._int8 is None or source != self._built_from:
            # The float weights themselves (no copy of fp32 ones), on a layer made without weights of its own.
            float_layer = nn.Linear(weight.shape[1], weight.shape[0], bias=self._layer.bias is not None, device="meta")
            float_layer.weight = nn.Parameter(weight.detach().float(), requires_grad=False)
            if self._layer.bias is not None:
                float_layer.bias = nn.Parameter(self._layer.bias.detach().float(), requires_grad=False)
            int8 = nn.Sequential(float_layer)
            quantise_for_serving(int8, "int8")  # as --precision int8 quantises every layer
            self._int8, self._built_from = int8, source
        return self._int8
