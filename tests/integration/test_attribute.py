"""The Attribute RPC through the real gRPC server: KN's attribution of an answer on the served tiny model, and each
bad input's INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from client import InvalidArgument
from client.launch import LocalServer
from server.models.arch import arch_for
from server.parametric.kn import attribute, top_neurons
from server.parametric.targets import finish

PROMPT = "the capital of france is"


@pytest.fixture(scope="module")
def server(taught_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    data = tmp_path_factory.mktemp("attribute-data")
    server = LocalServer(taught_model_dir, data / "data", "--context-prefixes", "0", "--gate", "similarity",
                         "--cache-dir", str(data / "cache"))
    server.start()
    yield server
    server.stop()


def test_attribute_lists_the_same_neurons_as_kn_in_process_and_changes_nothing(
    server: LocalServer, taught_model_dir: Path
) -> None:
    model = AutoModelForCausalLM.from_pretrained(taught_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(taught_model_dir)
    arch = arch_for(model.config)
    paris = tokenizer.convert_tokens_to_ids("paris")
    assert isinstance(paris, int)
    expected = top_neurons(finish(attribute(model, tokenizer, arch, PROMPT, paris, (0, 1, 2, 3), 20)), arch, 3)
    with server.client("p") as client:
        before = client.score(PROMPT, " paris", route="base").target_logprobs
        result = client.attribute(PROMPT, "paris", layers=[0, 1, 2, 3], top=3)
        assert client.score(PROMPT, " paris", route="base").target_logprobs == before
        default = client.attribute(PROMPT, "paris", top=2, steps=5)
    assert result.answer_token == "paris" and result.probability > 0.9
    assert [(layer.layer, layer.module) for layer in result.layers] == [
        (i, f"model.layers.{i}.mlp.down_proj") for i in range(4)
    ]
    for got, want in zip(result.layers, expected, strict=True):
        assert [n.neuron for n in got.neurons] == [n.neuron for n in want.neurons]
        assert [n.attribution for n in got.neurons] == pytest.approx([n.attribution for n in want.neurons], rel=1e-4)
        scores = [n.attribution for n in got.neurons]
        assert scores == sorted(scores, reverse=True)
    # Without layers: KN's default for a 4-layer model, the top third (layer 3).
    assert [(layer.layer, len(layer.neurons)) for layer in default.layers] == [(3, 2)]


@pytest.mark.parametrize(("prompt", "answer", "options", "message"), [
    ("", "paris", {}, "prompt is empty"),
    ("   ", "paris", {}, "prompt is empty"),
    (PROMPT, "", {}, "answer is empty"),
    (PROMPT, "paris", {"layers": [4]}, "layer 4 is out of range: this model has layers 0 to 3"),
    (PROMPT, "paris", {"layers": [-1]}, "layer -1 is out of range"),
    (PROMPT, "paris", {"top": 101}, "top must be in"),
    (PROMPT, "paris", {"steps": 201}, "steps must be in"),
])
def test_bad_input_is_invalid_argument_with_what_to_fix(
    server: LocalServer, prompt: str, answer: str, options: dict[str, object], message: str
) -> None:
    with server.client("p") as client:
        with pytest.raises(InvalidArgument, match=message):
            client.attribute(prompt, answer, **options)  # type: ignore[arg-type]
        assert client.attribute(PROMPT, "paris", layers=[0], top=1, steps=2).layers  # the server carries on
