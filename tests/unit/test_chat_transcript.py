from __future__ import annotations

import pytest

from server.chat.transcript import (
    PlainFormat,
    ReplyFilter,
    TemplateFormat,
    Turn,
    conversation_format,
    latest_user_turn,
    previous_exchange,
)
from server.config import Limits
from server.errors import InvalidArgument
from server.validation import check_turns
from tests.tiny import build_tiny_tokenizer

# ChatML, as SmolLM2-135M-Instruct's GGUF carries it (without its default system turn).
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TURNS = [Turn("user", "Where is the Space Needle?"), Turn("assistant", "In Seattle."), Turn("user", "Where is it?")]


def test_plain_format_writes_a_transcript_after_one_example_exchange() -> None:
    prompt = PlainFormat().render([Turn("system", "Be brief. "), *TURNS])
    assert prompt.text == (
        "Be brief.\n\n"
        + PlainFormat.EXAMPLE
        + "User: Where is the Space Needle?\nAssistant: In Seattle.\nUser: Where is it?\nAssistant:"
    )
    assert "\nUser:" in prompt.turn_ends


def test_a_tokenizer_without_a_template_gets_the_plain_format() -> None:
    assert isinstance(conversation_format(build_tiny_tokenizer()), PlainFormat)


def test_a_tokenizer_with_a_template_gets_its_own_format() -> None:
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = CHATML
    chat = conversation_format(tokenizer)
    assert isinstance(chat, TemplateFormat)
    prompt = chat.render(TURNS)
    assert prompt.text == (
        "<|im_start|>user\nWhere is the Space Needle?<|im_end|>\n<|im_start|>assistant\nIn Seattle.<|im_end|>\n"
        "<|im_start|>user\nWhere is it?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt.turn_ends == ()  # the template's end of turn is the model's EOS


def test_a_template_that_writes_bos_is_not_given_a_second_one_by_the_tokenizer() -> None:
    tokenizer = build_tiny_tokenizer(add_bos=True)
    tokenizer.chat_template = "{{ bos_token }}" + CHATML
    text = conversation_format(tokenizer).render(TURNS[:1]).text
    assert not text.startswith("<bos>")
    assert tokenizer(text)["input_ids"].count(tokenizer.bos_token_id) == 1
    no_bos = build_tiny_tokenizer(add_bos=False)
    no_bos.chat_template = "{{ bos_token }}" + CHATML
    assert conversation_format(no_bos).render(TURNS[:1]).text.startswith("<bos>")  # its only BOS


def test_a_template_that_refuses_the_turns_is_invalid_argument() -> None:
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}"
    with pytest.raises(InvalidArgument, match="system first"):
        conversation_format(tokenizer).render(TURNS)


def test_reply_ends_at_the_first_turn_end_and_streams_only_what_is_certain() -> None:
    sent: list[str] = []
    reply = ReplyFilter(("\nUser:",), sent.append)
    for delta in [" The Space", " Needle is in", " Seattle.", "\n", "\nUser:"]:
        reply.feed(delta)
    raw = " The Space Needle is in Seattle.\n\nUser:"
    assert reply.reply(raw) == "The Space Needle is in Seattle."
    assert "".join(sent) == "The Space Needle is in Seattle."
    assert sent[0] == "The Space"  # leading white space is dropped, not held


def test_reply_without_a_turn_end_is_the_stripped_text() -> None:
    assert ReplyFilter(()).reply("  Rome.\n\n") == "Rome."


def test_the_gate_reads_the_latest_turn_and_the_previous_exchange_as_context() -> None:
    assert latest_user_turn(TURNS) == "Where is it?"
    assert previous_exchange(TURNS) == "Where is the Space Needle?\nIn Seattle."
    assert previous_exchange(TURNS[-1:]) == ""
    assert previous_exchange([Turn("system", "Be brief."), Turn("user", "Hi")]) == ""


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([], "turns is empty"),
        ([Turn("bot", "hi")], "turns[0].role"),
        ([Turn("user", "hi"), Turn("system", "x"), Turn("user", "hi")], "only the first turn"),
        ([Turn("user", "hi"), Turn("assistant", "hello")], "last turn must be the user's"),
        ([Turn("user", "")], "turns[0].content is empty"),
        ([Turn("user", "hi")] * 5, "turns has 5 entries; the limit is 4"),
        ([Turn("user", "x" * 60), Turn("assistant", "y" * 60), Turn("user", "z")], "121 characters in all"),
    ],
)
def test_check_turns_says_what_to_fix(turns: list[Turn], message: str) -> None:
    limits = Limits(max_chat_turns=4, max_prompt_chars=100)
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_turns(turns, limits)


def test_check_turns_accepts_a_system_turn_first_and_an_empty_assistant_turn() -> None:
    check_turns([Turn("system", "Be brief."), Turn("user", "hi"), Turn("assistant", ""), Turn("user", "hi")], Limits())
