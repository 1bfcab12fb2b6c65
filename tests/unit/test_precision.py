"""Serving precision (--precision fp32|bf16|int8): loading, answers against fp32, parametric editing under each."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from scripts.measure_precision import agreement, first_difference
from server.app import build_counterfactual, build_parametric
from server.cli import parse_args
from server.config import Config, build_config
from server.errors import FailedPrecondition
from server.generators.counterfactual import CounterfactualGenerator
from server.generators.decoding import CausalLM
from server.models.load import LoadedModel, load_model, quantise_for_serving
from server.parametric.deltas import WeightDelta, add_delta_
from server.parametric.editor import MethodRequest
from server.parametric.targets import finish
from server.types import Edit, GenerationOptions
from tests.tiny import FACTS, build_tiny_model, build_tiny_tokenizer, teach
from tests.tiny_counterfactual import save_adaptable_model, train_tiny_adapter

QUANTISED_LINEAR = torch.ao.nn.quantized.dynamic.Linear
FRANCE = "the capital of france is"


@pytest.fixture(autouse=True)
def restore_onednn() -> Iterator[None]:
    """Loading bf16 turns oneDNN off for the process; the other tests run with it as they found it."""
    before = torch.backends.mkldnn.enabled
    yield
    torch.backends.mkldnn.enabled = before


@functools.cache
def _taught_state() -> dict[str, torch.Tensor]:
    model = teach(build_tiny_model("llama", layers=4), build_tiny_tokenizer())
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def taught_dir(tmp_path: Path) -> Path:
    """A 4-layer tiny llama that knows the four capitals, saved as a Hugging Face directory (fp32)."""
    model = build_tiny_model("llama", layers=4)
    model.load_state_dict(_taught_state())
    model.save_pretrained(tmp_path / "taught")
    build_tiny_tokenizer().save_pretrained(tmp_path / "taught")
    return tmp_path / "taught"


def serving(model_dir: Path, precision: str) -> LoadedModel:
    """The model as the server serves it: loaded at `precision`, then quantised for int8."""
    loaded = load_model(str(model_dir), model_dir.parent / "cache", precision=precision)
    quantise_for_serving(loaded.model, precision)
    return loaded


def next_word(loaded: LoadedModel, prompt: str) -> str:
    generation = CausalLM(loaded.model, loaded.tokenizer).decode(prompt, GenerationOptions(max_new_tokens=1))
    return str(loaded.tokenizer.convert_ids_to_tokens(generation.token_ids[0]))


def last_logits(loaded: LoadedModel, prompt: str) -> torch.Tensor:
    ids = loaded.tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        return loaded.model(**ids).logits[0, -1].float()


# --- settings ------------------------------------------------------------------------------------


def test_precision_is_a_setting_and_a_flag() -> None:
    assert Config().precision == "fp32"
    assert build_config(environ={"EDITCACHE_PRECISION": "bf16"}).precision == "bf16"
    args = parse_args(["--precision", "int8"])
    assert build_config(overrides={"precision": args.precision}).precision == "int8"
    with pytest.raises(ValueError, match=r"precision must be one of fp32, bf16, int8, got 'fp16'"):
        build_config(overrides={"precision": "fp16"})


def test_load_refuses_an_unknown_precision(taught_dir: Path) -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        load_model(str(taught_dir), taught_dir.parent / "cache", precision="fp8")


# --- loading and answering -------------------------------------------------------------------------


def test_fp32_is_the_unchanged_default(taught_dir: Path) -> None:
    loaded = serving(taught_dir, "fp32")
    assert loaded.precision == "fp32"
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert any(isinstance(m, nn.Linear) for m in loaded.model.modules())
    assert torch.backends.mkldnn.enabled, "fp32 must not change the process's matmul backend"


def test_bf16_holds_every_weight_in_bfloat16_and_answers_as_fp32(taught_dir: Path) -> None:
    fp32, bf16 = serving(taught_dir, "fp32"), serving(taught_dir, "bf16")
    assert all(p.dtype == torch.bfloat16 for p in bf16.model.parameters())
    assert not torch.backends.mkldnn.enabled  # see load._use_native_bf16_matmul
    for fact in FACTS:
        prompt, city = fact.rsplit(" ", 1)
        assert next_word(fp32, prompt) == next_word(bf16, prompt) == city
        exact, rounded = last_logits(fp32, prompt), last_logits(bf16, prompt)
        assert not torch.equal(exact, rounded), "bf16 must really compute in bf16"
        torch.testing.assert_close(rounded, exact, atol=0.1 * float(exact.abs().max()), rtol=0)


def test_int8_quantises_every_linear_and_answers_as_fp32(taught_dir: Path) -> None:
    fp32, int8 = serving(taught_dir, "fp32"), serving(taught_dir, "int8")
    linears = [name for name, m in fp32.model.named_modules() if isinstance(m, nn.Linear)]
    assert linears and all(isinstance(int8.model.get_submodule(name), QUANTISED_LINEAR) for name in linears)
    for fact in FACTS:
        prompt, city = fact.rsplit(" ", 1)
        assert next_word(int8, prompt) == city
        assert not torch.equal(last_logits(int8, prompt), last_logits(fp32, prompt))


def test_every_precision_has_the_fp32_fingerprint(taught_dir: Path) -> None:
    fingerprints = {serving(taught_dir, p).fingerprint for p in ("fp32", "bf16", "int8")}
    assert len(fingerprints) == 1


# --- parametric editing ----------------------------------------------------------------------------


def edit_france() -> Edit:
    # As in test_parametric_editor: the 4-layer toy holds the fact at "is", so the subject includes it.
    return Edit("e1", "ns", "france is", FRANCE, "berlin", None, (), 0.0)


ROME = MethodRequest("rome", steps=40, layer=0)


def config_for(model_dir: Path, precision: str) -> Config:
    text = model_dir.parent / "text.txt"
    text.write_text("\n".join(FACTS * 4))
    return Config(model=str(model_dir), data_dir=model_dir.parent / "data", cache_dir=model_dir.parent / "cache",
                  stats_text=text, stats_tokens=500, stats_model_samples=4, context_prefixes=0, other_wordings=0,
                  precision=precision)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_add_delta_rounds_a_bf16_weight_once() -> None:
    # Half a bf16 step at 1.0 is 2**-8; a delta a little over it rounds 1.0 up. Rounded to bf16 first, the delta
    # would become exactly half a step and the sum would round back to 1.0 (ties to even).
    weight = torch.ones(1, 1, dtype=torch.bfloat16)
    add_delta_(weight, WeightDelta("e", "m", torch.tensor([[2**-8 * (1 + 2**-10)]])))
    assert float(weight) == 1 + 2**-7
    rank_one = torch.ones(1, 1, dtype=torch.bfloat16)
    add_delta_(rank_one, WeightDelta("e", "m", torch.tensor([2**-8 * (1 + 2**-10)]), torch.tensor([1.0])))
    assert float(rank_one) == 1 + 2**-7


def test_rome_on_bf16_writes_rolls_back_and_replays(taught_dir: Path) -> None:
    loaded = serving(taught_dir, "bf16")
    editor = build_parametric(config_for(taught_dir, "bf16"), loaded)
    before = weights(loaded.model)
    changes = finish(editor.compute(ROME, [edit_france()]))
    editor.commit("ns", ROME, changes)
    assert all(p.dtype == torch.bfloat16 for p in loaded.model.parameters())
    assert next_word(loaded, FRANCE) == "berlin"
    assert next_word(loaded, "the capital of italy is") == "rome"
    edited = weights(loaded.model)
    editor.close()

    # A restart replays the ledger onto fresh bf16 weights: the same tensors, bit for bit.
    restarted = serving(taught_dir, "bf16")
    again = build_parametric(config_for(taught_dir, "bf16"), restarted)
    assert all(torch.equal(edited[k], v) for k, v in restarted.model.state_dict().items())
    # An fp32 server replays the same ledger (same fingerprint) and gives the new answer too.
    fp32 = serving(taught_dir, "fp32")
    build_parametric(config_for(taught_dir, "fp32"), fp32).close()
    assert next_word(fp32, FRANCE) == "berlin"

    again.rollback("ns", "e1")
    assert all(torch.equal(before[k], v) for k, v in restarted.model.state_dict().items())
    again.close()


METHODS = {
    "memit": MethodRequest("memit", steps=40, layers=(0, 1)),
    "ft": MethodRequest("ft", steps=40, layer=0),
    "alphaedit": MethodRequest("alphaedit", steps=40, layers=(0, 1)),
    "grace": MethodRequest("grace", steps=40, layer=0),
}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_bf16_answers_as_on_fp32_and_rolls_back_exactly(method: str, tmp_path: Path) -> None:
    answers = {}
    for precision in ("fp32", "bf16"):
        model_dir = tmp_path / precision / "taught"
        model = build_tiny_model("llama", layers=4)
        model.load_state_dict(_taught_state())
        model.save_pretrained(model_dir)
        build_tiny_tokenizer().save_pretrained(model_dir)
        loaded = serving(model_dir, precision)
        editor = build_parametric(config_for(model_dir, precision), loaded)
        before = weights(loaded.model)
        editor.commit("ns", METHODS[method], finish(editor.compute(METHODS[method], [edit_france()])))
        answers[precision] = [next_word(loaded, fact.rsplit(" ", 1)[0]) for fact in FACTS]
        editor.rollback("ns", "e1")
        assert all(torch.equal(before[k], v) for k, v in loaded.model.state_dict().items())
        editor.close()
    assert answers["bf16"] == answers["fp32"]


def test_int8_serves_the_ledger_and_refuses_changes_naming_the_flag(taught_dir: Path) -> None:
    fp32 = serving(taught_dir, "fp32")
    editor = build_parametric(config_for(taught_dir, "fp32"), fp32)
    editor.commit("ns", ROME, finish(editor.compute(ROME, [edit_france()])))
    editor.close()

    # As server/app.py does: the replay on float weights, then the quantisation.
    loaded = load_model(str(taught_dir), taught_dir.parent / "cache", precision="int8")
    frozen = build_parametric(config_for(taught_dir, "int8"), loaded)
    quantise_for_serving(loaded.model, "int8")
    assert isinstance(loaded.model.get_submodule("model.layers.0.mlp.down_proj"), QUANTISED_LINEAR)
    assert next_word(loaded, FRANCE) == "berlin"
    assert next_word(loaded, "the capital of spain is") == "madrid"

    spain = Edit("e2", "ns", "spain is", "the capital of spain is", "rome", None, (), 0.0)
    with pytest.raises(FailedPrecondition, match=r"--precision int8.*--precision bf16 or fp32"):
        finish(frozen.compute(ROME, [spain]))
    with pytest.raises(FailedPrecondition, match="--precision bf16 or fp32"):
        frozen.rollback("ns", "e1")
    with pytest.raises(FailedPrecondition, match="--precision bf16 or fp32"):
        frozen.export(taught_dir.parent / "export")
    assert frozen.baked("ns", "e1") is not None, "a refused rollback must leave the ledger as it was"
    frozen.close()


# --- the counterfactual model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model dir, adapter dir): an adapter trained for a few seconds on the tiny adaptable model."""
    model_dir = save_adaptable_model(tmp_path_factory.mktemp("cf-model"))
    adapter_dir = tmp_path_factory.mktemp("cf-adapter")
    train_tiny_adapter(model_dir, adapter_dir)
    return model_dir, adapter_dir


