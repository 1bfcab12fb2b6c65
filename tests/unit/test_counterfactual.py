"""The counterfactual model: its training examples, training a LoRA adapter, loading it, answering through it."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from counterfactual.examples import Example, edit_examples, load_train_cases, retain_queries, split_cases
from counterfactual.train import TrainSettings, collate, encode, fixture_scores, start_adapter
from editdata.readers import load_cases
from server.app import build_counterfactual
from server.config import Config
from server.generators.counterfactual import CounterfactualGenerator, answer_confidence
from server.generators.counterfactual_adapter import (
    MANIFEST_FILE,
    METRICS_FILE,
    AdapterMismatch,
    PromptFormat,
    load_adapted_model,
    read_manifest,
    restamp_manifest,
)
from server.generators.decoding import CausalLM
from server.models.load import LoadedModel, load_model
from server.types import FinishReason, GenerationOptions
from tests.tiny_counterfactual import TINY_FORMAT, save_adaptable_model, tiny_case, train_tiny_adapter
from tests.unit.fakes import make_edit

FIXTURES = Path(__file__).parents[1] / "fixtures" / "eval"


# --- examples ------------------------------------------------------------------------------------


def test_counterfact_case_gives_copy_paraphrase_and_a_neighbour_to_retain() -> None:
    case = load_cases(FIXTURES / "counterfact_flat.json")[1][0]
    examples = edit_examples(case)
    assert [(e.kind, e.query, e.answer) for e in examples] == [
        ("copy", "BBC One, by", "Sega"),
        ("paraphrase", "BBC One is my favorite product out of everything owned by", "Sega"),
    ]
    assert all((e.edit_prompt, e.target_new) == ("BBC One, by", "Sega") for e in examples)
    assert [(e.kind, e.query, e.answer) for e in retain_queries(case)] == [("retain", "BBC Radio, by", "")]


def test_knowedit_case_gives_portability_and_same_subject_queries_but_not_forgetfulness() -> None:
    case = load_cases(FIXTURES / "knowedit.json")[1][0]
    portability = {(e.query, e.answer) for e in edit_examples(case) if e.kind == "portability"}
    assert ("The name of the country which Gorsedd of Brittany is associated with is", "Franche-Comté") in portability
    reasoning = "The name of the capital city of the country Goursez Vreizh is associated with is"
    assert (reasoning, "Besançon") in portability
    retain = [e.query for e in retain_queries(case)]
    assert "The name of the founder of Goursez Vreizh is" in retain
    assert not any("which is not" in q for q in retain)


def test_zsre_natural_questions_are_not_retain_queries() -> None:
    case = load_cases(FIXTURES / "zsre_mend.json")[1][0]
    assert {e.kind for e in edit_examples(case)} >= {"copy", "paraphrase"}
    assert retain_queries(case) == []


@pytest.mark.parametrize("name", ["counterfact/val.json", "zsre/dev.json", "zsre/inverse-dev.json"])
def test_validation_and_dev_files_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="train files only"):
        load_train_cases(tmp_path, [name])


def test_held_out_cases_are_disjoint_from_training_and_reproducible(tmp_path: Path) -> None:
    (tmp_path / "cf").mkdir()
    (tmp_path / "cf" / "train.json").write_text((FIXTURES / "counterfact_flat.json").read_text())
    cases = load_train_cases(tmp_path, ["cf/train.json"])
    train, held = split_cases(cases, 1, seed=3)
    assert len(held) == 1 and len(train) == len(cases) - 1
    assert held[0].case.case_id not in {c.case.case_id for c in train}
    assert split_cases(cases, 1, seed=3) == (train, held)


# --- formatting and batching -----------------------------------------------------------------------


def test_prompt_states_the_edit_then_asks_and_the_answer_ends_with_the_marker() -> None:
    fmt = PromptFormat()
    assert fmt.render("The Space Needle is in ", "Taipei ", " Where is the Space Needle? ") == (
        "Fact: The Space Needle is in Taipei.\nQ: Where is the Space Needle?\nA:"
    )
    assert fmt.continuation(" Taipei") == " Taipei\n"


def test_collate_pads_on_the_left_and_labels_only_the_answer() -> None:
    from tests.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    short = encode(Example("copy", "the capital of france is", "rome", "the capital of france is", "rome"),
                   TINY_FORMAT, tokenizer)
    long = encode(Example("copy", "the capital of france is", "rome", "what is the capital city of france", "rome"),
                  TINY_FORMAT, tokenizer)
    batch = collate([short, long], pad_id=0)
    n = len(short.prompt_ids) + len(short.answer_ids)
    width = len(long.prompt_ids) + len(long.answer_ids)
    assert batch["input_ids"].shape == (2, width) and batch["labels"].shape == (2, len(long.answer_ids))
    assert batch["input_ids"][0, width - n:].tolist() == short.prompt_ids + short.answer_ids
    assert batch["attention_mask"][0].tolist() == [0] * (width - n) + [1] * n
    assert batch["position_ids"][0, width - n:].tolist() == list(range(n))  # real tokens start at position 0
    assert batch["labels"][0].tolist() == short.answer_ids and batch["labels"][1].tolist() == long.answer_ids


def test_confidence_is_the_mean_probability_of_the_answer_tokens_before_the_end() -> None:
    assert answer_confidence([0.9, 0.5, 0.4], [False, False, True]) == pytest.approx(0.7)
    assert answer_confidence([0.9, 0.2, 0.1], [False, False, False]) == pytest.approx(0.4)
    assert answer_confidence([0.99], [True]) == 0.0  # an empty answer


# --- training, loading, answering ------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from more threads, and on busy shared cores two threads spin for ages."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """(model dir, adapter dir, metrics) of an adapter trained for a few seconds on the tiny model."""
    model_dir = save_adaptable_model(tmp_path_factory.mktemp("cf-model"))
    adapter_dir = tmp_path_factory.mktemp("cf-adapter")
    return model_dir, adapter_dir, train_tiny_adapter(model_dir, adapter_dir, rule_share=0.25)


@pytest.fixture
def fresh(trained: tuple[Path, Path, dict[str, Any]]) -> LoadedModel:
    return load_model(str(trained[0]), trained[0] / "cache")


def adapted_generator(adapter_dir: Path, fresh: LoadedModel) -> tuple[CounterfactualGenerator, PromptFormat]:
    """The counterfactual generator over `fresh` with the adapter merged in, and the adapter's prompt format."""
    merged, manifest = load_adapted_model(fresh.model, adapter_dir, fresh.fingerprint.current)
    return CounterfactualGenerator(CausalLM(merged, fresh.tokenizer), manifest.prompt), manifest.prompt


