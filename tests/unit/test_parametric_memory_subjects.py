"""The table of real subjects T-Patcher's memory asks the edit's question about: built from a training file's
records by prompt template, drawn deterministically per edit, and the shipped table read from artifacts/."""

from __future__ import annotations

from pathlib import Path

from server.parametric.memory_subjects import DEFAULT_FILE, SubjectTable, same_kind, shipped_subjects

RECORDS = [
    {"subject": "Sade Adu", "prompt": "What does Sade Adu play? They play", "ground_truth": "jazz"},
    {"subject": "Toko Yasuda", "prompt": "What does Toko Yasuda play? They play", "ground_truth": "guitar"},
    {"subject": "John Lennon", "prompt": "What does John Lennon play? They play", "ground_truth": "guitar"},
    {"subject": "Toko Yasuda", "prompt": "What does Toko Yasuda play? They play"},  # counted once
    {"subject": "Eschwege", "prompt": "Eschwege is located in the country of", "ground_truth": "Germany"},
    {"subject": "Riga", "prompt": "Riga is located in the country of", "ground_truth": "Latvia"},
    {"subject": "Jimi Hendrix", "prompt": "Jimi Hendrix performs on the", "ground_truth": "Guitar "},
    {"subject": "Nobody", "prompt": "A prompt without its subject"},  # no template: left out
]
PLAYS = "What does {} play? They play"


def test_subjects_are_grouped_by_the_template_of_their_prompt() -> None:
    table = SubjectTable.from_records(RECORDS)
    assert dict(table.by_template) == {PLAYS: ("John Lennon", "Sade Adu", "Toko Yasuda"),
                                       "{} is located in the country of": ("Eschwege", "Riga"),
                                       "{} performs on the": ("Jimi Hendrix",)}
    assert table.answers[PLAYS] == {"John Lennon": "guitar", "Sade Adu": "jazz", "Toko Yasuda": "guitar"}


def test_an_edit_draws_subjects_asked_its_own_question_never_its_own_subject_and_the_same_each_time() -> None:
    table = SubjectTable.from_records(RECORDS)
    drawn = table.draw("What does Toko Yasuda play? They play", "Toko Yasuda", 2)
    assert sorted(drawn) == ["John Lennon", "Sade Adu"]
    assert table.draw("What does Toko Yasuda play? They play", "Toko Yasuda", 2) == drawn
    assert len(table.draw("What does Toko Yasuda play? They play", "Toko Yasuda", 1)) == 1


def test_a_question_asked_about_too_few_subjects_or_unknown_is_filled_from_the_others() -> None:
    table = SubjectTable.from_records(RECORDS)
    drawn = table.draw("What does Toko Yasuda play? They play", "Toko Yasuda", 3)
    assert sorted(drawn[:2]) == ["John Lennon", "Sade Adu"] and drawn[2] in ("Eschwege", "Jimi Hendrix", "Riga")
    unknown = table.draw("Where was Ada Lovelace born? In", "Ada Lovelace", 10)
    assert sorted(unknown) == ["Eschwege", "Jimi Hendrix", "John Lennon", "Riga", "Sade Adu", "Toko Yasuda"]


def test_subjects_with_the_edits_old_answer_come_first_up_to_their_share() -> None:
    table = SubjectTable.from_records(RECORDS)
    prompt = "What does Eric Clapton play? They play"
    # the old answer's subjects, asked the same question first, then another question's (case and spacing aside)
    assert sorted(table.draw(prompt, "Eric Clapton", 2, "guitar", same_answer=2)) == ["John Lennon", "Toko Yasuda"]
    three = table.draw(prompt, "Eric Clapton", 3, "guitar", same_answer=3)
    assert sorted(three[:2]) == ["John Lennon", "Toko Yasuda"] and three[2] == "Jimi Hendrix"
    # past the share, the question's other subjects, then any
    capped = table.draw(prompt, "Eric Clapton", 4, "guitar", same_answer=1)
    assert capped[0] in ("John Lennon", "Toko Yasuda")
    assert set(capped[1:3]) == set(table.by_template[PLAYS]) - {capped[0]}
    assert capped[3] in ("Eschwege", "Jimi Hendrix", "Riga")
    # no old answer, or no share: the draw of an edit without one
    assert table.draw(prompt, "Eric Clapton", 4, None, same_answer=2) == table.draw(prompt, "Eric Clapton", 4)
    assert table.draw(prompt, "Eric Clapton", 4, "guitar", same_answer=0) == table.draw(prompt, "Eric Clapton", 4)


def test_other_questions_for_the_edits_own_subject_are_of_another_kind_than_its_prompts() -> None:
    table = SubjectTable.from_records(RECORDS)
    located = "{} is located in the country of"
    # "{} performs on the" answers guitar as PLAYS does: the same kind of question, left out like PLAYS itself
    asked = table.questions("What does Toko Yasuda play? They play", "Toko Yasuda", 5)
    assert asked == (located,)
    assert table.questions("What does Toko Yasuda play? They play", "Toko Yasuda", 5) == asked  # the same each time
    assert table.questions("What does Toko Yasuda play? They play", "Toko Yasuda", 0) == ()
    # a known template's kind is its answers; the edit's own count where the table does not know its template
    assert table.questions("What does Toko Yasuda play? They play", "Toko Yasuda", 5, answers=("Latvia",)) == asked
    assert len(table.questions("Where was Ada Lovelace born? In", "Ada Lovelace", 5)) == 3
    unknown = table.questions("Where was Ada Lovelace born? In", "Ada Lovelace", 5, answers=(" germany", None))
    assert sorted(unknown) == sorted([PLAYS, "{} performs on the"])  # case and spacing aside
    # never one the caller leaves out (the edit's own wordings), the others as drawn
    riga = table.questions("Riga is located in the country of", "Riga", 5)
    assert set(riga) == {PLAYS, "{} performs on the"}
    assert table.questions("Riga is located in the country of", "Riga", 5, exclude={"{} performs on the"}) == (PLAYS,)
    one = table.questions("Riga is located in the country of", "Riga", 1)
    assert table.questions("Riga is located in the country of", "Riga", 1, exclude={one[0]}) == ()


def test_templates_are_of_one_kind_when_their_answers_overlap_by_a_quarter_of_the_smaller_set() -> None:
    assert same_kind(frozenset("abcd"), frozenset("axyz"))
    assert not same_kind(frozenset("abcde"), frozenset("avwxyz"))
    assert same_kind(frozenset("a"), frozenset("abcdefgh"))
    assert not same_kind(frozenset(), frozenset("a"))


def test_different_edits_draw_in_different_orders() -> None:
    many = SubjectTable({PLAYS: tuple(f"Player {i}" for i in range(100))})
    draws = {many.draw(f"What does Player {i} play? They play", f"Player {i}", 5) for i in range(10)}
    assert len(draws) == 10


def test_a_saved_table_loads_equal(tmp_path: Path) -> None:
    table = SubjectTable.from_records(RECORDS)
    table.save(tmp_path / "t" / "subjects.json", "counterfact/train.json")
    assert SubjectTable.load(tmp_path / "t" / "subjects.json") == table


def test_the_shipped_table_covers_counterfacts_questions() -> None:
    assert DEFAULT_FILE.is_file(), "artifacts/tpatcher/subjects.json is missing: scripts/build_tpatcher_subjects.py"
    table = shipped_subjects()
    plays = table.by_template[PLAYS]
    own = plays[0]
    drawn = table.draw(PLAYS.format(own), own, 16)
    assert len(plays) > 16 and len(drawn) == 16 and own not in drawn and set(drawn) <= set(plays)
