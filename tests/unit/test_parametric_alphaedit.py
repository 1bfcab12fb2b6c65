"""AlphaEdit: the null-space projection's maths, and the method through the ParametricEditor on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.errors import InvalidArgument
from server.parametric.alphaedit import (
    AlphaEdit,
    earlier_prompts,
    neighbour_prompts,
    null_space_projection,
    projected_update,
    without_directions,
)
from server.parametric.deltas import WeightDelta
from server.parametric.editor import METHODS, MethodRequest
from server.parametric.memory_subjects import SubjectTable
from server.parametric.prompts import build_batch
from server.parametric.tap import recording
from server.parametric.targets import finish, module_io
from server.types import Edit
from tests.tiny import FACTS
from tests.unit.test_parametric_editor import answer, assert_same, edit, make_editor, weights

PRESERVED = tuple(f for f in FACTS if "france" not in f)  # C's text: every fact but the edited one


def test_the_update_leaves_preserved_keys_in_place_and_writes_new_ones() -> None:
    torch.manual_seed(0)
    preserved = torch.randn(16, 5, dtype=torch.float64)  # (d_in, n0): C spans 5 of 16 directions
    edited = torch.randn(16, 2, dtype=torch.float64)  # (d_in, n1)
    wanted = torch.randn(8, 2, dtype=torch.float64)  # (d_out, n1)
    projection = null_space_projection(preserved @ preserved.T / 5, cutoff=1e-8)
    assert torch.allclose(projection @ preserved, torch.zeros_like(preserved), atol=1e-10)

    r, v = projected_update(projection, edited, wanted, ridge=1e-6)
    delta = r @ v.T  # (d_out, d_in)
    assert float((delta @ preserved).abs().max()) < 1e-8
    # With 11 free directions and a tiny ridge, the edited keys get (nearly) exactly what they want.
    assert torch.allclose(delta @ edited, wanted, atol=1e-4)


def preserved_keys(model: torch.nn.Module, tokenizer: object, module: str) -> torch.Tensor:
    """The module's inputs at every token of the preserved facts, (tokens, d_in)."""
    batch = tokenizer(list(PRESERVED), return_tensors="pt", padding=True)  # type: ignore[operator]
    with torch.no_grad(), recording(model.get_submodule(module)) as seen:
        model(**batch)
    assert seen.input is not None
    return seen.input[batch["attention_mask"].bool()]


def test_alphaedit_writes_the_edit_and_keeps_the_preserved_keys_still(tmp_path: Path) -> None:
    editor, model, tokenizer = make_editor("llama", tmp_path, stats_text=PRESERVED, model_samples=0)
    original = weights(model)
    # The preserved keys' smallest real eigenvalue is about 5e-7 of the largest, float32 noise below 1e-8.
    request = MethodRequest("alphaedit", layers=(0, 1), steps=40, null_space_cutoff=1e-8)
    deltas = finish(editor.compute(request, [edit("france", "berlin", "e1")]))
    assert len(deltas) == 2 and all(isinstance(d, WeightDelta) and d.v is not None for d in deltas)  # rank-one
    for delta in deltas:
        assert isinstance(delta, WeightDelta) and delta.v is not None
        keys = preserved_keys(model, tokenizer, delta.module)  # on the unedited model, as C saw them
        moved = (keys @ delta.v).abs().max() * delta.u.norm()  # ‖ΔW k₀‖ bound, ΔW = u vᵀ
        assert float(moved) < 1e-4 * float(keys.norm(dim=-1).max() * delta.u.norm() * delta.v.norm())
    editor.commit("ns", request, deltas)
    assert answer(model, tokenizer, "the capital of france is") == "berlin"
    for fact in PRESERVED:
        prompt, city = fact.rsplit(" ", 1)
        assert answer(model, tokenizer, prompt) == city
    edited = weights(model)

    editor.close()
    replayed, model2, _ = make_editor("llama", tmp_path, stats_text=PRESERVED, model_samples=0)
    assert replayed.replay() == 2
    assert_same(weights(model2), edited)
    baked = replayed.baked("ns", "e1")
    assert baked is not None and baked.method == "alphaedit"
    replayed.rollback("ns", "e1")
    assert_same(weights(model2), original)


