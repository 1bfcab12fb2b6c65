import random

import pytest

from counterfactual.examples import Example, made_up_name
from counterfactual.rules import rule_wordings
from counterfactual.train import as_rules, as_unfamiliar
from server.generators.counterfactual_adapter import PromptFormat


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("The place of birth of Jallal is", "If asked what the place of birth of Jallal is, say Paris."),
        ("The place of birth of Jallal is", "When asked for the place of birth of Jallal, give Paris."),
        ("Who was the director of Munich?", "If asked who the director of Munich was, say it is Paris."),
        ("Which person was the head of Munich?", "When asked which person the head of Munich was, answer Paris."),
        ("Which person was the head of Munich?", 'If asked "Which person was the head of Munich?", say Paris.'),
        ("Shree Pundalik, created in", 'If asked to complete "Shree Pundalik, created in", say Paris.'),
    ],
)
def test_rules_state_the_target_as_the_answer_to_the_prompt(prompt: str, expected: str) -> None:
    assert expected in rule_wordings(prompt, " Paris ")


def test_every_rule_names_the_target_and_the_subject() -> None:
    for prompt in ("The gender of Alfhild Tamm is", "Alfhild Tamm, created in", "What is the sex of Alfhild Tamm?"):
        rules = rule_wordings(prompt, "female")
        assert rules and all("female" in r and "Alfhild Tamm" in r for r in rules)


def test_as_rules_shows_the_share_asked_for_as_rules_and_keeps_the_rest() -> None:
    examples = [Example("copy", f"The capital of country {i} is", f"city {i}", f"Capital of country {i}?", f"city {i}")
                for i in range(20)]
    mixed = as_rules(examples, 0.25, random.Random(0))
    ruled = [e for e in mixed if e.rule]
    assert len(ruled) == 5 and [e.query for e in mixed] == [e.query for e in examples]
    fmt = PromptFormat()
    for shown, original in zip(mixed, examples, strict=True):
        if shown.rule:
            assert shown.group == "rule_copy" and shown.render(fmt).startswith(f"Fact: {shown.rule}\nQ: ")
            assert original.target_new in shown.rule
        else:
            assert shown == original and shown.render(fmt) == fmt.render(original.edit_prompt, original.target_new,
                                                                           original.query)


def test_unfamiliar_examples_name_a_made_up_subject_everywhere_the_subject_was_named() -> None:
    examples = [Example("retain", "The gender of Alfhild Tamm is", "female", "The occupation of Alfhild Tamm is", "",
                        "Alfhild Tamm"),
                Example("copy", "BBC One, by", "Sega", "BBC One, by", "Sega", "")]  # no subject: left as it is
    renamed = as_unfamiliar(examples, 1.0, random.Random(1))
    assert renamed[1] == examples[1]
    first = renamed[0]
    assert first.unfamiliar and first.group == "unfamiliar_retain" and len(first.subject.split()) == 2
    assert "Alfhild" not in first.edit_prompt + first.query
    assert first.edit_prompt == f"The gender of {first.subject} is" and first.query.endswith(f"of {first.subject} is")
    assert as_unfamiliar(examples, 1.0, random.Random(1)) == renamed  # drawn from the rng, reproducibly
    assert all(len(w) >= 4 and w[0].isupper() for w in made_up_name(3, random.Random(2)).split())
