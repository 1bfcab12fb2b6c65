"""The shipped MEND editor for Gemma-3-270M, loaded as the server loads it, reproduces the teacher-forced scores that
scripts/train_mend.py recorded on a small CounterFact fixture, and is found for the served model's fingerprint.

Skipped until scripts/train_mend.py has written artifacts/mend/gemma-3-270m/.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from server.config import default_cache_dir
from server.models.load import load_model
from server.parametric.mend import DEFAULT_DIR, find_artifact, load_artifact, teacher_forced_scores, training_example

pytestmark = pytest.mark.real_model

ARTIFACT = DEFAULT_DIR / "gemma-3-270m"
FIXTURE = Path(__file__).parents[1] / "fixtures" / "eval" / "counterfact_flat.json"


@pytest.mark.skipif(not (ARTIFACT / "metrics.json").exists(), reason=f"no trained editor at {ARTIFACT}")
def test_shipped_editor_reproduces_its_recorded_fixture_scores() -> None:
    loaded = load_model("gemma-3-270m", default_cache_dir())
    assert find_artifact(DEFAULT_DIR, loaded.fingerprint.current) == ARTIFACT
    network = load_artifact(ARTIFACT)
    recorded = json.loads((ARTIFACT / "metrics.json").read_text())["fixture_scores"]
    records = json.loads(FIXTURE.read_text())
    assert len(recorded) == len(records)
    for record, expected in zip(records, recorded, strict=True):
        example = training_example(loaded.tokenizer, record["prompt"], record["target_new"],
                                   [record["rephrase_prompt"]],
                                   [(record["locality_prompt"], record["locality_ground_truth"])])
        scores = teacher_forced_scores(loaded.model, loaded.arch, network, example)
        for key, value in expected.items():
            assert math.isclose(scores[key], value, abs_tol=1e-6), (record["case_id"], key, scores[key], value)
