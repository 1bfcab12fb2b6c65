"""The trained gate's artifact: a versioned .npz that scope_classifier/ writes and the server loads.

Three kinds of network over a (query, edit) pair, all standardising `pair_features` first:
- `logistic` and `mlp`: dense layers with ReLU between them and a sigmoid at the end (logistic is the
  one-layer case); tensors w0, b0, w1, b1, ...;
- `interaction`: `server.gate.interaction.InteractionNet` over both sides' token vectors plus the
  scalar features; tensors are its state dict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from server.gate.interaction import InteractionConfig, InteractionNet, logits

FORMAT_VERSION = 2
KINDS = ("logistic", "mlp", "interaction")
# Shipped beside the code that trains it.
# Beside the counterfactual adapters: files the server reads, kept out of the training package.
DEFAULT_ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "gate" / "gate-v2.npz"
# The gate for edits about what the model never knew (inserted facts, rules): trained with made-up subjects and
# the relations' labels in every form (scope_classifier/pairs.py, v3 and v4), so the relation decides.
DEFAULT_UNFAMILIAR_ARTIFACT = DEFAULT_ARTIFACT.with_name("gate-v4.npz")
# Scores a query against an edit read from its new object (reverse questions, issue 24):
# scope_classifier/object_gate.py.
DEFAULT_OBJECT_ARTIFACT = DEFAULT_ARTIFACT.with_name("object-gate-v1.npz")


@dataclass(frozen=True)
class GateArtifact:
    kind: str  # one of KINDS
    n_features: int  # the first n_features of pair_features (interaction: the scalar features)
    mean: np.ndarray  # (n_features,)
    scale: np.ndarray  # (n_features,)
    tensors: dict[str, np.ndarray]  # the network's weights by name
    threshold: float
    encoder: str
    config: dict[str, int] = field(default_factory=dict)  # interaction: InteractionConfig's fields
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"gate kind {self.kind!r} is not one of {', '.join(KINDS)}")

    @property
    def uses_tokens(self) -> bool:
        return self.kind == "interaction"

    def predict(
        self, features: np.ndarray, query_tokens: Sequence[np.ndarray] = (), edit_tokens: Sequence[np.ndarray] = ()
    ) -> np.ndarray:
        """P(in scope) for n pairs: features (n, >= n_features); for `interaction` also each pair's
        token_inputs, query side and edit side. Returns (n,)."""
        z = (features[:, : self.n_features] - self.mean) / self.scale  # (n, F)
        if self.uses_tokens:
            with torch.inference_mode():
                return torch.sigmoid(logits(self._net, query_tokens, edit_tokens, z)).numpy()
        layers = len(self.tensors) // 2
        for i in range(layers):
            z = z @ self.tensors[f"w{i}"] + self.tensors[f"b{i}"]
            if i < layers - 1:
                z = np.maximum(z, 0.0)
        return 1.0 / (1.0 + np.exp(-z[:, 0]))

    @cached_property
    def _net(self) -> InteractionNet:
        net = InteractionNet(InteractionConfig(**self.config))
        net.load_state_dict({name: torch.from_numpy(np.asarray(t)) for name, t in self.tensors.items()})
        return net.eval()


def save_artifact(artifact: GateArtifact, path: Path) -> None:
    meta = {"format_version": FORMAT_VERSION, "kind": artifact.kind, "n_features": artifact.n_features,
            "threshold": artifact.threshold, "encoder": artifact.encoder, "config": artifact.config,
            "metrics": artifact.metrics, "tensors": list(artifact.tensors)}
    arrays = {"mean": artifact.mean, "scale": artifact.scale, "meta": np.array(json.dumps(meta))}
    arrays |= {f"tensor:{name}": np.asarray(t, dtype=np.float32) for name, t in artifact.tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub mistypes **kwds


def load_artifact(path: Path) -> GateArtifact:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path} has gate format {meta.get('format_version')}, this server reads {FORMAT_VERSION}; "
                "retrain with `python -m scope_classifier train`"
            )
        return GateArtifact(
            kind=meta["kind"], n_features=meta["n_features"], mean=data["mean"], scale=data["scale"],
            tensors={name: data[f"tensor:{name}"] for name in meta["tensors"]},
            threshold=float(meta["threshold"]), encoder=meta["encoder"], config=meta["config"],
            metrics=meta["metrics"],
        )
