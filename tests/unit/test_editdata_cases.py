"""editdata/readers.py and cases.py: each benchmark form becomes the right probes, and formats are detected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from editdata.cases import Case, EditedFacts, EditFact, Probe, asks_edited_fact, names_alone
from editdata.paths import DATA_DIR
from editdata.readers import BlankEditFieldError, detect_format, load_cases

FIXTURES = Path(__file__).parents[1] / "fixtures" / "eval"


def _by_id(cases: list[Case]) -> dict[str, Case]:
    return {case.case_id: case for case in cases}


def test_flat_counterfact() -> None:
    fmt, cases = load_cases(FIXTURES / "counterfact_flat.json")
    assert fmt == "counterfact"
    assert [c.case_id for c in cases] == ["10", "2", "7"]
    case = cases[0]
    assert case.edits == (EditFact("BBC One", "BBC One, by", "Sega", "BBC"),)
    assert case.reliability == (Probe("BBC One, by", ("Sega",)),)
    assert case.generalization == (Probe("BBC One is my favorite product out of everything owned by", ("Sega",)),)
    assert case.locality == (Probe("BBC Radio, by", ("BBC",)),)
    assert case.same_subject == case.portability == case.reverse == case.multi_hop == ()


def test_rome_counterfact_maps_neighbourhood_to_target_true_and_skips_attribute_prompts() -> None:
    fmt, cases = load_cases(FIXTURES / "counterfact_rome.json")
    assert fmt == "counterfact"
    first, second = cases
    assert first.case_id == "0"
    assert first.edits == (
        EditFact("Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "English", "French"),
    )
    assert first.reliability == (Probe("The mother tongue of Danielle Darrieux is", ("English",)),)
    assert len(first.generalization) == 2 and all(p.answers == ("English",) for p in first.generalization)
    assert len(first.locality) == 3 and all(p.answers == ("French",) for p in first.locality)
    # attribute_prompts (other subjects sharing target_new) and generation_prompts appear nowhere.
    all_prompts = {p.prompt for field in ("generalization", "locality", "same_subject") for p in getattr(first, field)}
    assert "J. R. R. Tolkien is a native speaker of" not in all_prompts
    assert first.same_subject == ()
    assert first.portability == (
        Probe("Which language would Danielle Darrieux's autobiography most likely be written in?", ("English",),
              "reasoning"),
    )
    assert second.edits[0].prompt == "Toko Yasuda is a citizen of"
    assert second.portability == ()
    assert [p.answers for p in second.locality] == [("Japan",), ("Japan",)]


def test_explicit_counterfact_format_reads_both_forms() -> None:
    assert load_cases(FIXTURES / "counterfact_rome.json", "counterfact")[1][0].case_id == "0"
    assert load_cases(FIXTURES / "counterfact_flat.json", "counterfact")[1][0].case_id == "10"


def test_mend_zsre_with_portability_and_inverse_question() -> None:
    fmt, cases = load_cases(FIXTURES / "zsre_mend.json")
    assert fmt == "zsre"
    assert [c.case_id for c in cases] == ["0", "1", "2"]
    unifirst, nebaioth, claire = cases
    assert unifirst.edits == (
        EditFact("UniFirst", "What is the product made by UniFirst?", "unmanned aircraft", "uniform"),
    )
    assert unifirst.reliability == (Probe("What is the product made by UniFirst?", ("unmanned aircraft",)),)
    assert unifirst.generalization == (Probe("What will be the product of UniFirst?", ("unmanned aircraft",)),)
    assert unifirst.locality == (
        Probe("nq question: john goodman's character in the big lebowski", ("Walter Sobchak",)),
    )
    # dict form {"New Question", "New Answer"}
    assert unifirst.portability == (
        Probe("What kind of machines would a UniFirst factory assemble?", ("unmanned aircraft",), "reasoning"),
    )
    assert unifirst.reverse == ()
    # list form [{prompt, ground_truth}], and the inverse question answered by the subject
    assert nebaioth.portability == (Probe("Who is Nebaioth's paternal grandfather's son?", ("Babur",), "reasoning"),)
    assert nebaioth.reverse == (Probe("Who is the son of Babur?", ("Nebaioth",)),)
    assert nebaioth.edits[0].target_true == "Ishmael"
    # inverse-dev records have no loc/loc_ans: no locality probe, not an error
    assert claire.locality == ()
    assert claire.reverse == (Probe("Who is Marian Clairmont's sister?", ("Claire Clairmont",)),)


def test_knowedit_ground_truth_shapes_and_sections() -> None:
    fmt, cases = load_cases(FIXTURES / "knowedit.json")
    assert fmt == "knowedit"
    wiki, zsre, recent = cases
    # string ground truth; Relation_Specificity and Forgetfulness are same-subject, not locality
    assert wiki.edits[0].target_true == "France"
    assert wiki.locality == ()
    assert wiki.same_subject == (
        Probe("The name of the founder of Goursez Vreizh is", ("Jean Le Fustec",)),
        Probe(
            "The name of the country which Goursez Vreizh is associated with, which is not Franche-Comté, is",
            ("France",),
        ),
    )
    assert [(p.answers, p.kind) for p in wiki.portability] == [(("Besançon",), "reasoning"),
                                                                (("Franche-Comté",), "alias")]
    assert wiki.generalization == (Probe("Goursez Vreizh is associated with the country of", ("Franche-Comté",)),)
    # list ground truth: first is canonical (KnowEdit ZsRE shape)
    assert zsre.edits[0].target_true == "human"
    assert [p.answers for p in zsre.same_subject] == [("forward strand",), ("forward strand",)]
    assert zsre.portability == (
        Probe("What is the species of a gene that is a paralog of ZIC3?", ("male",), "logical"),
    )
    # missing ground truth, list-of-alias-lists answers, empty alias lists
    assert recent.edits[0].target_true is None
    assert recent.generalization == () and recent.portability == ()
    assert [p.answers for p in recent.same_subject] == [
        ("Cēsis",),
        ("Soviet Union", "USSR", "the Soviet Union"),  # the first alias list only
        ("Cross of Recognition",),  # first alias list empty: the first non-empty one
    ]  # the father probe has only empty alias lists and is dropped


def test_mquake_builds_one_edit_per_rewrite_and_multi_hop_probes() -> None:
    fmt, cases = load_cases(FIXTURES / "mquake.json")
    assert fmt == "mquake"
    one, two = _by_id(cases)["1"], _by_id(cases)["2"]
    assert one.edits == (
        EditFact("Ellie Kemper", "Ellie Kemper is a citizen of", "Croatia", "United States of America"),
    )
    assert len(one.multi_hop) == 3
    assert all(p.answers == ("Zoran Milanović", "Zoran Milanovic", "Milanović") for p in one.multi_hop)
    assert [e.subject for e in two.edits] == ["Spider-Man", "Rowan Atkinson"]
    assert [p.answers for p in two.reliability] == [("Rowan Atkinson",), ("French",)]
    assert len(two.multi_hop) == 2 and two.multi_hop[0].answers == ("French", "French language")  # blank alias dropped
    assert two.locality == two.generalization == ()


def test_a_probe_asks_another_edits_fact_when_it_restates_it_or_names_its_subject_and_old_answer() -> None:
    edit = EditFact("Nintendo DS", "Nintendo DS is developed by", "Nissan", "Nintendo")
    assert asks_edited_fact(Probe("Nintendo DS, developed by", ("Nintendo",)), edit)
    assert asks_edited_fact(Probe("nintendo ds  is developed by", ("Sony",)), edit)  # word for word
    # another answer is another relation ("Nintendo DS was released in Japan"), or a guess
    assert not asks_edited_fact(Probe("Nintendo DS was released in", ("Japan",)), edit)
    # whole words: "Boniface VIII" does not name "Boniface VII"
    pope = EditFact("Boniface VII", "Boniface VII holds the title of", "mayor", "pope")
    assert not asks_edited_fact(Probe("Boniface VIII holds the title of", ("pope",)), pope)
    assert not asks_edited_fact(Probe("Nintendo DS, developed by", ("Nintendo",)),
                                EditFact("Nintendo DS", "Nintendo DS is developed by", "Nissan", None))


def test_a_longer_name_that_contains_the_subject_is_another_entity() -> None:
    ds = EditFact("Nintendo DS", "Nintendo DS is developed by", "Nissan", "Nintendo")
    assert not asks_edited_fact(Probe("Nintendo DS Lite, created by", ("Nintendo",)), ds)
    cannon = EditFact("Freddy Cannon", "Freddy Cannon is represented by music label", "Paramount", "Swan")
    assert not asks_edited_fact(Probe("The Explosive Freddy Cannon is represented by music label", ("Swan",)), cannon)
    # an opening word is no part of the name; a possessive or a comma after it ends the name
    reaves = EditFact("Mallory Reaves", "The mother of Mallory Reaves is whom?", "Lalli Reaves", "Brynne Chandler")
    assert asks_edited_fact(Probe("The mother of Mallory Reaves is", ("Brynne Chandler",)), reaves)
    assert asks_edited_fact(Probe("Mallory Reaves's mother is", ("Brynne Chandler",)), reaves)
    assert names_alone("In 2004 Nintendo DS, developed by Nintendo, and Nintendo DS Lite", "Nintendo DS")
    assert not names_alone("What Nintendo DS Lite", "Nintendo DS")
    assert names_alone("In France, Mallory Reaves's mother is", "Mallory Reaves")  # a clause ends before it
    assert names_alone("Mallory Reaves, France", "Mallory Reaves")


def test_edited_facts_finds_the_edits_a_probe_asks_each_once() -> None:
    ds = EditFact("Nintendo DS", "Nintendo DS, developed by", "Nissan", "Nintendo")
    switch = EditFact("Nintendo Switch", "Nintendo Switch is developed by", "Sega", "Nintendo")
    pope = EditFact("Boniface VII", "Boniface VII holds the title of", "mayor", "pope")
    facts = EditedFacts([ds, switch, pope])
    # word for word and original answer both match ds: listed once; switch expects Nintendo but is not named
    assert facts.asked_by(Probe("Nintendo DS, developed by", ("Nintendo", "nintendo"))) == [ds]
    assert facts.asked_by(Probe("nintendo switch is developed by", ("Sony",))) == [switch]
    assert facts.asked_by(Probe("Boniface VIII holds the title of", ("pope",))) == []
    assert facts.asked_by(Probe("The capital of France is", ("Paris",))) == []


def test_unknown_format_is_a_clear_value_error(tmp_path: Path) -> None:
    path = tmp_path / "odd.json"
    path.write_text(json.dumps([{"question": "q", "answer": "a"}]))
    with pytest.raises(ValueError, match="unknown benchmark format"):
        load_cases(path)
    with pytest.raises(ValueError, match="unknown benchmark format 'wikibio'"):
        load_cases(FIXTURES / "knowedit.json", "wikibio")


def test_missing_required_field_names_record_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"subject": "s", "prompt": "p", "target_new": "t"}, {"subject": "s", "prompt": "p"}]))
    with pytest.raises(ValueError, match=r"bad.json: record 1: field 'target_new' must be a non-empty string"):
        load_cases(path)


def test_blank_edit_field_is_skipped_with_a_warning_or_raises_when_strict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"subject": "A", "src": "Who is A?", "alt": "B", "answers": ["C"], "rephrase": "A is who?"}
    path = tmp_path / "zsre.json"
    path.write_text(json.dumps([good, {**good, "alt": ""}, good]))
    with caplog.at_level("WARNING", logger="editdata.readers"):
        fmt, cases = load_cases(path)
    assert (fmt, [c.case_id for c in cases]) == ("zsre", ["0", "2"])
    assert "skipped 1 of 3 zsre records" in caplog.text and "record 1: field 'alt' is blank" in caplog.text
    with pytest.raises(BlankEditFieldError, match="record 1: field 'alt' is blank"):
        load_cases(path, strict=True)


def test_not_a_list_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "obj.json"
    path.write_text(json.dumps({"subject": "s"}))
    with pytest.raises(ValueError, match="JSON list of objects"):
        load_cases(path)
    path.write_text("[]")
    with pytest.raises(ValueError, match="no records"):
        load_cases(path)
    assert load_cases(path, "zsre") == ("zsre", [])


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"case_id": 1, "prompt": "p", "subject": "s", "target_new": "t", "locality_prompt": "l"}, "counterfact"),
        ({"case_id": 1, "requested_rewrite": {"prompt": "{} x"}, "paraphrase_prompts": []}, "counterfact"),
        ({"case_id": 1, "requested_rewrite": [{"prompt": "{} x"}], "questions": []}, "mquake"),
        ({"subject": "s", "src": "q", "alt": "a", "answers": []}, "zsre"),
        ({"subject": "s", "prompt": "p", "target_new": "t", "locality": {}}, "knowedit"),
    ],
)
def test_detect_format(record: dict[str, object], expected: str) -> None:
    assert detect_format(record) == expected


def test_package_imports_no_heavy_modules() -> None:
    code = (
        "import sys, editdata.cases, editdata.metrics, editdata.paths, editdata.readers; "
        "bad = [m for m in ('torch', 'transformers', 'faiss', 'numpy', 'server') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    )
    assert result.stdout.strip() == ""


# (file, detected format, cases read); zsre/train-1k.json has 1000 records, two with a blank `alt`.
REAL_FILES = [
    ("counterfact/val.json", "counterfact", 1919),
    ("zsre/dev.json", "knowedit", 513),
    ("zsre/inverse-dev.json", "zsre", 365),
    ("zsre/train-1k.json", "zsre", 998),
    ("knowedit/wiki_counterfact_train.json", "knowedit", 1428),
]


@pytest.mark.parametrize(("name", "expected_format", "n_cases"), REAL_FILES)
def test_real_data_files(name: str, expected_format: str, n_cases: int) -> None:
    path = DATA_DIR / name
    if not path.exists():
        pytest.skip(f"shared data not present at {path}")
    fmt, cases = load_cases(path)
    assert fmt == expected_format
    assert len(cases) == n_cases
    assert len({c.case_id for c in cases}) == n_cases
    for case in cases:
        assert len(case.edits) == 1
        assert len(case.reliability) == 1
        assert case.reliability[0].answers == (case.edits[0].target_new,)
        # KnowEdit's WikiData files have no rephrase_prompt; every other file has one paraphrase
        assert len(case.generalization) == (0 if name.startswith("knowedit/") else 1)
    if name == "counterfact/val.json":
        assert all(len(c.locality) == 1 for c in cases)
    if name == "zsre/dev.json":
        # KnowEdit ZsRE: same-subject probes only, no neighbourhood locality; every record ports
        assert all(c.locality == () and len(c.same_subject) == 2 and c.portability for c in cases)
    if name == "zsre/inverse-dev.json":
        assert all(
            c.locality == () and c.reverse == (Probe(c.reverse[0].prompt, (c.edits[0].subject,)),) for c in cases
        )
    if name == "zsre/train-1k.json":
        assert all(len(c.locality) == 1 and c.locality[0].prompt.startswith("nq question:") for c in cases)
        assert "534" not in {c.case_id for c in cases}  # alt is blank
    if name == "knowedit/wiki_counterfact_train.json":
        assert sum(c.edits[0].target_true is None for c in cases) == 1  # record 630: ground_truth ""
        assert all(c.locality == () for c in cases)