def test_training_lowers_the_loss_and_learns_to_answer_held_out_edits(trained: tuple[Path, Path, dict]) -> None:
    _, _, metrics = trained
    assert metrics["loss_last"] < metrics["loss_first"] / 4
    before, after = metrics["held_out_before"], metrics["held_out_after"]
    assert after["em_copy"] > before["em_copy"] and after["em_paraphrase"] > before["em_paraphrase"]
    # a quarter of the examples show their edit as a patch's rule; held-out probes are measured in both forms
    assert set(metrics["examples"]) == {"copy", "paraphrase", "retain", "rule_copy", "rule_paraphrase", "rule_retain"}
    assert after["n_rule_copy"] == after["n_copy"] and after["n_rule_retain"] == after["n_retain"]
    assert metrics["held_out_split"].startswith("cases of the train files")


def test_training_continues_from_an_adapter_of_the_same_model_only(
    trained: tuple[Path, Path, dict], fresh: LoadedModel
) -> None:
    _, adapter_dir, metrics = trained
    settings = TrainSettings(init_adapter=str(adapter_dir))
    with pytest.raises(ValueError, match="was trained on"):
        start_adapter(fresh.model, settings, "another-model-fingerprint")
    continued = start_adapter(fresh.model, settings, fresh.fingerprint.current)
    assert any(p.requires_grad for p in continued.parameters())
    fixture = [tiny_case("france", "rome"), tiny_case("spain", "berlin")]
    assert fixture_scores(CausalLM(continued, fresh.tokenizer), TINY_FORMAT, fixture) == pytest.approx(  # type: ignore[arg-type]
        metrics["fixture_scores"], abs=1e-3
    )


def test_artifact_is_an_adapter_with_its_model_and_format(trained: tuple[Path, Path, dict], fresh: LoadedModel) -> None:
    _, adapter_dir, metrics = trained
    assert {"adapter_config.json", "adapter_model.safetensors", MANIFEST_FILE, METRICS_FILE} <= {
        p.name for p in adapter_dir.iterdir()
    }
    manifest = read_manifest(adapter_dir)
    assert manifest.model_fingerprint == fresh.fingerprint.current == metrics["model_fingerprint"]
    assert manifest.prompt == TINY_FORMAT
    assert json.loads((adapter_dir / METRICS_FILE).read_text())["fixture_scores"] == metrics["fixture_scores"]


