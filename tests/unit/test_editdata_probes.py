"""editdata/probes.py: object-neighbourhood probes from a split's own records, and portability kinds as read."""

from __future__ import annotations

from editdata.cases import Case, EditFact, Probe
from editdata.probes import template_of, with_object_neighbourhood
from editdata.readers import parse_records


def case(case_id: str, subject: str, prompt: str, new: str, true: str | None) -> Case:
    return Case(case_id, (EditFact(subject, prompt, new, true),))


def test_template_takes_the_subject_out_as_whole_words_in_any_case() -> None:
    assert template_of(EditFact("BBC One", "bbc one, by", "Sega", "BBC")) == "{}, by"
    parisian = EditFact("Paris", "Parisian food comes from Paris, in", "x", None)
    assert template_of(parisian) == "Parisian food comes from {}, in"
    assert template_of(EditFact("Boniface VII", "Boniface VIII was born in", "x", None)) is None


def test_probe_fills_the_next_record_of_another_relation_with_the_new_object() -> None:
    cases = [
        case("1", "BBC One", "BBC One, by", "Sega", "BBC"),
        case("2", "BBC Two", "BBC Two, by", "Nintendo", "BBC"),  # same template: same relation, skipped
        case("3", "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "English", "French"),
        case("4", "Kraków", "Kraków is a twin city of", "Paris", "Kyiv"),
    ]
    built = with_object_neighbourhood(cases)
    assert built[0].object_neighbourhood == (Probe("The mother tongue of Sega is", ("French",)),)
    assert built[1].object_neighbourhood == (Probe("The mother tongue of Nintendo is", ("French",)),)
    assert built[2].object_neighbourhood == (Probe("English is a twin city of", ("Kyiv",)),)
    # wraps round to the start of the list
    assert built[3].object_neighbourhood == (Probe("Paris, by", ("BBC",)),)
    # nothing else of a case changes
    assert [c.edits for c in built] == [c.edits for c in cases]


def test_templates_sharing_an_answer_or_a_content_word_count_as_one_relation() -> None:
    cases = [
        case("1", "Howard Glacier", "Howard Glacier is located in", "Europe", "Antarctica"),
        case("2", "Kuala Langat", "Kuala Langat, which is in", "Asia", "Europe"),  # shares the answer Europe
        case("3", "Nebaioth", "Who is Nebaioth's father?", "Babur", "Ishmael"),
        case("4", "Jane Seymour", "The father of Jane Seymour is whom?", "Richard", "John"),  # shares "father"
        case("5", "Toko Yasuda", "Toko Yasuda plays the", "piano", "guitar"),
    ]
    built = with_object_neighbourhood(cases)
    assert built[0].object_neighbourhood[0].prompt == "Who is Europe's father?"
    assert built[1].object_neighbourhood[0].prompt == "Who is Asia's father?"
    assert built[2].object_neighbourhood[0].prompt == "Babur plays the"
    assert built[3].object_neighbourhood[0].prompt == "Richard plays the"
    assert built[4].object_neighbourhood[0].prompt == "piano is located in"


def test_a_probe_naming_the_edits_own_subject_is_passed_over_and_answers_fall_back_to_target_new() -> None:
    cases = [
        case("1", "Sega", "Sega is owned by", "Sony Group", "Sammy"),
        case("2", "Berlin", "The Sega office in Berlin is run by", "Wegner", None),
        case("3", "Oslo", "Oslo is a twin city of", "Rome", "Riga"),
    ]
    built = with_object_neighbourhood(cases)
    # "The Sega office in Sony Group is run by" names case 1's subject: the next donor is taken
    assert built[0].object_neighbourhood == (Probe("Sony Group is a twin city of", ("Riga",)),)
    assert built[1].object_neighbourhood == (Probe("Wegner is a twin city of", ("Riga",)),)
    assert built[2].object_neighbourhood == (Probe("Rome is owned by", ("Sammy",)),)
    # case 2 has no target_true: its target_new stands in as the answer
    assert with_object_neighbourhood([cases[2], cases[1]])[0].object_neighbourhood == (
        Probe("The Sega office in Rome is run by", ("Wegner",)),
    )
    assert with_object_neighbourhood(cases[1:2] + [cases[0]])[1].object_neighbourhood == ()
    assert with_object_neighbourhood([cases[0], cases[0]])[0].object_neighbourhood == ()


def test_cases_without_a_template_or_with_several_edits_get_none() -> None:
    multi = Case("m", (EditFact("A", "A is in", "X", "Y"), EditFact("B", "B speaks", "Z", "W")))
    unnamed = case("u", "USA-199", "What day was it launched?", "2007", "2008")
    other = case("o", "Oslo", "Oslo is a twin city of", "Rome", "Riga")
    built = with_object_neighbourhood([multi, unnamed, other])
    assert built[0].object_neighbourhood == built[1].object_neighbourhood == ()
    assert built[2].object_neighbourhood == ()  # its only possible donors have no template


def test_knowedit_and_new_question_portability_carry_their_kind() -> None:
    record = {
        "subject": "ZIC3", "prompt": "What species is ZIC3 specific to?", "target_new": "male",
        "ground_truth": ["human"],
        "portability": {
            "Subject_Aliasing": [{"prompt": "What species is Zic member 3 specific to?", "ground_truth": "male"}],
            "Logical_Generalization": [{"prompt": "What is the species of a paralog of ZIC3?", "ground_truth": "male"}],
            "Reasoning": [{"prompt": "Which sex has ZIC3's species?", "ground_truth": ["male"]}],
        },
    }
    (knowedit,) = parse_records([record], "knowedit")
    assert [(p.prompt, p.kind) for p in knowedit.portability] == [
        ("Which sex has ZIC3's species?", "reasoning"),
        ("What is the species of a paralog of ZIC3?", "logical"),
        ("What species is Zic member 3 specific to?", "alias"),
    ]
    mend = {"subject": "UniFirst", "src": "What does UniFirst make?", "alt": "drones", "answers": ["uniforms"],
            "portability": {"New Question": "What would a UniFirst factory assemble?", "New Answer": "drones"},
            "inverse question": "Which company makes drones?"}
    (zsre,) = parse_records([mend], "zsre")
    assert zsre.portability == (Probe("What would a UniFirst factory assemble?", ("drones",), "reasoning"),)
    assert zsre.reverse == (Probe("Which company makes drones?", ("UniFirst",)),)
