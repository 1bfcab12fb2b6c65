from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.config import Limits
from server.errors import InvalidArgument
from server.parametric.editor import MethodRequest
from server.types import EditSpec, GenerationOptions, Route
from server.validation import (
    check_answer_edit,
    check_edit_id,
    check_edit_specs,
    check_generation_options,
    check_method_request,
    check_namespace,
    check_page_size,
    check_text,
)
from tests.unit.fakes import make_spec

LIMITS = Limits(max_text_chars=50, max_paraphrases=3, max_edits_per_request=4, max_new_tokens=64,
                max_stop_strings=2, max_page_size=10)
# The pattern the error message documents: 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit.
DOCUMENTED_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", re.ASCII)

VALID_SPEC = make_spec(subject="France", prompt="The capital of France is", target_new="Rome",
                       paraphrases=("France's capital is",), target_true="Paris")
VALID_OPTIONS = GenerationOptions(max_new_tokens=16, temperature=0.7, top_p=0.9, stop=("\n", "."), seed=3)


def raises_naming(field: str):  # type: ignore[no-untyped-def]
    return pytest.raises(InvalidArgument, match=re.escape(field))


# --- text -------------------------------------------------------------------------------------

def test_check_text_accepts_and_returns_value() -> None:
    assert check_text("prompt", "hello", 5) == "hello"


@pytest.mark.parametrize("value", ["", "   ", "\n\t"])
def test_check_text_rejects_blank(value: str) -> None:
    with raises_naming("my_field"):
        check_text("my_field", value, 10)


def test_check_text_rejects_oversized() -> None:
    with raises_naming("my_field"):
        check_text("my_field", "x" * 11, 10)


def test_check_text_rejects_nul() -> None:
    with raises_naming("my_field"):
        check_text("my_field", "a\x00b", 10)


# --- edit specs -------------------------------------------------------------------------------

def test_valid_specs_pass() -> None:
    check_edit_specs([VALID_SPEC, replace(VALID_SPEC, target_true=None, paraphrases=())], LIMITS)
    check_edit_specs([VALID_SPEC] * LIMITS.max_edits_per_request, LIMITS)
    check_edit_specs([replace(VALID_SPEC, paraphrases=("p",) * LIMITS.max_paraphrases)], LIMITS)


def test_empty_specs_rejected() -> None:
    with raises_naming("edits"):
        check_edit_specs([], LIMITS)


def test_too_many_specs_rejected() -> None:
    with raises_naming("edits"):
        check_edit_specs([VALID_SPEC] * (LIMITS.max_edits_per_request + 1), LIMITS)


@pytest.mark.parametrize(("field", "bad"), [
    ("subject", ""),
    ("subject", "Fr\x00ance"),
    ("prompt", " "),
    ("prompt", "France " + "x" * LIMITS.max_text_chars),
    ("target_new", ""),
    ("target_new", "y" * (LIMITS.max_text_chars + 1)),
    ("target_true", "\t"),
    ("target_true", "a\x00"),
])
def test_bad_spec_field_rejected_naming_the_field(field: str, bad: str) -> None:
    spec = replace(VALID_SPEC, **{field: bad})  # type: ignore[arg-type]
    with raises_naming(f"edits[1].{field}"):
        check_edit_specs([VALID_SPEC, spec], LIMITS)


def test_subject_not_in_prompt_rejected() -> None:
    spec = replace(VALID_SPEC, subject="Germany")
    with raises_naming("edits[0].subject"):
        check_edit_specs([spec], LIMITS)


def test_too_many_paraphrases_rejected() -> None:
    spec = replace(VALID_SPEC, paraphrases=("p",) * (LIMITS.max_paraphrases + 1))
    with raises_naming("edits[0].paraphrases"):
        check_edit_specs([spec], LIMITS)


@pytest.mark.parametrize("bad", ["", "z" * (LIMITS.max_text_chars + 1), "nul\x00"])
def test_bad_paraphrase_rejected_naming_its_index(bad: str) -> None:
    spec = replace(VALID_SPEC, paraphrases=("fine", bad))
    with raises_naming("edits[0].paraphrases[1]"):
        check_edit_specs([spec], LIMITS)


# --- namespaces and ids -----------------------------------------------------------------------

@pytest.mark.parametrize("namespace", ["a", "A", "0", "team-1", "prod.eu_west", "x" * 64, "9_.-"])
def test_valid_namespaces_pass(namespace: str) -> None:
    assert check_namespace(namespace) == namespace


@pytest.mark.parametrize("namespace", [
    "", "x" * 65, "-lead", "_lead", ".lead", "has space", "slash/ns", "colon:ns", "tab\t", "new\nline",
    "ümlaut", "emoji😀", "nul\x00", "trailing\n",
])
def test_bad_namespaces_rejected(namespace: str) -> None:
    with raises_naming("namespace"):
        check_namespace(namespace)


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_accepted_namespaces_match_documented_pattern(namespace: str) -> None:
    try:
        check_namespace(namespace)
    except InvalidArgument:
        assert not DOCUMENTED_NAMESPACE.fullmatch(namespace)
    else:
        assert DOCUMENTED_NAMESPACE.fullmatch(namespace)


