"""The subject-key part of ROME/MEMIT's second moment C."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from server.models.arch import arch_for
from server.parametric.prompts import build_batch
from server.parametric.stats import subject_moment, subject_prompts
from server.parametric.targets import finish, module_io
from tests.tiny import build_tiny_model, build_tiny_tokenizer


def test_subject_prompts_keep_records_whose_prompt_names_their_subject(tmp_path: Path) -> None:
    records = [
        {"prompt": "the capital of france is", "subject": "france"},
        {"prompt": "the capital of spain is", "subject": "italy"},  # subject not in the prompt
        {"prompt": "the capital of germany is"},  # no subject
        {"prompt": "the capital of italy is", "subject": "italy"},
    ]
    data = tmp_path / "records.json"
    data.write_text(json.dumps(records))
    text = tmp_path / "plain.txt"
    text.write_text("the capital of france is paris\n")
    pairs = subject_prompts([data, text], n=10)
    assert sorted(pairs) == [("the capital of france is", "france"), ("the capital of italy is", "italy")]
    assert len(subject_prompts([data], n=1)) == 1
    assert subject_prompts([data], n=10) == pairs, "the sample is reproducible"


def test_subject_moment_is_the_mean_outer_product_of_each_prompts_subject_key() -> None:
    # Prompts of different lengths and subject positions share a right-padded batch; each row's key
    # must be read at its own subject's last token, as if the prompt ran alone.
    torch.manual_seed(0)
    model, tokenizer = build_tiny_model("llama", layers=2), build_tiny_tokenizer()
    arch = arch_for(model.config)
    prompts = [("the capital of france is", "france"), ("spain is", "spain"), ("who speaks french in paris", "french")]
    module = model.get_submodule(arch.mlp_out.format(1))
    alone = torch.cat([module_io(model, module, build_batch(tokenizer, [p], s))[0] for p, s in prompts])  # (3, d_in)
    expected = alone.T @ alone / len(prompts)
    moment = finish(subject_moment(model, tokenizer, arch, 1, prompts, batch_size=2))
    torch.testing.assert_close(moment, expected, rtol=1e-4, atol=1e-6)
