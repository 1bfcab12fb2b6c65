"""Regex patches: exact textual fixes (a pattern and an `re.sub` replacement) applied to every answer of a
namespace, to the whole text or to its pieces as they stream.

A namespace's patches apply in the order they were added, each to the previous one's output. Matches are found
as `re.sub` finds them (leftmost, left to right, not overlapping), except that empty matches are never replaced:
a fix rewrites text, it does not insert it between characters.

Streaming. A match may span the pieces generation streams (" Ac" then "me"), and text the stream has sent cannot
be taken back. So each patch holds back the text from the first position where a match might still begin or
change once more text arrives, and passes on everything before it, rewritten. "Might" is the `regex` module's
partial matching: from that position the pattern can consume the rest of the text and still want more (a prefix
of a match, an unfinished lookahead, a greedy run that reaches the end). Before that position every match and
every failed match is already decided by the text so far, so the streamed pieces join to exactly the text a
whole-text rewrite gives; the cost is latency on a held tail, flushed when generation ends. The `regex` module
(pinned in requirements.lock, `re`-compatible in its default version 0) also bounds each search in time: a
pattern that backtracks catastrophically is abandoned for that answer, logged, instead of stalling the model
thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import regex

from server.interfaces import TextSink
from server.types import Edit, EditKind

log = logging.getLogger(__name__)

SEARCH_TIMEOUT_S = 0.05  # one search over an answer of a few thousand characters takes microseconds


@dataclass(frozen=True)
class RegexPatch:
    edit_id: str
    pattern: regex.Pattern[str]
    replacement: str


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern, regex.VERSION0)


def patches_of(edits: Sequence[Edit]) -> tuple[RegexPatch, ...]:
    """The namespace's regex patches from its live edits, oldest first. A pattern the `regex` module cannot
    compile (validation compiled it with `re`) is left out, logged."""
    patches = []
    for edit in sorted((e for e in edits if e.kind is EditKind.REGEX and e.live), key=lambda e: e.created_at_unix_s):
        try:
            patches.append(RegexPatch(edit.id, _compiled(edit.pattern), edit.replacement))
        except regex.error as exc:
            log.warning("regex patch %s left out: its pattern %r does not compile here: %s", edit.id, edit.pattern, exc)
    return tuple(patches)


class _Stage:
    """One patch over a stream: `feed` takes raw text and returns what is settled, rewritten."""

    def __init__(self, patch: RegexPatch) -> None:
        self._patch = patch
        self._raw = ""
        self._cursor = 0  # raw text before this is rewritten and passed on
        self._broken = False  # the patch failed on this answer: pass the rest through untouched

    def feed(self, text: str, final: bool = False) -> str:
        self._raw += text
        out: list[str] = []
        try:
            self._advance(out, final)
        except (TimeoutError, IndexError, regex.error) as exc:  # a slow pattern; a template naming a missing group
            log.warning("regex patch %s failed on an answer (%s: %s); the answer's rest is left as generated",
                        self._patch.edit_id, type(exc).__name__, exc)
            self._broken = True
        if self._broken:
            out.append(self._raw[self._cursor:])
            self._cursor = len(self._raw)
        return "".join(out)

    def _advance(self, out: list[str], final: bool) -> None:
        if self._broken:
            return
        raw, pattern = self._raw, self._patch.pattern
        while True:
            hold = len(raw) if final else self._hold_from(self._cursor)
            match = next((m for m in pattern.finditer(raw, self._cursor, timeout=SEARCH_TIMEOUT_S)
                          if m.end() > m.start()), None)
            if match is None or match.start() >= hold:
                out.append(raw[self._cursor:hold])
                self._cursor = hold
                return
            replaced = match.expand(self._patch.replacement)
            out += [raw[self._cursor:match.start()], replaced]
            self._cursor = match.end()

    def _hold_from(self, start: int) -> int:
        """The first position from `start` where a match may still begin or change with more text: the pattern,
        anchored there, can consume all the text so far (partial fullmatch). The end of the text at the latest."""
        raw, pattern = self._raw, self._patch.pattern
        for position in range(start, len(raw)):
            if pattern.fullmatch(raw, position, partial=True, timeout=SEARCH_TIMEOUT_S) is not None:
                return position
        return len(raw)


class Rewriter:
    """A namespace's regex patches, applied in order."""

    def __init__(self, patches: Sequence[RegexPatch] = ()) -> None:
        self._patches = tuple(patches)

    def __bool__(self) -> bool:
        return bool(self._patches)

    def apply(self, text: str) -> str:
        for patch in self._patches:
            text = _Stage(patch).feed(text, final=True)
        return text

    def stream(self, sink: TextSink) -> RewritingSink:
        return RewritingSink([_Stage(p) for p in self._patches], sink)


class RewritingSink:
    """Takes generated text piece by piece, passes on the rewritten text as soon as it is settled; `close` at the
    end of generation flushes what the patches held back."""

    def __init__(self, stages: list[_Stage], sink: TextSink) -> None:
        self._stages = stages
        self._sink = sink
        self._sent: list[str] = []

    @property
    def text(self) -> str:
        """Everything passed on so far: after `close`, the whole rewritten answer."""
        return "".join(self._sent)

    def feed(self, text: str) -> None:
        self._push(text, final=False)

    def close(self) -> None:
        self._push("", final=True)

    def _push(self, text: str, final: bool) -> None:
        for stage in self._stages:
            text = stage.feed(text, final)
        if text:
            self._sent.append(text)
            self._sink(text)
