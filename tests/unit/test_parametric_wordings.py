"""Other wordings of an edit's prompt, mined from rephrasing pairs, and the prompts ROME/MEMIT use."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.app import load_wordings
from server.parametric.prompts import edit_prompts
from server.parametric.wordings import Wordings, template

RECORDS = [
    {"subject": "Toko Yasuda", "prompt": "Toko Yasuda, the", "rephrase_prompt": "Toko Yasuda is incredible at"},
    {"subject": "Ravi Shankar", "prompt": "Ravi Shankar, the", "rephrase_prompt": "Ravi Shankar performs on the"},
    {"subject": "Jimi Hendrix", "prompt": "Jimi Hendrix, the",
     "rephrase_prompt": "The storm passed quickly. Jimi Hendrix is incredible at"},
    {"subject": "BBC One", "prompt": "BBC One, by", "rephrase_prompt": "BBC One is owned by"},
    {"subject": "Nobody", "prompt": "Somebody else, the", "rephrase_prompt": "Nobody is incredible at"},
]


def test_template_cuts_the_subject_out_and_drops_an_unrelated_opening_sentence() -> None:
    assert template("The profession of Arun Nehru is", "Arun Nehru") == "The profession of {} is"
    assert template("A Marañón Week is held since 1990. Galata is in", "Galata") == "{} is in"
    assert template("What does Frank Mantooth play? They play", "Frank Mantooth") == "What does {} play? They play"
    assert template("Galata is in", "Istanbul") is None


def test_the_most_frequent_partners_of_the_prompts_wording_come_first_filled_with_the_subject() -> None:
    wordings = Wordings.from_records(RECORDS)
    assert wordings.others("Miles Davis, the", "Miles Davis", 2) == (
        "Miles Davis is incredible at", "Miles Davis performs on the"
    )
    assert wordings.others("Miles Davis, the", "Miles Davis", 1) == ("Miles Davis is incredible at",)
    # Pairs count both ways: a rephrasing's partner is the prompt it rephrased.
    assert wordings.others("Miles Davis performs on the", "Miles Davis", 3) == ("Miles Davis, the",)


def test_an_unknown_wording_or_no_subject_gives_no_others() -> None:
    wordings = Wordings.from_records(RECORDS)
    assert wordings.others("The capital of France is", "France", 4) == ()
    assert wordings.others("Miles Davis, the", "Coltrane", 4) == ()
    assert wordings.others("Miles Davis, the", "Miles Davis", 0) == ()
    assert Wordings().others("Miles Davis, the", "Miles Davis", 4) == ()


def test_the_value_is_optimised_on_the_prefixed_prompts_and_then_the_other_wordings() -> None:
    prompts = edit_prompts("Miles Davis, the", ("", "It rained"), ("Miles Davis is incredible at",))
    assert prompts.key == ("Miles Davis, the", "It rained. Miles Davis, the")
    assert prompts.value == (*prompts.key, "Miles Davis is incredible at")


def test_a_missing_wordings_file_gives_none_and_a_malformed_one_names_itself(tmp_path: Path) -> None:
    assert load_wordings(tmp_path / "absent.json").others("Miles Davis, the", "Miles Davis", 4) == ()
    bad = tmp_path / "bad.json"
    bad.write_text('{"prompt": "not a list"}')
    with pytest.raises(ValueError, match="bad.json"):
        load_wordings(bad)
