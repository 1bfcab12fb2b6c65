"""Per-architecture module-name templates, keyed by `config.model_type`.

Editing code finds layers through this table, never by guessing from module
names or a model's name, and reads weight orientation from it rather than from
shapes (a square matrix would make a shape guess silently wrong).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from transformers import PretrainedConfig

from server.errors import UnsupportedModel


@dataclass(frozen=True)
class ArchTemplate:
    """Module names with `{}` for the layer index, as accepted by `model.get_submodule`."""

    layers: str  # one decoder block: "model.layers.{}"
    mlp_in: str  # MLP up projection (hidden -> intermediate), for ROME keys
    mlp_out: str  # MLP down projection (intermediate -> hidden), the weight ROME/MEMIT edit
    attn_out: str  # attention output projection
    embed: str  # token embedding
    final_norm: str  # norm before the LM head
    lm_head: str
    out_features_first: bool  # nn.Linear stores weight as (out, in): True; GPT-2's Conv1D (in, out): False
    # A norm applied to the MLP's output before the residual add (Gemma 2 and 3), which MEMIT maps through.
    mlp_out_norm: str | None = None


_LLAMA_LIKE = ArchTemplate(
    layers="model.layers.{}",
    mlp_in="model.layers.{}.mlp.up_proj",
    mlp_out="model.layers.{}.mlp.down_proj",
    attn_out="model.layers.{}.self_attn.o_proj",
    embed="model.embed_tokens",
    final_norm="model.norm",
    lm_head="lm_head",
    out_features_first=True,
)

_GEMMA_2_AND_3 = replace(_LLAMA_LIKE, mlp_out_norm="model.layers.{}.post_feedforward_layernorm")

ARCHS: dict[str, ArchTemplate] = {
    "gemma3_text": _GEMMA_2_AND_3,  # Gemma-3-270M, the default served model
    "gemma2": _GEMMA_2_AND_3,
    "gemma": _LLAMA_LIKE,
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gpt2": ArchTemplate(
        layers="transformer.h.{}",
        mlp_in="transformer.h.{}.mlp.c_fc",
        mlp_out="transformer.h.{}.mlp.c_proj",
        attn_out="transformer.h.{}.attn.c_proj",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        out_features_first=False,
    ),
    "gptj": ArchTemplate(
        layers="transformer.h.{}",
        mlp_in="transformer.h.{}.mlp.fc_in",
        mlp_out="transformer.h.{}.mlp.fc_out",
        attn_out="transformer.h.{}.attn.out_proj",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        out_features_first=True,
    ),
}


def arch_for(config: PretrainedConfig) -> ArchTemplate:
    """The template for `config.model_type`; UnsupportedModel if there is none."""
    try:
        return ARCHS[config.model_type]
    except KeyError:
        raise UnsupportedModel(
            f"no layer template for model_type={config.model_type!r}; add one to server/models/arch.py"
        ) from None


def num_layers(config: PretrainedConfig) -> int:
    """Number of decoder blocks; GPT-2/GPT-J map `num_hidden_layers` to `n_layer` via attribute_map."""
    return int(config.num_hidden_layers)
