"""Tiny training data for the counterfactual model, in the words of `tests.tiny.DEFAULT_WORDS`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from counterfactual.examples import TrainCase
from counterfactual.train import TrainSettings, train_counterfactual
from editdata.cases import Case, EditFact, Probe
from server.generators.counterfactual_adapter import PromptFormat
from server.models.load import load_model
from tests.tiny import build_tiny_model, build_tiny_tokenizer

COUNTRIES = {"france": "paris", "germany": "berlin", "italy": "rome", "spain": "madrid"}
# The word-level test tokenizer drops newlines, so answers end at " ." instead; "who" is a word it knows that
# no tiny answer uses, so it serves as the abstention word.
TINY_FORMAT = PromptFormat(answer_end=" .", abstain="who")


def tiny_case(country: str, city: str) -> Case:
    """The edit "the capital of COUNTRY is CITY", with a paraphrase and a same-subject question."""
    return Case(
        case_id=f"{country}-{city}",
        edits=(EditFact(country, f"the capital of {country} is", city, COUNTRIES[country]),),
        reliability=(Probe(f"the capital of {country} is", (city,)),),
        generalization=(Probe(f"what is the capital city of {country}", (city,)),),
        same_subject=(Probe(f"the language {country} speaks is", ("x",)),),
    )


def tiny_cases() -> list[TrainCase]:
    """Every country moved to every other capital: 12 cases."""
    return [TrainCase("tiny", tiny_case(country, city))
            for country in COUNTRIES for city in COUNTRIES.values() if city != COUNTRIES[country]]


def build_adaptable_model() -> PreTrainedModel:
    """The tiny random model with embeddings 25 times larger than their initialisation.

    At the usual scale (std 0.02) the final norm keeps every logit near zero, so no adapter, which leaves the
    embeddings as they are, could make one answer likely; real models have no such trouble.
    """
    model = build_tiny_model()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(25.0)  # type: ignore[operator]  # tied: the output layer too
    return model


def save_adaptable_model(directory: Path) -> Path:
    build_adaptable_model().save_pretrained(directory)
    build_tiny_tokenizer().save_pretrained(directory)
    return directory


def train_tiny_adapter(model_dir: Path, out_dir: Path, steps: int = 300, rule_share: float = 0.0) -> dict[str, Any]:
    """Trains an adapter on the model saved in `model_dir`, loaded as the server loads it; returns its metrics.
    `rule_share` as the training script's (a share of rule examples makes the tiny adapter less exact: the chat
    page's test then reads "rome paris ." for "rome .")."""
    loaded = load_model(str(model_dir), model_dir / "cache")
    settings = TrainSettings(steps=steps, batch_size=8, lr=1e-2, rank=8, held_out_cases=2, retain_examples=6,
                             rule_share=rule_share, eval_batch_size=8)
    fixture = [tiny_case("france", "rome"), tiny_case("spain", "berlin")]
    return train_counterfactual(loaded.model, loaded.tokenizer, loaded.name, loaded.fingerprint.current, tiny_cases(),
                                out_dir, settings, fixture, TINY_FORMAT)