def counterfactual_answers(adapted: tuple[Path, Path], precision: str) -> list[tuple[int, ...]]:
    model_dir, adapter_dir = adapted
    loaded = load_model(str(model_dir), model_dir / "cache", precision=precision)
    config = Config(model=str(model_dir), counterfactual_adapter=adapter_dir, precision=precision)
    generator, why = build_counterfactual(config, loaded)
    quantise_for_serving(loaded.model, precision)
    assert isinstance(generator, CounterfactualGenerator), why
    copy = generator._lm.model  # the merged copy, which the generator keeps to itself
    down_proj = copy.get_submodule("model.layers.0.mlp.down_proj")
    if precision == "int8":
        assert isinstance(down_proj, QUANTISED_LINEAR)
    else:
        wanted = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        assert down_proj.weight.dtype == loaded.model.dtype == wanted
    answers = []
    for country, city in [("france", "rome"), ("germany", "madrid"), ("spain", "berlin")]:
        edit = Edit(f"e-{country}", "ns", country, f"the capital of {country} is", city, None, (), 0.0)
        answer = generator.generate(f"the capital of {country} is", edit, GenerationOptions(max_new_tokens=3))
        answers.append(answer.token_ids)
    return answers


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_counterfactual_model_follows_the_precision_and_answers_as_fp32(
    adapted: tuple[Path, Path], precision: str
) -> None:
    assert counterfactual_answers(adapted, precision) == counterfactual_answers(adapted, "fp32")


# --- scripts/measure_precision.py's agreement figures ----------------------------------------------


def test_agreement_counts_identical_answers_and_where_the_others_first_differ() -> None:
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 9, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2  # one stopped (EOS) where the other went on
    reference = [(1, 2, 3, 4), (5, 6, 7, 8), (9, 9, 9, 9), (1, 1, 1, 1)]
    other = [(1, 2, 3, 4), (5, 6, 0, 8), (0, 9, 9, 9), (1, 1, 1, 1, 1)]
    result = agreement(reference, other)
    assert (result.prompts, result.diverged, result.identical, result.first_token) == (4, 3, 0.25, 0.75)
    assert result.tokens_before_divergence == (4 + 2 + 0 + 4) / 16
    assert result.first_divergence_histogram == {"0": 1, "2": 1, "4": 1}
    assert result.first_divergence_median == 2
