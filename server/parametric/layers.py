"""Which layers a method edits by default: measured where a sweep chose them, ROME's heuristic elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from server.models.arch import num_layers


@dataclass(frozen=True)
class LayerDefaults:
    rome: int  # one layer, for methods that write one (ROME)
    memit: tuple[int, ...]  # a range, for methods that spread edits (MEMIT, AlphaEdit)
    ft: int  # fine-tuning's layer
    last: int  # the model's last layer, whose MLP T-Patcher adds its neurons beside
    kn: tuple[int, ...]  # the layers knowledge neurons are looked for in (KN)


# Measured for Gemma-3-270M (docs/BENCHMARKS.md, "Parametric editing"); other models get `heuristic_layers`.
MEASURED_LAYERS: dict[tuple[str, int, int], LayerDefaults] = {
    ("gemma3_text", 18, 640): LayerDefaults(rome=12, memit=(8, 9, 10, 11, 12), ft=12, last=17,
                                             kn=(14, 15, 16, 17)),
}


def heuristic_layers(n_layers: int) -> LayerDefaults:
    """ROME's finding, early-middle MLPs recall facts: a third of the way up, MEMIT on the five ending there; KN in the
    top third, where Dai et al. found most knowledge neurons."""
    middle = max(0, n_layers // 3)
    top = tuple(range(n_layers - max(1, n_layers // 3), n_layers))
    return LayerDefaults(middle, tuple(range(max(0, middle - 4), middle + 1)), middle, n_layers - 1, top)


def layer_defaults(config: PretrainedConfig) -> LayerDefaults:
    n_layers = num_layers(config)
    return MEASURED_LAYERS.get((str(config.model_type), n_layers, int(config.hidden_size)), heuristic_layers(n_layers))