def test_loaded_adapter_reproduces_training_scores_and_leaves_the_base_model_alone(
    trained: tuple[Path, Path, dict], fresh: LoadedModel
) -> None:
    _, adapter_dir, metrics = trained
    fixture = [tiny_case("france", "rome"), tiny_case("spain", "berlin")]
    base_before = fixture_scores(CausalLM(fresh.model, fresh.tokenizer), TINY_FORMAT, fixture)
    weights_before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    merged, manifest = load_adapted_model(fresh.model, adapter_dir, fresh.fingerprint.current)

    assert fixture_scores(CausalLM(merged, fresh.tokenizer), manifest.prompt, fixture) == pytest.approx(
        metrics["fixture_scores"], abs=1e-3
    )
    assert fixture_scores(CausalLM(fresh.model, fresh.tokenizer), TINY_FORMAT, fixture) == base_before
    for name, tensor in fresh.model.state_dict().items():
        assert torch.equal(tensor, weights_before[name]), name
    # The copy shares the (large, untouched) embeddings and owns the rest.
    assert merged.get_input_embeddings().weight is fresh.model.get_input_embeddings().weight
    assert merged.get_output_embeddings().weight is fresh.model.get_output_embeddings().weight
    assert all(p is not q for (n, p), (_, q) in zip(merged.named_parameters(), fresh.model.named_parameters(),
                                                       strict=True) if "embed" not in n)


def test_generator_answers_from_the_edit_through_the_adapter(
    trained: tuple[Path, Path, dict], fresh: LoadedModel
) -> None:
    _, adapter_dir, _ = trained
    generator, prompt = adapted_generator(adapter_dir, fresh)
    base = CounterfactualGenerator(CausalLM(fresh.model, fresh.tokenizer), prompt)  # same prompt, no adapter
    options = GenerationOptions(max_new_tokens=6)
    answered, base_answered = 0, 0
    for country, city in [("france", "rome"), ("germany", "madrid"), ("italy", "paris"), ("spain", "berlin")]:
        edit = make_edit(prompt=f"the capital of {country} is", target_new=city, subject=country)
        for query in (edit.prompt, f"what is the capital city of {country}"):
            generation = generator.generate(query, edit, options)
            base_answered += base.generate(query, edit, options).text.split()[:1] == [city]
            if generation.text.split()[:1] == [city]:
                answered += 1
                assert generation.finish_reason is FinishReason.STOP and generation.text.endswith(".")
                judgement = generator.judge(edit, query, with_confidence=True)
                assert judgement.confidence > 0.5 and not judgement.abstains
    assert answered >= 6 and base_answered <= 2  # of 8
    edit = make_edit(prompt="the capital of france is", target_new="rome", subject="france")
    assert generator.score(edit.prompt, edit, " rome").target_logprobs[0] > base.score(
        edit.prompt, edit, " rome").target_logprobs[0]


def test_an_answer_reads_the_prompt_cache_its_judgement_left_and_answers_the_same(
    trained: tuple[Path, Path, dict], fresh: LoadedModel
) -> None:
    _, adapter_dir, _ = trained
    generator, prompt = adapted_generator(adapter_dir, fresh)
    edit = make_edit(prompt="the capital of france is", target_new="rome", subject="france")
    options = GenerationOptions(max_new_tokens=6)
    for query in (edit.prompt, "what is the capital city of france"):
        plain = generator.generate(query, edit, options)  # no judgement before it: reads the whole prompt
        generator.judge(edit, query, with_confidence=True)
        assert generator.generate(query, edit, options).token_ids == plain.token_ids
        assert generator.prefill(edit, query) is None  # the answer took the judgement's cache
    generator.judge(edit, "where is france")
    cache = generator.prefill(edit, "where is france")
    prompt_ids = fresh.tokenizer(generator.prompt_for(edit, "where is france"))["input_ids"]
    assert cache is not None and cache.get_seq_length() == len(prompt_ids) - 1


def test_generator_abstains_on_another_relation_of_the_subject(
    trained: tuple[Path, Path, dict], fresh: LoadedModel
) -> None:
    _, adapter_dir, metrics = trained
    assert metrics["held_out_after"]["em_retain"] > metrics["held_out_before"]["em_retain"]
    generator, prompt = adapted_generator(adapter_dir, fresh)
    base = CounterfactualGenerator(CausalLM(fresh.model, fresh.tokenizer), prompt)
    edits = [make_edit(prompt=f"the capital of {c} is", target_new="rome", subject=c) for c in ("germany", "spain")]
    assert all(generator.judge(e, f"the language {e.subject} speaks is").abstains for e in edits)
    assert not any(base.judge(e, f"the language {e.subject} speaks is").abstains for e in edits)
    assert not any(generator.judge(e, e.prompt).abstains for e in edits)


