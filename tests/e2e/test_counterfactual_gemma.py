"""The shipped counterfactual adapter for Gemma-3-270M, loaded as the server loads it, reproduces its training scores
and abstains on the neighbourhood prompts of a small CounterFact fixture, but not on their edited and rephrased prompts.

Skipped until scripts/train_counterfactual.py has written artifacts/counterfactual/gemma-3-270m/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from counterfactual.train import fixture_scores
from editdata.readers import load_cases
from server.config import default_cache_dir
from server.generators.counterfactual import CounterfactualGenerator
from server.generators.counterfactual_adapter import METRICS_FILE, default_adapter_dir, load_adapted_model
from server.generators.decoding import CausalLM
from server.models.load import load_model
from server.types import Edit

pytestmark = pytest.mark.real_model

ADAPTER = default_adapter_dir("gemma-3-270m")
FIXTURE = Path(__file__).parents[1] / "fixtures" / "eval" / "counterfact_flat.json"


@pytest.mark.skipif(not (ADAPTER / METRICS_FILE).exists(), reason=f"no trained adapter at {ADAPTER}")
def test_shipped_adapter_reproduces_its_recorded_fixture_scores() -> None:
    loaded = load_model("gemma-3-270m", default_cache_dir())
    metrics = json.loads((ADAPTER / METRICS_FILE).read_text())
    merged, manifest = load_adapted_model(loaded.model, ADAPTER, loaded.fingerprint.current)
    scores = fixture_scores(CausalLM(merged, loaded.tokenizer), manifest.prompt, load_cases(FIXTURE)[1])
    assert scores == pytest.approx(metrics["fixture_scores"], abs=1e-3)
    after = metrics["held_out_after"]
    assert after["em_copy"] >= metrics["held_out_before"]["em_copy"]
    assert after["em_paraphrase"] > metrics["held_out_before"]["em_paraphrase"]
    assert after["em_retain"] > metrics["held_out_before"]["em_retain"]

    generator = CounterfactualGenerator(CausalLM(merged, loaded.tokenizer), manifest.prompt)
    for case in load_cases(FIXTURE)[1]:
        (fact,) = case.edits
        edit = Edit("0" * 32, "e2e", fact.subject, fact.prompt, fact.target_new, fact.target_true, (), 0.0)
        assert not any(generator.judge(edit, p.prompt).abstains for p in (*case.reliability, *case.generalization))
        assert all(generator.judge(edit, p.prompt).abstains for p in case.locality), case.case_id