def test_a_cutoff_outside_0_1_is_refused_before_any_work(tmp_path: Path) -> None:
    editor, _, _ = make_editor("llama", tmp_path)
    with pytest.raises(InvalidArgument, match="null_space_cutoff"):
        finish(editor.compute(MethodRequest("alphaedit", null_space_cutoff=2.0), [edit("france", "berlin", "e1")]))


def test_removing_neighbour_directions_keeps_a_projector_that_zeroes_them() -> None:
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(12, 8, dtype=torch.float64))[0]  # (12, 8): P's range
    projection = basis @ basis.T
    neighbours = torch.randn(12, 3, dtype=torch.float64)
    narrowed = without_directions(projection, neighbours)
    assert torch.allclose(narrowed @ neighbours, torch.zeros(12, 3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(narrowed @ narrowed, narrowed, atol=1e-10) and torch.allclose(narrowed, narrowed.T)
    assert round(float(torch.trace(narrowed))) == 5  # 8 directions less the 3 neighbours'
    inside = basis @ torch.randn(8, dtype=torch.float64)  # a key in P's range, orthogonal to no neighbour
    assert float((narrowed @ inside).norm()) > 0.1 * float(inside.norm())
    outside = (torch.eye(12, dtype=torch.float64) - projection) @ torch.randn(12, 2, dtype=torch.float64)
    assert torch.allclose(without_directions(projection, outside), projection, atol=1e-12)  # nothing to remove


def test_each_edit_gets_its_neighbours_never_a_subject_the_batch_edits() -> None:
    table = SubjectTable({"the capital of {}": ("france is", "germany is", "italy is", "spain is")},
                         {"the capital of {}": {"germany is": "paris", "italy is": "rome", "spain is": "paris"}})
    one = Edit("e1", "ns", "france is", "the capital of france is", "berlin", "paris", (), 0.0)
    two = Edit("e2", "ns", "spain is", "the capital of spain is", "lisbon", "madrid", (), 0.0)
    # alone, the old answer's subjects come first
    assert [s for _, s in neighbour_prompts([one], table, 2)] in (["germany is", "spain is"],
                                                                  ["spain is", "germany is"])
    assert neighbour_prompts([one], table, 1)[0] in (("the capital of germany is", "germany is"),
                                                     ("the capital of spain is", "spain is"))
    # together, neither edit's subject is the other's neighbour, and each still gets its count
    both = neighbour_prompts([one, two], table, 2)
    assert len(both) == 4 and {s for _, s in both} <= {"germany is", "italy is"}


def test_the_neighbours_keys_stay_still_where_c_does_not_hold_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # C sees spain's fact only; germany and italy, asked the edit's question, are its neighbours (T-Patcher's
    # table), so only the neighbour keys keep them from the update.
    table = SubjectTable({"the capital of {}": ("germany is", "italy is")})
    moved = {}
    for count in (0, 2):
        monkeypatch.setitem(METHODS, "alphaedit", AlphaEdit(table, neighbour_subjects=count))
        (tmp_path / str(count)).mkdir()
        editor, model, tokenizer = make_editor("llama", tmp_path / str(count), stats_text=FACTS[3:],
                                               model_samples=0)
        request = MethodRequest("alphaedit", layers=(1,), steps=40, null_space_cutoff=1e-8)
        (delta,) = finish(editor.compute(request, [edit("france", "berlin", "e1")]))
        assert isinstance(delta, WeightDelta) and delta.v is not None
        module = model.get_submodule(delta.module)
        keys = torch.cat([module_io(model, module, build_batch(tokenizer, [f"the capital of {c} is"], f"{c} is"))[0]
                          for c in ("germany", "italy")]).T  # type: ignore[arg-type]  # (d_in, 2)
        moved[count] = float((delta.v @ keys).abs().max() / (delta.v.norm() * keys.norm(dim=0).max()))
        editor.commit("ns", request, [delta])
        assert answer(model, tokenizer, "the capital of france is") == "berlin"
        if count:
            assert answer(model, tokenizer, "the capital of germany is") == "berlin"
            assert answer(model, tokenizer, "the capital of italy is") == "rome"
        editor.close()
    assert moved[2] < 1e-6 < moved[0]


def test_earlier_edits_keys_are_held_except_a_subject_the_new_edits_change() -> None:
    earlier = [edit("france", "berlin", "e1"), edit("germany", "rome", "e2")]
    assert earlier_prompts(earlier, [edit("germany", "madrid", "e3")]) == [("the capital of france is", "france is")]
    assert earlier_prompts(earlier, [edit("italy", "paris", "e3")]) == [(e.prompt, e.subject) for e in earlier]


def test_held_keys_stay_nearly_still_while_the_edited_keys_are_written() -> None:
    torch.manual_seed(0)
    preserved = torch.randn(16, 5, dtype=torch.float64)  # (d_in, n0): C spans 5 of 16 directions
    projection = null_space_projection(preserved @ preserved.T / 5, cutoff=1e-8)
    edited, wanted = torch.randn(16, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    held = 30 * torch.randn(16, 3, dtype=torch.float64)  # (d_in, m): earlier edits' keys, ‖P k‖² ≫ the ridge
    r, v = projected_update(projection, edited, wanted, ridge=1e-6)
    r_held, v_held = projected_update(projection, edited, wanted, ridge=1e-6, held=held)
    assert float((r_held @ v_held.T @ held).norm()) < 1e-2 * float((r @ v.T @ held).norm())
    update = r_held @ v_held.T  # still in C's null space, to the solve's rounding:
    assert float((update @ preserved).norm()) < 1e-6 * float(update.norm() * preserved.norm())
    # 11 free directions less 3 held leave room to write both edits
    assert torch.allclose(r_held @ v_held.T @ edited, wanted, atol=1e-3)


def test_a_later_edit_keeps_clear_of_the_earlier_edits_keys(tmp_path: Path) -> None:
    # C sees italy's and spain's facts only, so nothing but the earlier edit's own key holds france in place. The
    # tiny model's keys for france and germany are nearly alike (both read at "is"), and germany's edit does not take
    # here either way; what is asserted is that the update turns away from france's key, which keeps france's edit.
    request = MethodRequest("alphaedit", layers=(1,), steps=40, null_space_cutoff=1e-8)
    first = edit("france", "berlin", "e1")
    moved = {}
    for held in (False, True):
        (tmp_path / str(held)).mkdir()
        editor, model, tokenizer = make_editor("llama", tmp_path / str(held), stats_text=FACTS[2:], model_samples=0)
        editor.commit("ns", request, finish(editor.compute(request, [first])))
        (delta,) = finish(editor.compute(request, [edit("germany", "rome", "e2")], [first] if held else []))
        assert isinstance(delta, WeightDelta) and delta.v is not None
        module = model.get_submodule(delta.module)
        key = module_io(model, module, build_batch(tokenizer, [first.prompt], first.subject))[0][0]  # type: ignore[arg-type]
        moved[held] = float((delta.v @ key).abs() / (delta.v.norm() * key.norm()))
        editor.commit("ns", request, [delta])
        assert (answer(model, tokenizer, "the capital of france is") == "berlin") is held
        edited = weights(model)
        editor.close()
        replayed, model2, _ = make_editor("llama", tmp_path / str(held), stats_text=FACTS[2:], model_samples=0)
        assert replayed.replay() == 2
        assert_same(weights(model2), edited)  # replay adds the recorded deltas, whatever keys were held
        replayed.close()
    assert moved[True] < 0.25 * moved[False]
