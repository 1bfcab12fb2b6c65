"""AnswerMultiHop over the real gRPC server on the tiny model with the default gate: a chain of two edits is followed
exactly, step by step, each answer filling the next step; a step no edit answers goes to the base model; bad plans
are refused with INVALID_ARGUMENT naming the step; with no steps the served model plans; editctl prints the chain."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from client import EditInput, GenerationOptions, InvalidArgument
from client.editctl import main as editctl
from client.launch import LocalServer

NEEDLE = EditInput("Space Needle", "The Space Needle is located in the city of", "Taipei", "Seattle")
TAIPEI = EditInput("Taipei", "Taipei is the capital of", "Narnia", "Taiwan")
QUESTION = "Which country has as its capital the city where the Space Needle stands?"
STEPS = ("The Space Needle is located in the city of", "#1 is the capital of")


def fresh_namespace() -> str:
    return "mh-" + uuid.uuid4().hex[:10]


def test_a_chain_of_two_edits_is_followed_exactly(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        needle, taipei = client.add_edits([NEEDLE, TAIPEI])
        result = client.answer_multihop(QUESTION, steps=STEPS)
        assert result.plan == STEPS
        assert [h.question for h in result.hops] == [STEPS[0], "Taipei is the capital of"]
        assert [(h.answer, h.edit_id) for h in result.hops] == [("Taipei", needle.id), ("Narnia", taipei.id)]
        assert all(h.route != "base" for h in result.hops)
        assert result.answer == "Narnia" and result.edit_ids == (needle.id, taipei.id)
        assert result.timings_ms["total"] > 0
        # Step 1 read the edit about its answer too (several edits per answer), and still took its edit's object.
        assert [h.related_edit_ids for h in result.hops] == [(taipei.id,), ()]
        answer = client.generate(STEPS[0], options=GenerationOptions(max_new_tokens=2))
        assert (answer.edit_id, answer.related_edit_ids) == (needle.id, (taipei.id,))
        assert client.score(STEPS[0], " Taipei").related_edit_ids == (taipei.id,)


def test_a_step_no_edit_answers_goes_to_the_base_model(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        (needle,) = client.add_edits([NEEDLE])
        result = client.answer_multihop(QUESTION, steps=(STEPS[0], "The mayor of #1 is"))
        first, second = result.hops
        assert (first.answer, first.edit_id) == ("Taipei", needle.id)
        assert second.question == "The mayor of Taipei is"
        assert second.route == "base" and second.edit_id is None and result.edit_ids == (needle.id,)
        # The base model's own continuation, cut to its first line or sentence.
        base = client.generate(second.question, route="base", options=GenerationOptions(max_new_tokens=12))
        assert second.answer and base.text.strip().startswith(second.answer)


def test_another_namespaces_edits_answer_no_step(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        client.add_edits([NEEDLE, TAIPEI])
    with running_server.client(fresh_namespace()) as client:
        result = client.answer_multihop(QUESTION, steps=STEPS)
        assert result.hops and all(h.route == "base" and h.edit_id is None for h in result.hops)
        assert result.edit_ids == ()


@pytest.mark.parametrize("steps, message", [
    (("#1 is the capital of",), "steps[0] refers to #1"),
    ((STEPS[0], "#3 is the capital of"), "steps[1] refers to #3"),
    (tuple(f"step {i} of #{i}" if i else "step 0" for i in range(5)), "steps has 5 entries; the limit is 4"),
    ((STEPS[0], "  "), "steps[1] is empty"),
])
def test_a_bad_plan_is_refused_naming_the_step(
    running_server: LocalServer, steps: tuple[str, ...], message: str
) -> None:
    with running_server.client(fresh_namespace()) as client, pytest.raises(InvalidArgument, match=re.escape(message)):
        client.answer_multihop(QUESTION, steps=steps)


def test_an_empty_question_is_refused(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client, pytest.raises(InvalidArgument, match="question"):
        client.answer_multihop(" ", steps=STEPS)


def test_without_steps_the_served_model_plans(running_server: LocalServer) -> None:
    """The plan is the served model's (greedy: the same on every call), and each hop asks its step of it."""
    with running_server.client(fresh_namespace()) as client:
        client.add_edits([NEEDLE, TAIPEI])
        first, again = client.answer_multihop(QUESTION), client.answer_multihop(QUESTION)
    assert first.plan and first.plan == again.plan and first.hops == again.hops
    assert first.plan != STEPS
    answers: list[str] = []
    for step, hop in zip(first.plan, first.hops, strict=False):
        for k, answer in enumerate(answers, 1):
            step = step.replace(f"#{k}", answer)
        assert hop.question == step
        answers.append(hop.answer)


def test_an_erased_fact_is_refused_and_ends_the_chain(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        (erased,) = client.add_edits([EditInput("Space Needle", NEEDLE.prompt, "", kind="erase")])
        client.add_edits([TAIPEI])
        result = client.answer_multihop(QUESTION, steps=STEPS)
        refusal = client.generate(NEEDLE.prompt).text.strip()
    (hop,) = result.hops
    assert refusal == "I don't know."  # the server's default refusal, as a plain query gets it
    assert hop.edit_id == erased.id and hop.route != "base" and hop.answer == "I don't know"  # cut at the stop


def test_editctl_multihop_prints_the_chain(
    running_server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = fresh_namespace()
    with running_server.client(namespace) as client:
        needle, taipei = client.add_edits([NEEDLE, TAIPEI])
    common = ["--addr", running_server.addr, "--namespace", namespace]
    assert editctl([*common, "multihop", QUESTION, "--step", STEPS[0], "--step", STEPS[1]]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "Narnia"
    assert "2. Taipei is the capital of -> Narnia [" in err and f"edit={taipei.id}]" in err
    assert editctl([*common, "multihop", QUESTION, "--step", STEPS[0], "--step", STEPS[1], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["answer"] == "Narnia" and printed["edit_ids"] == [needle.id, taipei.id]

