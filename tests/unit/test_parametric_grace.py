"""GRACE: the codebook's maths, and the method through the ParametricEditor on tiny models that know four facts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.errors import FailedPrecondition, InvalidArgument
from server.parametric.additions import Act, Addition
from server.parametric.editor import MethodRequest, ParametricEditor
from server.parametric.grace import Codebook, deferral_radii, lookup
from server.parametric.targets import finish
from tests.unit.test_parametric_editor import answer, assert_same, edit, make_editor, weights

UNRELATED = ("the capital of italy is", "the capital of spain is", "the capital of germany is")


def test_entries_with_other_answers_split_their_radii_and_entries_with_the_same_answer_keep_theirs() -> None:
    keys = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 10.0], [0.0, 12.0]])
    radii = deferral_radii(keys, torch.full((4,), 2.0), [(1,), (2,), (3,), (3,)])
    # 1 is 3 from 0 (within 2 + 2), another answer: both get 1.5; 3 is 2 from 2, the same answer: both keep 2.
    assert radii.tolist() == [1.5, 1.5, 2.0, 2.0]
    # Far apart: nothing changes.
    assert deferral_radii(keys[:2], torch.full((2,), 1.0), [(1,), (2,)]).tolist() == [1.0, 1.0]


def test_a_query_takes_its_nearest_entry_within_its_radius_and_the_newer_one_on_a_tie() -> None:
    keys = torch.tensor([[0.0, 0.0], [4.0, 0.0], [4.0, 0.0]])
    nearest, hit = lookup(torch.tensor([[0.5, 0.0], [3.0, 0.0], [1.0, 5.0]]), keys, torch.tensor([1.0, 1.0, 1.0]))
    assert hit.tolist() == [True, True, False] and nearest[hit].tolist() == [0, 2]
    # the nearest entry decides, even where a farther one's radius would hold the query
    _, hit = lookup(torch.tensor([[2.5, 0.0]]), keys[:2], torch.tensor([3.0, 1.0]))
    assert hit.tolist() == [False]


def test_the_fast_lookup_decides_as_the_exact_distances_do_at_the_radius_itself() -> None:
    """Queries at, just inside and just outside an entry's radius, by the exact float32 distance, and far ones, among
    a thousand entries of Gemma's width: the lookup's decisions are those of the exact distances to every entry."""
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(1000, 2048, generator=generator) * 30
    radii = 0.1 * keys.norm(dim=1)
    directions = torch.randn(300, 2048, generator=generator)
    directions /= directions.norm(dim=1, keepdim=True)
    chosen = torch.randint(0, 1000, (300,), generator=generator)
    scale = torch.tensor([1 - 1e-6, 1.0, 1 + 1e-6] * 100)  # inside, on, outside the radius
    queries = torch.cat([keys[chosen] + directions * (radii[chosen] * scale)[:, None],
                         torch.randn(300, 2048, generator=generator) * 30])
    exact = torch.cdist(queries, keys, compute_mode="donot_use_mm_for_euclid_dist")  # (600, 1000)
    smallest, from_end = exact.flip(-1).min(-1)
    expected_nearest = 999 - from_end
    expected_hit = smallest <= radii[expected_nearest]
    nearest, hit = lookup(queries, keys, radii)
    assert torch.equal(hit, expected_hit) and torch.equal(nearest[hit], expected_nearest[expected_hit])
    assert 0 < int(expected_hit[:300].sum()) < 300  # the boundary cases fall on both sides


def test_the_conflict_rule_measured_only_where_radii_may_meet_splits_as_measuring_every_pair_does() -> None:
    """Keys in pairs at, just inside and just outside the sum of their radii, with the same answer or another, among
    far ones: the radii are those of the rule applied to every pair's exact distance."""
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(150, 512, generator=generator) * 30
    initial = 0.1 * base.norm(dim=1)
    directions = torch.randn(150, 512, generator=generator)
    directions /= directions.norm(dim=1, keepdim=True)
    scale = torch.tensor([1 - 1e-6, 1.0, 1 + 1e-6] * 50)
    partners = base + directions * (2 * initial * scale)[:, None]  # each base key's partner, about ε_i + ε_j away
    keys = torch.cat([base, partners])
    radii = torch.cat([initial, initial])
    labels = [(i % 7,) for i in range(150)] + [((i % 7) + (i % 2),) for i in range(150)]  # half share the answer
    expected = radii.clone()
    exact = torch.cdist(keys, keys, compute_mode="donot_use_mm_for_euclid_dist")
    for i in range(1, len(keys)):
        d, nearest = exact[i, :i].min(0)
        j = int(nearest)
        if d <= expected[i] + expected[j] and labels[i] != labels[j]:
            expected[j] = torch.minimum(expected[j], d / 2)
            expected[i] = torch.minimum(expected[i], d / 2)
    assert torch.equal(deferral_radii(keys, radii, labels), expected)
    assert 0 < int((expected < radii).sum()) < 300  # some split, some not


