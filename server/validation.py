"""Checks on caller input, with messages that name the field and say what to fix."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from server.chat.transcript import ROLES, Turn
from server.config import Limits
from server.errors import InvalidArgument
from server.parametric.editor import METHODS, MethodRequest
from server.types import EditKind, EditSpec, GenerationOptions, Route, subject_key

NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Upper ends of the parametric options, each far above its default yet low enough that the weights stay finite:
# lr 10 (defaults: 0.5 for ROME/MEMIT's value, 5e-4 for FT), λ 1e8 (MEMIT's default 1e4), FT's per-weight change
# 1 (default 5e-4; weights are of order 0.01-0.1), AlphaEdit's cut-off 1 (a share of the largest eigenvalue).
METHOD_OPTION_RANGES = {"lr": 10.0, "mom2_weight": 1e8, "norm_constraint": 1.0, "null_space_cutoff": 1.0}
# C0 control characters other than tab and newline: kept out of stored edits, which operators' terminals display.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f]")


def check_namespace(namespace: str) -> str:
    if not NAMESPACE_PATTERN.fullmatch(namespace):
        raise InvalidArgument(
            f"namespace {namespace[:80]!r} is invalid: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return namespace


def check_text(field: str, value: str, max_chars: int) -> str:
    if not value.strip():
        raise InvalidArgument(f"{field} is empty; give a non-blank string")
    if len(value) > max_chars:
        raise InvalidArgument(f"{field} has {len(value)} characters; the limit is {max_chars}")
    if "\x00" in value:
        raise InvalidArgument(f"{field} contains a NUL character")
    return value


def check_edit_id(edit_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{32}", edit_id):
        raise InvalidArgument(f"id {edit_id[:80]!r} is not an edit id (32 lowercase hex digits, as AddEdits returns)")
    return edit_id


def check_answer_edit(route: Route | None, edit_id: str) -> str | None:
    """The edit a forced in-scope route answers from; None when none is named. Without such a route an edit id
    would be silently ignored (the gate picks from the caller's namespace), so naming one is refused instead."""
    if not edit_id:
        return None
    if route is None or route is Route.BASE:
        raise InvalidArgument(
            "edit_id is only used with an in-scope route: set route (e.g. ROUTE_IKE) to answer from that edit, "
            "or leave edit_id empty and let the gate choose"
        )
    return check_edit_id(edit_id)


def check_edit_specs(specs: Sequence[EditSpec], limits: Limits) -> None:
    if not specs:
        raise InvalidArgument("edits is empty; send at least one edit")
    if len(specs) > limits.max_edits_per_request:
        raise InvalidArgument(
            f"edits has {len(specs)} entries; the limit per request is {limits.max_edits_per_request}"
        )
    for i, spec in enumerate(specs):
        check_edit_spec(spec, f"edits[{i}]", limits)


def check_edit_text(field: str, value: str, max_chars: int) -> str:
    """`check_text`, and no C0 control character but tab and newline (an escape sequence stored in an edit would
    reach every terminal that lists it)."""
    check_text(field, value, max_chars)
    if found := CONTROL_CHARACTERS.search(value):
        raise InvalidArgument(
            f"{field} contains the control character {found.group()!r} at position {found.start()}; "
            "edits may hold tab and newline but no other control characters"
        )
    return value


def check_edit_spec(spec: EditSpec, where: str, limits: Limits) -> None:
    """`where` names the spec in messages, e.g. "edits[3]". The fields each kind takes are listed on `Edit`."""
    if spec.kind is EditKind.REGEX:
        _check_regex_patch(spec, where, limits)
        return
    check_edit_text(f"{where}.subject", spec.subject, limits.max_text_chars)
    check_edit_text(f"{where}.prompt", spec.prompt, limits.max_text_chars)
    if spec.kind in (EditKind.ERASE, EditKind.PATCH):
        _check_empty(spec, where, ("target_new", "pattern", "replacement"), _WHY_EMPTY[spec.kind])
    else:
        check_edit_text(f"{where}.target_new", spec.target_new, limits.max_text_chars)
        _check_empty(spec, where, ("pattern", "replacement"), "only regex patches have a pattern and replacement")
    if spec.target_true is not None:
        check_edit_text(f"{where}.target_true", spec.target_true, limits.max_text_chars)
    if spec.subject not in spec.prompt:
        raise InvalidArgument(f"{where}.subject {spec.subject!r} does not occur in prompt {spec.prompt!r}")
    if len(spec.paraphrases) > limits.max_paraphrases:
        raise InvalidArgument(
            f"{where}.paraphrases has {len(spec.paraphrases)} entries; the limit is {limits.max_paraphrases}"
        )
    for j, paraphrase in enumerate(spec.paraphrases):
        check_edit_text(f"{where}.paraphrases[{j}]", paraphrase, limits.max_text_chars)
    _check_aliases(spec, where, limits)


def _check_aliases(spec: EditSpec, where: str, limits: Limits) -> None:
    """Each alias a name other than the subject and the other aliases (up to case and spacing): each becomes a key
    text, the prompt with the subject replaced by it."""
    if len(spec.aliases) > limits.max_aliases:
        raise InvalidArgument(f"{where}.aliases has {len(spec.aliases)} entries; the limit is {limits.max_aliases}")
    seen = {subject_key(spec.subject): "the subject"}
    for j, alias in enumerate(spec.aliases):
        check_edit_text(f"{where}.aliases[{j}]", alias, limits.max_text_chars)
        if (key := subject_key(alias)) in seen:
            raise InvalidArgument(f"{where}.aliases[{j}] {alias!r} repeats {seen[key]}; give each other name once")
        seen[key] = f"aliases[{j}]"


_WHY_EMPTY = {
    EditKind.ERASE: "an erase edit answers with the server's refusal (put the erased answer in target_true)",
    EditKind.PATCH: "a patch states its rule in prompt",
    EditKind.REGEX: "a regex patch has no key texts: it rewrites the base model's output wherever pattern matches",
}


def _check_empty(spec: EditSpec, where: str, fields: Sequence[str], why: str) -> None:
    for name in fields:
        if getattr(spec, name):
            raise InvalidArgument(f"{where}.{name} must be empty for a {spec.kind.value} edit: {why}")


def _check_regex_patch(spec: EditSpec, where: str, limits: Limits) -> None:
    """A pattern that compiles, cannot match the empty string, and a replacement template that fits it."""
    _check_empty(spec, where, ("prompt", "target_new", "target_true", "paraphrases", "aliases"),
                 _WHY_EMPTY[EditKind.REGEX])
    if spec.subject:  # an optional label
        check_edit_text(f"{where}.subject", spec.subject, limits.max_text_chars)
    pattern = check_edit_text(f"{where}.pattern", spec.pattern, limits.max_text_chars)
    if spec.replacement:  # "" deletes what the pattern matches
        check_edit_text(f"{where}.replacement", spec.replacement, limits.max_text_chars)
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise InvalidArgument(f"{where}.pattern {pattern[:80]!r} is not a valid regular expression: {exc}") from None
    if compiled.fullmatch(""):
        raise InvalidArgument(f"{where}.pattern {pattern[:80]!r} matches the empty string, so it would insert its "
                              "replacement between every two characters; make it match at least one character")
    try:  # sub parses the template against the pattern's groups before it scans, even an empty string
        compiled.sub(spec.replacement, "")
    except (re.error, IndexError) as exc:
        raise InvalidArgument(
            f"{where}.replacement {spec.replacement[:80]!r} does not fit the pattern: {exc}"
        ) from None


def check_generation_options(options: GenerationOptions, limits: Limits) -> None:
    if not 1 <= options.max_new_tokens <= limits.max_new_tokens:
        raise InvalidArgument(
            f"options.max_new_tokens must be in [1, {limits.max_new_tokens}], got {options.max_new_tokens}"
        )
    if not 0.0 <= options.temperature <= 100.0:
        raise InvalidArgument(
            f"options.temperature must be in [0, 100] (below 0.001 is greedy), got {options.temperature}"
        )
    if not 0.0 < options.top_p <= 1.0:
        raise InvalidArgument(f"options.top_p must be in (0, 1], got {options.top_p}")
    if len(options.stop) > limits.max_stop_strings:
        raise InvalidArgument(f"options.stop has {len(options.stop)} entries; the limit is {limits.max_stop_strings}")
    for i, stop in enumerate(options.stop):  # blank stop strings such as "\n" are fine
        if not stop or len(stop) > limits.max_text_chars:
            raise InvalidArgument(f"options.stop[{i}] must have 1 to {limits.max_text_chars} characters")


def check_page_size(page_size: int, limits: Limits) -> None:
    if page_size > limits.max_page_size:
        raise InvalidArgument(f"page_size {page_size} is over the limit of {limits.max_page_size}")


def check_turns(turns: Sequence[Turn], limits: Limits) -> None:
    """A conversation to answer: an optional system turn first, then user and assistant turns, ending with the
    user's. Assistant turns may be empty (a model can end its reply at once); the others may not."""
    if not turns:
        raise InvalidArgument("turns is empty; send at least the user's turn")
    if len(turns) > limits.max_chat_turns:
        raise InvalidArgument(
            f"turns has {len(turns)} entries; the limit is {limits.max_chat_turns}: drop the oldest turns"
        )
    for i, turn in enumerate(turns):
        if turn.role not in ROLES:
            raise InvalidArgument(f"turns[{i}].role {turn.role[:40]!r} is not one of {', '.join(ROLES)}")
        if turn.role == "system" and i > 0:
            raise InvalidArgument(f"turns[{i}] is a system turn; only the first turn may be one")
        if turn.role != "assistant" or turn.content:
            check_text(f"turns[{i}].content", turn.content, limits.max_prompt_chars)
    if turns[-1].role != "user":
        raise InvalidArgument(f"turns[{len(turns) - 1}] is a {turns[-1].role} turn; the last turn must be the user's")
    total = sum(len(t.content) for t in turns)
    if total > limits.max_prompt_chars:
        raise InvalidArgument(
            f"turns have {total} characters in all; the limit is {limits.max_prompt_chars}: drop the oldest turns"
        )


def check_method_request(request: MethodRequest) -> None:
    if request.method not in METHODS:
        raise InvalidArgument(f"method is unset or unknown; use one of {', '.join(m.upper() for m in METHODS)}")
    if request.steps is not None and not 1 <= request.steps <= 1000:
        raise InvalidArgument(f"options.steps must be in [1, 1000], got {request.steps}")
    for name, high in METHOD_OPTION_RANGES.items():
        value = getattr(request, name)
        # Written as a negated range test so that NaN (which compares false with everything) is refused too.
        if value is not None and not (0.0 < value <= high and math.isfinite(value)):
            raise InvalidArgument(f"options.{name} must be a finite number in (0, {high:g}], got {value}")
