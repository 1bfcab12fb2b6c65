"""The gate decision: which route answers a query, from which edit; and the answer as the edit's kind wants it.

An in-scope erase edit is answered by the refusal, on the route the gate chose (the answer names the edit); a query
the object gate let in (the edit's fact asked backwards) by the edit's subject, route reverse; every answer of a
namespace, on every route, goes through the namespace's regex patches (server/patches.py).

An in-scope answer from a fact reads up to `max_facts` facts (`related`): the edit that answers, the other edits the
gate let in, then, breadth first, edits whose subject is a read fact's new object. "Who is the head of state of the
country Ellie Kemper is a citizen of?" names only Ellie Kemper; her edit moves her to Croatia, and a second edit
about Croatia's head of state is what answers it (docs/BENCHMARKS.md, "Several edits per answer").

The gate decides before the model runs; state that edits add beside the weights (a GRACE entry) decides while it
runs. An answer such state changed (the model reports it with the answer's own rows) reports the parametric route
and that edit, whatever the gate chose (`acted_decision`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from time import perf_counter

from server.errors import EditNotFound, FailedPrecondition
from server.interfaces import Generator, Memory, StopCheck, TextSink
from server.patches import Rewriter, patches_of
from server.scope import ScopeCheck
from server.types import (
    Decision,
    Edit,
    EditKind,
    Generation,
    GenerationOptions,
    Judgement,
    Query,
    Route,
    TokenScores,
)

# Edits that state a fact with a new object: what a related fact is, and what a chain of them follows.
STATED_KINDS = frozenset({EditKind.MODIFY, EditKind.INSERT})


def refuses(route: Route, edit: Edit | None) -> bool:
    """An answer on `route` from `edit` is the refusal: an erase edit on an in-scope route."""
    return edit is not None and edit.kind is EditKind.ERASE and route is not Route.BASE


@dataclass(frozen=True)
class Router:
    scope: ScopeCheck
    memory: Memory
    generators: Mapping[Route, Generator]  # every route a request may take; BASE among them
    in_scope_route: Route  # where the gate sends in-scope queries
    threshold: float
    # True for edits written into the weights: in-scope queries on them are answered by the weights.
    baked: Callable[[Edit], bool] = lambda edit: False
    # With in_scope_route COUNTERFACTUAL: the counterfactual model's judgement of (edit, query). When it abstains
    # (the fact does not bear on the query) the base model answers; under min_confidence, fallback_route (IKE).
    # decide() calls it on its own (I/O) thread: the counterfactual model is a copy nobody writes, unlike the base
    # model the worker owns.
    judge: Callable[[Edit, str, bool, Sequence[Edit]], Judgement] | None = None  # (edit, query, with_conf., related)
    min_confidence: float = 0.0
    fallback_route: Route = Route.IKE
    refusal: Generator | None = None  # answers in-scope queries on erase edits (generators/stated.py)
    max_facts: int = 1  # facts an in-scope answer may read (`related`); 1: the answering edit alone

    def __post_init__(self) -> None:
        for route in (Route.BASE, self.in_scope_route):
            if route not in self.generators:
                raise ValueError(f"no generator for the {route.value} route")
        if self.judge is not None and self.fallback_route not in self.generators:
            raise ValueError(f"no generator for the {self.fallback_route.value} route, the counterfactual fallback")

    def decide(self, query: Query) -> Decision:
        if query.route is Route.BASE:
            return Decision(Route.BASE, None, 0.0)
        if query.route is not None:
            self.generator(query.route)  # fail early on a route this server lacks
            if query.edit_id:
                return Decision(query.route, self.memory.get(query.namespace, query.edit_id), 0.0)
        ranked, timings = self.scope.ranked(query.namespace, query.text)
        p, hit = ranked[0] if ranked else (0.0, None)
        if query.route is not None:  # a forced in-scope route takes the best edit alone, whatever its score
            if hit is None:
                raise FailedPrecondition(f"route {query.route.value} needs an edit; namespace has none that match")
            return Decision(query.route, hit.edit, p, timings, by_object=hit.by_object)
        if hit is None or p < self.threshold:
            return Decision(Route.BASE, None, p, timings)
        started = perf_counter()
        related: tuple[Edit, ...] = ()
        if self.baked(hit.edit):
            route = Route.PARAMETRIC
        elif hit.by_object and Route.REVERSE in self.generators:
            route = Route.REVERSE  # the object gate judged it the edit's fact asked backwards: the subject answers
        else:
            if hit.edit.kind is not EditKind.ERASE:  # an erase edit's answer is the refusal, whatever else holds
                also = [h.edit for score, h in ranked[1:] if score >= self.threshold and not h.by_object]
                related = self.related(query.namespace, query.text, hit.edit, also)
            route = self.in_scope(hit.edit, query.text, related)
        timings.gate_ms += (perf_counter() - started) * 1e3  # related facts and the counterfactual judgement
        if route is Route.BASE:  # the counterfactual model abstained: answered as out of scope
            return Decision(Route.BASE, None, p, timings, abstained=True)
        return Decision(route, hit.edit, p, timings, by_object=hit.by_object, related=related)

    def related(self, namespace: str, text: str, edit: Edit, also_in_scope: Sequence[Edit]) -> tuple[Edit, ...]:
        """Up to max_facts - 1 facts an answer from `edit` to `text` reads after it: `also_in_scope` (the other edits
        the gate let in, best first), then, breadth first, the live edits whose subject is a read fact's new object;
        where an object has more than there is room for, those whose prompt is closest to `text` (the relation it
        asks: "the head of state of" over "the capital of"). Only facts (modify and insert edits) the gate can see, and
        each sentence once (edits kept side by side may state the same fact)."""
        chosen = [edit]
        stated = {edit.statement()}  # the sentences read: keeps out an edit already read and a repeated fact alike

        def take(candidates: Sequence[Edit], ranked: bool = False) -> None:
            first: dict[str, Edit] = {}  # sentence → the first candidate stating it
            for candidate in candidates:
                if candidate.kind in STATED_KINDS and not self.scope.hidden(candidate):
                    first.setdefault(candidate.statement(), candidate)
            fresh = [c for sentence, c in first.items() if sentence not in stated]
            room = self.max_facts - len(chosen)
            if len(fresh) > room and not ranked:
                fresh = self.scope.closest(text, fresh)
            taken = fresh[:room]
            chosen.extend(taken)
            stated.update(c.statement() for c in taken)

        take(also_in_scope, ranked=True)  # the gate's order
        for fact in chosen:  # the list grows as facts are taken: breadth first
            if len(chosen) >= self.max_facts:
                break
            if fact.kind in STATED_KINDS:
                take(self.memory.facts_about(namespace, fact.target_new))
        return tuple(chosen[1:])

    def in_scope(self, edit: Edit, text: str, related: Sequence[Edit] = ()) -> Route:
        """The route for an in-scope query: the configured one, unless the counterfactual model abstains (base)
        or is unsure (the fallback); it judges the prompt it would answer, `related` facts included. Not asked about
        an erase edit: its abstention would hand the query to the base model, which may state the erased fact, while
        a gate false alarm only costs a refusal (on counterfact/val the judgement sent one paraphrase of 200 to the
        base model and kept no neighbour from a refusal)."""
        if self.in_scope_route is not Route.COUNTERFACTUAL or self.judge is None or edit.kind is EditKind.ERASE:
            return self.in_scope_route
        judgement = self.judge(edit, text, self.min_confidence > 0, related)
        if judgement.abstains:
            return Route.BASE
        return self.fallback_route if judgement.confidence < self.min_confidence else self.in_scope_route

    def generate(
        self,
        query: Query,
        decision: Decision,
        options: GenerationOptions,
        on_text: TextSink | None = None,
        should_stop: StopCheck | None = None,
    ) -> Generation:
        """The answer, through the namespace's regex patches: streamed text is held back only where a patch may
        still match (`Rewriter.stream`), so the pieces join to the returned text."""
        answerer = self.answerer(decision)
        rewriter = Rewriter(patches_of(self.memory.live_of_kind(query.namespace, EditKind.REGEX)))
        if not rewriter:
            return answerer.generate(query.text, decision.edit, options, on_text, should_stop, decision.related)
        stream = rewriter.stream(on_text or (lambda text: None))
        generation = answerer.generate(query.text, decision.edit, options, stream.feed, should_stop, decision.related)
        stream.close()
        return replace(generation, text=stream.text)

    def acted_decision(self, query: Query, decision: Decision, acted: Sequence[str]) -> Decision:
        """The decision once the model has run: when edits' state beside the weights acted on the query (`acted`,
        in the order they first did: Generation.acted, TokenScores.acted), the parametric route and the edit that
        answered: the decision's own edit if it acted, else the first that did. An edit of another namespace is not
        named (the state is shared by every namespace, the edit is not): the answer reports the parametric route
        with no edit."""
        if not acted:
            return decision
        if decision.edit is not None and decision.edit.id in acted:
            return replace(decision, route=Route.PARAMETRIC, related=())
        return replace(decision, route=Route.PARAMETRIC, edit=self._own_edit(query.namespace, acted), related=())

    def _own_edit(self, namespace: str, edit_ids: Sequence[str]) -> Edit | None:
        for edit_id in edit_ids:
            try:
                return self.memory.get(namespace, edit_id)
            except EditNotFound:  # another namespace's edit
                continue
        return None

    def score(self, query: Query, decision: Decision, target: str) -> TokenScores:
        """Teacher-forced: what the route's model would write (regex patches rewrite text, not scores)."""
        return self.answerer(decision).score(query.text, decision.edit, target, decision.related)

    def answerer(self, decision: Decision) -> Generator:
        """The decision's generator, or the refusal for an erase edit on an in-scope route."""
        if not refuses(decision.route, decision.edit):
            return self.generator(decision.route)
        if self.refusal is None:
            raise FailedPrecondition("this server has no refusal for erase edits")
        return self.refusal

    def generator(self, route: Route) -> Generator:
        try:
            return self.generators[route]
        except KeyError:
            available = ", ".join(r.value for r in self.generators)
            raise FailedPrecondition(f"this server has no {route.value} route; it has: {available}") from None