def test_the_codebook_replaces_only_the_outputs_whose_inputs_it_holds() -> None:
    entry = Addition("e1", "m", "grace", {"key": torch.tensor([1.0, 0.0]), "value": torch.tensor([7.0, 7.0, 7.0]),
                                          "radius": torch.tensor([0.5]), "label": torch.tensor([4])})
    codebook = Codebook.build([entry])
    inputs = torch.tensor([[[1.1, 0.0], [0.0, 1.0]]])  # (1, 2, d_in): the first position is within 0.5 of the key
    output = torch.zeros(1, 2, 3)
    changed, fired = codebook.forward(inputs, output)
    assert changed.tolist() == [[[7.0, 7.0, 7.0], [0.0, 0.0, 0.0]]] and fired == [Act(0, 0, "e1")]
    unchanged, fired = codebook.forward(inputs[:, 1:], output[:, 1:])
    assert unchanged is output[:, 1:] or torch.equal(unchanged, output[:, 1:])
    assert fired == []


def greedy(model: torch.nn.Module, tokenizer: object, prompt: str, tokens: int = 4) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt")  # type: ignore[operator]
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=tokens, do_sample=False)  # type: ignore[operator]
    return [int(t) for t in out[0, ids["input_ids"].shape[1]:]]


def logits(model: torch.nn.Module, tokenizer: object, prompts: tuple[str, ...]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [model(**tokenizer(p, return_tensors="pt")).logits for p in prompts]  # type: ignore[operator]


def attached(editor: ParametricEditor) -> list[tuple[str, str, dict[str, torch.Tensor]]]:
    return [(a.edit_id, a.module, dict(a.tensors)) for a in editor.additions]


# The tiny models hold their facts in layer 0 (a value at layer 1, the default a third of the way up, cannot flip
# them within the value's size bound), as for ROME (tests/unit/test_parametric_editor.py).
@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_grace_answers_the_edit_and_leaves_other_prompts_token_for_token(model_type: str, tmp_path: Path) -> None:
    editor, model, tokenizer = make_editor(model_type, tmp_path)
    original = weights(model)
    before = {p: greedy(model, tokenizer, p) for p in UNRELATED}
    request = MethodRequest("grace", steps=40, layer=0)
    (entry,) = finish(editor.compute(request, [edit("france", "berlin", "e1")]))
    assert isinstance(entry, Addition)
    assert entry.module in ("model.layers.0.mlp.down_proj", "transformer.h.0.mlp.c_proj")
    assert answer(model, tokenizer, "the capital of france is") == "paris", "compute must not change the model"
    editor.commit("ns", request, [entry])
    assert answer(model, tokenizer, "the capital of france is") == "berlin"
    assert {p: greedy(model, tokenizer, p) for p in UNRELATED} == before
    assert_same(weights(model), original)  # the weights never change: the codebook sits beside them
    baked = editor.baked("ns", "e1")
    assert baked is not None and baked.method == "grace" and baked.modules == (entry.module,)


def test_restart_rebuilds_an_equal_codebook_and_rollback_removes_exactly_one_entry(tmp_path: Path) -> None:
    # A radius wide enough that the two keys conflict: GRACE's rule splits them, each answers its own prompt, and
    # rolling e2 back gives exactly the model with e1 alone (e1's radius no longer split).
    request = MethodRequest("grace", steps=40, layer=0, deferral_radius=5.0)
    assert_restart_and_rollback_are_exact(tmp_path, request, "model.layers.0.mlp.down_proj")


def assert_restart_and_rollback_are_exact(tmp_path: Path, request: MethodRequest, hooked: str,
                                          targets: tuple[str, str] = ("berlin", "madrid")) -> None:
    """For a method that adds state beside a module (`hooked`): two edits (France's and Italy's capital, to
    `targets`) written one after the other on the tiny llama; a restart replays equal additions and logits; rolling
    back the second gives exactly the model with the first alone, rolling back both the unedited model with no hook
    left, and a third rollback is refused."""
    editor, model, tokenizer = make_editor("llama", tmp_path)
    prompts = ("the capital of france is", "the capital of italy is", "the capital of spain is")
    unedited = logits(model, tokenizer, prompts)
    editor.commit("ns", request, finish(editor.compute(request, [edit("france", targets[0], "e1")])))
    only_first = logits(model, tokenizer, prompts)
    editor.commit("ns", request, finish(editor.compute(request, [edit("italy", targets[1], "e2")])))
    assert answer(model, tokenizer, "the capital of france is") == targets[0].split()[0]
    assert answer(model, tokenizer, "the capital of italy is") == targets[1].split()[0]
    both, additions = logits(model, tokenizer, prompts), attached(editor)

    editor.close()  # a restart: the same original weights, the same ledger
    replayed, model2, _ = make_editor("llama", tmp_path)
    assert replayed.replay() == 2
    again = attached(replayed)
    assert [(e, m) for e, m, _ in again] == [(e, m) for e, m, _ in additions]
    for (_, _, tensors), (_, _, original_tensors) in zip(again, additions, strict=True):
        assert_same(tensors, original_tensors)
    assert all(torch.equal(a, b) for a, b in zip(logits(model2, tokenizer, prompts), both, strict=True))

    replayed.rollback("ns", "e2")
    assert [a.edit_id for a in replayed.additions] == ["e1"]
    assert all(torch.equal(a, b) for a, b in zip(logits(model2, tokenizer, prompts), only_first, strict=True))
    replayed.rollback("ns", "e1")
    assert replayed.additions == () and not model2.get_submodule(hooked)._forward_hooks
    assert all(torch.equal(a, b) for a, b in zip(logits(model2, tokenizer, prompts), unedited, strict=True))
    with pytest.raises(FailedPrecondition, match="not in the weights"):
        replayed.rollback("ns", "e1")


def test_the_editor_reports_which_entries_acted(tmp_path: Path) -> None:
    editor, model, tokenizer = make_editor("llama", tmp_path)
    request = MethodRequest("grace", steps=40, layer=0)
    editor.commit("ns", request, finish(editor.compute(request, [edit("france", "berlin", "e1")])))
    with editor.watching() as fired:
        greedy(model, tokenizer, "the capital of france is")
    assert fired.edit_ids() == {"e1"}
    with editor.watching() as fired:
        for prompt in UNRELATED:
            greedy(model, tokenizer, prompt)
    assert fired.edit_ids() == set()


def test_export_is_refused_while_entries_are_attached(tmp_path: Path) -> None:
    editor, _, _ = make_editor("llama", tmp_path)
    request = MethodRequest("grace", steps=5)
    editor.commit("ns", request, finish(editor.compute(request, [edit("france", "berlin", "e1")])))
    with pytest.raises(FailedPrecondition, match="roll them back to export"):
        editor.export(tmp_path / "export")


@pytest.mark.parametrize("radius", [0.0, -1.0, 11.0, float("nan")])
def test_a_radius_outside_its_range_is_refused_before_any_work(radius: float, tmp_path: Path) -> None:
    editor, _, _ = make_editor("llama", tmp_path)
    with pytest.raises(InvalidArgument, match="deferral_radius"):
        finish(editor.compute(MethodRequest("grace", deferral_radius=radius), [edit("france", "berlin", "e1")]))