@given(st.from_regex(DOCUMENTED_NAMESPACE, fullmatch=True))
@settings(max_examples=200, deadline=None)
def test_documented_pattern_namespaces_are_accepted(namespace: str) -> None:
    assert check_namespace(namespace) == namespace


def test_valid_edit_id_passes() -> None:
    edit_id = "0123456789abcdef" * 2
    assert check_edit_id(edit_id) == edit_id


@pytest.mark.parametrize("edit_id", ["", "0" * 31, "0" * 33, "A" * 32, "g" * 32, "0" * 31 + "\n", " " + "0" * 31])
def test_bad_edit_ids_rejected(edit_id: str) -> None:
    with raises_naming("id"):
        check_edit_id(edit_id)


# --- generation options -----------------------------------------------------------------------

def test_valid_options_pass() -> None:
    check_generation_options(VALID_OPTIONS, LIMITS)
    check_generation_options(GenerationOptions(max_new_tokens=1), LIMITS)
    check_generation_options(GenerationOptions(max_new_tokens=LIMITS.max_new_tokens, top_p=1.0), LIMITS)
    check_generation_options(replace(VALID_OPTIONS, stop=(" ",)), LIMITS)  # blank stop strings are fine


@pytest.mark.parametrize(("field", "changes"), [
    ("max_new_tokens", {"max_new_tokens": 0}),
    ("max_new_tokens", {"max_new_tokens": -1}),
    ("max_new_tokens", {"max_new_tokens": LIMITS.max_new_tokens + 1}),
    ("temperature", {"temperature": -0.1}),
    ("temperature", {"temperature": math.nan}),
    ("temperature", {"temperature": math.inf}),
    ("top_p", {"top_p": 0.0}),
    ("top_p", {"top_p": 1.01}),
    ("top_p", {"top_p": math.nan}),
    ("stop[1]", {"stop": ("ok", "")}),
    ("stop[0]", {"stop": ("s" * (LIMITS.max_text_chars + 1),)}),
    ("stop", {"stop": ("a",) * (LIMITS.max_stop_strings + 1)}),
])
def test_bad_options_rejected_naming_the_field(field: str, changes: dict[str, object]) -> None:
    with raises_naming(f"options.{field}"):
        check_generation_options(replace(VALID_OPTIONS, **changes), LIMITS)  # type: ignore[arg-type]


# --- paging -----------------------------------------------------------------------------------

@pytest.mark.parametrize("page_size", [0, 1, LIMITS.max_page_size])
def test_page_size_within_limit_passes(page_size: int) -> None:
    check_page_size(page_size, LIMITS)


def test_page_size_over_limit_rejected() -> None:
    with raises_naming("page_size"):
        check_page_size(LIMITS.max_page_size + 1, LIMITS)


def test_spec_type_is_the_one_validated() -> None:
    # check_edit_specs must not mutate what it checks.
    specs = [VALID_SPEC]
    check_edit_specs(specs, LIMITS)
    assert specs == [VALID_SPEC] and isinstance(specs[0], EditSpec)


@pytest.mark.parametrize(("option", "value"), [
    ("lr", math.inf), ("lr", math.nan), ("lr", 1e30), ("lr", 0.0), ("lr", -1.0), ("mom2_weight", math.inf),
    ("mom2_weight", 1e9), ("norm_constraint", math.inf), ("norm_constraint", 2.0), ("null_space_cutoff", math.nan),
    ("null_space_cutoff", 1.5),
])
def test_parametric_options_must_be_finite_and_in_their_range(option: str, value: float) -> None:
    with pytest.raises(InvalidArgument, match=f"options.{option} must be a finite number"):
        check_method_request(MethodRequest("ft", **{option: value}))  # type: ignore[arg-type]


def test_parametric_options_at_their_limits_pass() -> None:
    check_method_request(MethodRequest("ft", lr=10.0, mom2_weight=1e8, norm_constraint=1.0, null_space_cutoff=1.0))
    check_method_request(MethodRequest("ft", lr=5e-324, norm_constraint=1e-40))  # subnormal yet positive


@pytest.mark.parametrize("control", ["\x1b", "\x07", "\r", "\x0b", "\x0c", "\x1f", "\x01"])
def test_control_characters_are_refused_in_edit_fields(control: str) -> None:
    limits = Limits()
    for spec in (make_spec(prompt=f"The capital{control} of France is"), make_spec(target_new=f"X{control}"),
                 make_spec(paraphrases=(f"where{control}",))):
        with pytest.raises(InvalidArgument, match="control character"):
            check_edit_specs([spec], limits)


def test_tab_and_newline_are_text_in_edit_fields() -> None:
    check_edit_specs([make_spec(target_new="X\tY\nZ")], Limits())


def test_an_edit_id_needs_an_in_scope_route() -> None:
    edit_id = "a" * 32
    assert check_answer_edit(None, "") is None and check_answer_edit(Route.IKE, edit_id) == edit_id
    for route in (None, Route.BASE):
        with pytest.raises(InvalidArgument, match="edit_id is only used with an in-scope route"):
            check_answer_edit(route, edit_id)
    with pytest.raises(InvalidArgument, match="not an edit id"):
        check_answer_edit(Route.IKE, "nope")
