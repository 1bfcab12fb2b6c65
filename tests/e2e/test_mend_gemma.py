"""The shipped MEND and KE editors for Gemma-3-270M, loaded as the server loads them, reproduce the teacher-forced
scores that scripts/train_mend.py recorded on a small CounterFact fixture, and are found for the served model's
fingerprint.

Each is skipped until scripts/train_mend.py has written artifacts/<method>/gemma-3-270m/.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from server.config import default_cache_dir
from server.models.load import load_model
from server.parametric.ke import Ke
from server.parametric.mend import (
    ARTIFACTS,
    Mend,
    find_artifact,
    load_artifact,
    teacher_forced_scores,
    training_example,
)

pytestmark = pytest.mark.real_model

FIXTURE = Path(__file__).parents[1] / "fixtures" / "eval" / "counterfact_flat.json"


@pytest.mark.parametrize("method", [Mend, Ke], ids=["mend", "ke"])
def test_shipped_editor_reproduces_its_recorded_fixture_scores(method: type[Mend]) -> None:
    root = ARTIFACTS / method.name
    artifact = root / "gemma-3-270m"
    if not (artifact / "metrics.json").exists():
        pytest.skip(f"no trained editor at {artifact}")
    loaded = load_model("gemma-3-270m", default_cache_dir())
    assert find_artifact(root, loaded.fingerprint.current) == artifact
    network = load_artifact(artifact, method.network_class)
    recorded = json.loads((artifact / "metrics.json").read_text())["fixture_scores"]
    records = json.loads(FIXTURE.read_text())
    assert len(recorded) == len(records)
    for record, expected in zip(records, recorded, strict=True):
        example = training_example(loaded.tokenizer, record["prompt"], record["target_new"],
                                   [record["rephrase_prompt"]],
                                   [(record["locality_prompt"], record["locality_ground_truth"])])
        scores = teacher_forced_scores(loaded.model, loaded.arch, network, example)
        for key, value in expected.items():
            assert math.isclose(scores[key], value, abs_tol=1e-6), (record["case_id"], key, scores[key], value)