def test_adapter_of_another_model_is_refused(trained: tuple[Path, Path, dict], fresh: LoadedModel,
                                             tmp_path: Path) -> None:
    _, adapter_dir, _ = trained
    with pytest.raises(AdapterMismatch, match=f"trained on {fresh.fingerprint.current}.*served model is other-model-1"):
        load_adapted_model(fresh.model, adapter_dir, "other-model-1")
    with pytest.raises(AdapterMismatch, match="not a counterfactual adapter"):
        load_adapted_model(fresh.model, tmp_path, fresh.fingerprint.current)


def _foreign_adapter(adapter_dir: Path, tmp_path: Path) -> Path:
    """A copy of the adapter whose manifest names other weights."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for path in adapter_dir.iterdir():
        (foreign / path.name).write_bytes(path.read_bytes())
    meta = json.loads((foreign / MANIFEST_FILE).read_text())
    (foreign / MANIFEST_FILE).write_text(json.dumps({**meta, "model_fingerprint": "gemma-3-270m-000000000000"}))
    return foreign


def test_server_refuses_a_configured_adapter_of_another_model(
    trained: tuple[Path, Path, dict], fresh: LoadedModel, tmp_path: Path
) -> None:
    _, adapter_dir, _ = trained
    config = Config(model=str(trained[0]), counterfactual_adapter=_foreign_adapter(adapter_dir, tmp_path))
    with pytest.raises(AdapterMismatch, match="gemma-3-270m-000000000000"):
        build_counterfactual(config, fresh)
    with pytest.raises(ValueError, match="does not exist"):
        build_counterfactual(replace(config, counterfactual_adapter=tmp_path / "missing"), fresh)
    generator, off = build_counterfactual(replace(config, counterfactual_adapter=adapter_dir), fresh)
    assert isinstance(generator, CounterfactualGenerator) and off is None


def test_server_skips_a_default_adapter_of_another_model_with_a_warning(
    trained: tuple[Path, Path, dict], fresh: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    foreign = _foreign_adapter(trained[1], tmp_path)
    monkeypatch.setattr("server.app.default_adapter_dir", lambda name: foreign)
    with caplog.at_level(logging.WARNING, logger="server.app"):
        generator, off = build_counterfactual(Config(model=str(trained[0])), fresh)
    assert generator is None and off is not None and "gemma-3-270m-000000000000" in off
    assert "counterfactual route off" in caplog.text and "gemma-3-270m-000000000000" in caplog.text
    monkeypatch.setattr("server.app.default_adapter_dir", lambda name: tmp_path / "nothing-here")
    generator, off = build_counterfactual(Config(model=str(trained[0])), fresh)
    assert generator is None and off is not None and "no adapter" in off and "nothing-here" in off


def test_an_adapter_stamped_with_the_old_fingerprint_scheme_loads_and_can_be_restamped(
    trained: tuple[Path, Path, dict], fresh: LoadedModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "old-scheme"
    shutil.copytree(trained[1], old)
    meta = json.loads((old / MANIFEST_FILE).read_text())
    (old / MANIFEST_FILE).write_text(json.dumps({**meta, "model_fingerprint": fresh.fingerprint.legacy}))

    with caplog.at_level(logging.WARNING, logger="server.generators.counterfactual_adapter"):
        load_adapted_model(fresh.model, old, fresh.fingerprint.current, fresh.fingerprint.legacy)
    assert "old fingerprint" in caplog.text and "--restamp" in caplog.text
    with pytest.raises(AdapterMismatch):  # without the old name to compare with, it is other weights
        load_adapted_model(fresh.model, old, fresh.fingerprint.current)

    restamp_manifest(old, fresh.fingerprint.current, fresh.fingerprint.legacy)
    assert read_manifest(old).model_fingerprint == fresh.fingerprint.current
    load_adapted_model(fresh.model, old, fresh.fingerprint.current)
    with pytest.raises(AdapterMismatch, match="retrain"):
        restamp_manifest(_foreign_adapter(trained[1], tmp_path), fresh.fingerprint.current, fresh.fingerprint.legacy)
