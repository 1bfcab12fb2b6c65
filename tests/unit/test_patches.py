"""Regex patches: whole-text rewriting as re.sub does it, and streamed pieces that join to the same text."""

from __future__ import annotations

import random
import re

import pytest

from server.patches import Rewriter, patches_of
from server.types import Edit, EditKind
from tests.unit.fakes import make_edit


def regex_edit(pattern: str, replacement: str, edit_id: str = "r" * 32, created: float = 1.0,
               superseded_by: str = "") -> Edit:
    return Edit(edit_id, "ns", "", "", "", None, (), created, kind=EditKind.REGEX, pattern=pattern,
                replacement=replacement, superseded_by=superseded_by)


def rewriter(*pairs: tuple[str, str]) -> Rewriter:
    return Rewriter(patches_of([regex_edit(p, r, f"{i:032d}", float(i)) for i, (p, r) in enumerate(pairs)]))


def streamed(rewrite: Rewriter, pieces: list[str]) -> list[str]:
    out: list[str] = []
    sink = rewrite.stream(out.append)
    for piece in pieces:
        sink.feed(piece)
    sink.close()
    return out


def test_whole_text_is_rewritten_as_re_sub_does() -> None:
    text = "Acme Corp sells the Acme phone; acme is lower case."
    assert rewriter((r"Acme", "Apex")).apply(text) == re.sub(r"Acme", "Apex", text)
    assert rewriter((r"(\w+) Corp", r"\1 Inc.")).apply(text) == "Acme Inc. sells the Acme phone; acme is lower case."


def test_patches_apply_in_the_order_added_each_to_the_previous_output() -> None:
    assert rewriter(("colour", "color"), ("color", "hue")).apply("the colour red") == "the hue red"


def test_only_live_regex_edits_are_patches() -> None:
    edits = [make_edit("f" * 32), regex_edit("a", "b", "1" * 32), regex_edit("c", "d", "2" * 32, superseded_by="x")]
    assert [p.edit_id for p in patches_of(edits)] == ["1" * 32]


def test_a_match_split_across_pieces_is_rewritten_and_nothing_is_sent_twice() -> None:
    out = streamed(rewriter(("Acme Corp", "Apex Inc.")), ["We bought from Ac", "me", " Co", "rp last year."])
    assert "".join(out) == "We bought from Apex Inc. last year."
    assert out[0] == "We bought from "  # sent before the match was complete: it could not be one any more


def test_a_held_prefix_that_turns_out_not_to_match_is_sent_unchanged() -> None:
    assert "".join(streamed(rewriter(("Acme Corp", "X")), ["Acme", " Cor", "ner"])) == "Acme Corner"


@pytest.mark.parametrize(("pattern", "replacement"), [
    (r"Acme", "Apex"),
    (r"colou?r", "hue"),
    (r"\bcat\b", "dog"),
    (r"\d+", "<n>"),
    (r"foo(?=bar)", "F"),
    (r"abcd|ab", "X"),  # the longer alternative first: "ab" must wait until "abc" can no longer become "abcd"
    (r"x*", "-"),  # empty matches are never replaced
    (r"(?<=a)b+", "B"),
    (r"o\s+w", "0_w"),
])
def test_any_split_into_pieces_streams_the_whole_text_rewrite(pattern: str, replacement: str) -> None:
    text = "Acme colour colr cat cats 1234 foobar foo abcd abc ab abbbb hello   world xx a1b2"
    rewrite = rewriter((pattern, replacement))
    whole = rewrite.apply(text)
    rng = random.Random(0)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 30)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert "".join(streamed(rewrite, pieces)) == whole


def test_without_patches_text_passes_through() -> None:
    rewrite = Rewriter()
    assert not rewrite and rewrite.apply("anything") == "anything"
    assert streamed(rewrite, ["a", "b"]) == ["a", "b"]


def test_a_pattern_that_backtracks_for_too_long_leaves_the_answer_as_generated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = "x" * 5000
    assert rewriter((r"(x+x+)+y", "z")).apply(text) == text
    assert "TimeoutError" in caplog.text


def test_a_template_naming_a_missing_group_leaves_the_answer_as_generated() -> None:
    assert rewriter((r"Acme", r"\2")).apply("Acme Corp") == "Acme Corp"
