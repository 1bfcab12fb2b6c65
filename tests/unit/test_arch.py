from __future__ import annotations

from dataclasses import fields

import pytest
import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

from server.errors import UnsupportedModel
from server.models.arch import ARCHS, ArchTemplate, arch_for, num_layers
from tests.tiny import HIDDEN, INTERMEDIATE, LAYERS, tiny_config

NAME_FIELDS = [f.name for f in fields(ArchTemplate) if f.type in (str, "str")]


@pytest.fixture(scope="module", params=sorted(ARCHS))
def model_and_arch(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, ArchTemplate]:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(request.param))
    return model, arch_for(model.config)


def test_every_template_name_resolves(model_and_arch: tuple[torch.nn.Module, ArchTemplate]) -> None:
    model, arch = model_and_arch
    assert NAME_FIELDS, "ArchTemplate should have name fields"
    for field in NAME_FIELDS:
        for layer in range(LAYERS):
            model.get_submodule(getattr(arch, field).format(layer))


def test_weight_orientation_matches_template(model_and_arch: tuple[torch.nn.Module, ArchTemplate]) -> None:
    model, arch = model_and_arch
    down = model.get_submodule(arch.mlp_out.format(0)).weight
    up = model.get_submodule(arch.mlp_in.format(0)).weight
    # down maps intermediate -> hidden, up maps hidden -> intermediate.
    if arch.out_features_first:
        assert down.shape == (HIDDEN, INTERMEDIATE)
        assert up.shape == (INTERMEDIATE, HIDDEN)
    else:
        assert down.shape == (INTERMEDIATE, HIDDEN)
        assert up.shape == (HIDDEN, INTERMEDIATE)


def test_num_layers(model_and_arch: tuple[torch.nn.Module, ArchTemplate]) -> None:
    model, arch = model_and_arch
    n = num_layers(model.config)
    assert n == LAYERS
    model.get_submodule(arch.layers.format(n - 1))
    with pytest.raises(AttributeError):
        model.get_submodule(arch.layers.format(n))


def test_unknown_model_type_raises() -> None:
    config = PretrainedConfig()
    config.model_type = "xyz"
    with pytest.raises(UnsupportedModel, match=r"model_type='xyz'.*server/models/arch\.py"):
        arch_for(config)


def test_templates_are_frozen() -> None:
    with pytest.raises(AttributeError):
        ARCHS["llama"].mlp_out = "x"  # type: ignore[misc]
