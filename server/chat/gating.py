"""Which route answers a chat turn: the router's gate on the latest user turn, with the earlier turns as context.

The gate scores the latest user turn alone, as Generate scores a prompt. Only when that finds nothing in
scope, and the turn refers back ("Where is it now?"), is the previous exchange put in front of it and
gated again; that answer stands only if its edit's subject occurs in the previous exchange. Concatenating
context unconditionally would pull unrelated follow-ups ("What is the capital of France?" after a question
about an edited subject) into the edit's scope, and out-of-scope answers must stay the base model's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from server.chat.transcript import Turn, latest_user_turn, previous_exchange
from server.router import Router
from server.types import Decision, Query, Route, Timings

# Words by which a turn points back at something named earlier.
REFERRING = re.compile(r"\b(it|its|they|them|their|there|he|him|his|she|her|this|that|these|those)\b", re.I)


@dataclass(frozen=True)
class TurnDecision:
    decision: Decision
    gate_query: str  # the text the gate scored for this decision


def decide_turn(router: Router, namespace: str, turns: Sequence[Turn], route: Route | None = None,
                edit_id: str | None = None) -> TurnDecision:
    latest = latest_user_turn(turns)
    decision = router.decide(Query(namespace, latest, route, edit_id))
    if route is not None or decision.route is not Route.BASE:
        return TurnDecision(decision, latest)
    context = previous_exchange(turns)
    if not context or not REFERRING.search(latest):
        return TurnDecision(decision, latest)
    with_context = f"{context}\n{latest}"
    followup = router.decide(Query(namespace, with_context))
    edit = followup.edit
    if edit is None or edit.subject.lower() not in context.lower():
        return TurnDecision(replace(decision, timings=_sum(decision.timings, followup.timings)), latest)
    return TurnDecision(replace(followup, timings=_sum(decision.timings, followup.timings)), with_context)


def _sum(a: Timings, b: Timings) -> Timings:
    return Timings(embed_ms=a.embed_ms + b.embed_ms, search_ms=a.search_ms + b.search_ms, gate_ms=a.gate_ms + b.gate_ms)
