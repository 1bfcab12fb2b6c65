"""The trained gate's artifact: a versioned .npz the server loads (it never imports training code).

A small network over `scope_classifier.features.pair_features`: standardise, then dense layers
with ReLU between them and a sigmoid at the end. A logistic regression is the one-layer case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
DEFAULT_ARTIFACT = Path(__file__).parent / "artifacts" / "gate-v1.npz"


@dataclass(frozen=True)
class GateArtifact:
    kind: str  # "logistic" or "mlp"
    n_features: int  # the first n_features of pair_features
    mean: np.ndarray  # (n_features,)
    scale: np.ndarray  # (n_features,)
    weights: tuple[np.ndarray, ...]  # (in, out) per layer
    biases: tuple[np.ndarray, ...]  # (out,) per layer
    threshold: float
    encoder: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """P(in scope) for (n, >= n_features) pair features: (n,)."""
        h = (features[:, : self.n_features] - self.mean) / self.scale  # (n, F)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return 1.0 / (1.0 + np.exp(-h[:, 0]))


def save_artifact(artifact: GateArtifact, path: Path) -> None:
    meta = {"format_version": FORMAT_VERSION, "kind": artifact.kind, "n_features": artifact.n_features,
            "threshold": artifact.threshold, "encoder": artifact.encoder, "metrics": artifact.metrics,
            "layers": len(artifact.weights)}
    arrays = {"mean": artifact.mean, "scale": artifact.scale}
    for i, (w, b) in enumerate(zip(artifact.weights, artifact.biases, strict=True)):
        arrays[f"w{i}"], arrays[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub mistypes **kwds


def load_artifact(path: Path) -> GateArtifact:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path} has gate format {meta.get('format_version')}, this server reads {FORMAT_VERSION}; "
                "retrain with `python -m scope_classifier train`"
            )
        layers = range(meta["layers"])
        return GateArtifact(
            kind=meta["kind"], n_features=meta["n_features"], mean=data["mean"], scale=data["scale"],
            weights=tuple(data[f"w{i}"] for i in layers), biases=tuple(data[f"b{i}"] for i in layers),
            threshold=float(meta["threshold"]), encoder=meta["encoder"], metrics=meta["metrics"],
        )
