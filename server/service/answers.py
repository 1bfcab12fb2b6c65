"""Answering: a prompt or a conversation through the gate to the model, scoring a target on the same route, and a
multi-hop question followed edit by edit (server/multihop.py).

Each use case validates its input, decides on an I/O thread, runs the model on the model thread and returns
the core's records with timings (the decision as it turned out once the model ran: `Router.observed`); one log
line per answer.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from time import perf_counter

from server import metrics
from server.chat.gating import decide_turn
from server.chat.transcript import ConversationFormat, ReplyFilter, Turn
from server.config import Config
from server.interfaces import StopCheck, TextSink
from server.multihop import ChainAnswer, ChainFollower, GivenPlan, Planner, StepAnswerer, check_plan
from server.router import Router
from server.service.concurrency import off_loop
from server.types import Answer, Decision, GenerationOptions, Query, Route, Timings, TokenScores
from server.validation import (
    check_answer_edit,
    check_generation_options,
    check_namespace,
    check_text,
    check_turns,
)
from server.worker import ModelWorker

log = logging.getLogger(__name__)


def never() -> bool:
    return False


@dataclass(frozen=True)
class ChatQuery:
    namespace: str
    turns: tuple[Turn, ...]
    route: Route | None = None  # None: the gate decides
    edit_id: str | None = None  # with a forced in-scope route: the edit to answer from


@dataclass(frozen=True)
class ChatAnswer:
    reply: str  # the assistant's turn, as the user sees it
    answer: Answer  # the raw continuation and how it was produced
    prompt: str  # the conversation as the model read it
    gate_query: str  # the text the gate scored


@dataclass(frozen=True)
class ChainQuery:
    namespace: str
    question: str
    steps: tuple[str, ...] = ()  # the caller's plan ("#k": step k's answer); empty: the server's planner writes it


@dataclass(frozen=True)
class FollowedChain:
    chain: ChainAnswer
    timings: Timings  # queue_ms and total_ms: the steps' own gate times are inside the chain's run


@dataclass(frozen=True)
class Scored:
    scores: TokenScores
    decision: Decision
    timings: Timings


class Answers:
    def __init__(
        self, config: Config, router: Router, worker: ModelWorker, io: Executor, conversation: ConversationFormat,
        planner: Planner, steps: StepAnswerer,
    ) -> None:
        self._config = config
        self._router = router
        self._worker = worker
        self._io = io
        self._conversation = conversation
        self._planner = planner  # writes a multi-hop question's steps when the caller gives none
        self._steps = steps  # answers one step: from the edit in scope of it, else the base model

    async def answer(
        self, query: Query, options: GenerationOptions, on_text: TextSink | None = None, should_stop: StopCheck = never
    ) -> Answer:
        """`options.max_new_tokens` 0 takes the server's default."""
        started = perf_counter()
        options = self._checked_options(options)
        query = self._checked_query(query)
        decision = await off_loop(self._io, self._router.decide, query)
        answer = await self._generate(query, decision, options, on_text, should_stop, started)
        _log_answer("request", query.namespace, answer)
        _observe("generate", answer.decision, answer.timings, gated=query.route is None)
        return answer

    async def score(self, query: Query, target: str, should_stop: StopCheck = never) -> Scored:
        """Teacher-forced log-probabilities of `target` after the prompt, on the route the gate picks."""
        started = perf_counter()
        query = self._checked_query(query)
        target = check_text("target", target, self._config.limits.max_text_chars)
        decision = await off_loop(self._io, self._router.decide, query)
        before_model = perf_counter()
        scores, queue_ms = await self._worker.run(lambda: self._router.score(query, decision, target), should_stop)
        answered = self._router.acted_decision(query, decision, scores.acted)
        scored = Scored(scores, answered, _timings(answered, queue_ms, before_model, started))
        _observe("score", answered, scored.timings, gated=query.route is None)
        return scored

    async def chat(
        self, chat: ChatQuery, options: GenerationOptions, on_text: TextSink | None = None,
        should_stop: StopCheck = never,
    ) -> ChatAnswer:
        """The assistant's reply to the latest user turn; the gate reads that turn (and what it refers back to)."""
        started = perf_counter()
        options = self._checked_options(options)
        namespace = check_namespace(chat.namespace)
        check_turns(chat.turns, self._config.limits)
        edit_id = check_answer_edit(chat.route, chat.edit_id or "")
        prompt = self._conversation.render(chat.turns)
        turn = await off_loop(self._io, decide_turn, self._router, namespace, chat.turns, chat.route, edit_id)
        # Every route continues the rendered conversation; in-scope routes add the edit as they do for answer().
        query = Query(namespace, prompt.text, chat.route, edit_id)
        reply = ReplyFilter(prompt.turn_ends, on_text)
        # The format's turn ends stop generation (a base model would go on to write the user's next turn).
        options = replace(options, stop=(*options.stop, *prompt.turn_ends))
        answer = await self._generate(query, turn.decision, options, reply.feed, should_stop, started)
        _log_answer("chat", namespace, answer, f" turns={len(chat.turns)}")
        _observe("chat", answer.decision, answer.timings, gated=chat.route is None)
        return ChatAnswer(reply.reply(answer.generation.text), answer, prompt.text, turn.gate_query)

    async def follow_chain(self, query: ChainQuery, should_stop: StopCheck = never) -> FollowedChain:
        """The question answered step by step: each step by the edit in scope of it (its new object, exactly) or by
        the base model, each answer filling the later steps that refer to it."""
        started = perf_counter()
        namespace = check_namespace(query.namespace)
        limits = self._config.limits
        # One question, not a document: with the planner's demonstrations it must fit the model's prompt.
        question = check_text("question", query.question, limits.max_text_chars)
        steps = tuple(check_text(f"steps[{i}]", s, limits.max_text_chars) for i, s in enumerate(query.steps))
        check_plan(steps, limits.max_hops)
        planner = GivenPlan(steps) if steps else self._planner
        follower = ChainFollower(planner, self._steps, limits.max_hops, limits.max_prompt_chars)
        # With batching the steps' decoding joins the running batch; without, the chain has the model thread to
        # itself, gate included. Either way a caller that goes away stops it between steps.
        chain, queue_ms = await self._worker.run_decoding(
            lambda: follower.follow(namespace, question, should_stop), should_stop
        )
        timings = Timings(queue_ms=queue_ms, total_ms=(perf_counter() - started) * 1e3)
        metrics.observe_chain([h.route.value for h in chain.hops], queue_ms)
        log.info(
            "multihop %s namespace=%s planned=%s steps=%d routes=%s edits=%s total_ms=%.0f", uuid.uuid4().hex[:8],
            namespace, "caller" if steps else "server", len(chain.hops), ",".join(h.route.value for h in chain.hops),
            ",".join(chain.edits_used) or "-", timings.total_ms,
        )
        return FollowedChain(chain, timings)

    async def _generate(
        self, query: Query, decision: Decision, options: GenerationOptions, on_text: TextSink | None,
        should_stop: StopCheck, started: float,
    ) -> Answer:
        before_model = perf_counter()
        generation, queue_ms = await self._worker.run_decoding(
            lambda: self._router.generate(query, decision, options, on_text, should_stop), should_stop
        )
        answered = self._router.acted_decision(query, decision, generation.acted)
        return Answer(generation, answered, _timings(answered, queue_ms + generation.queue_ms, before_model, started))

    def _checked_query(self, query: Query) -> Query:
        return Query(
            namespace=check_namespace(query.namespace),
            text=check_text("prompt", query.text, self._config.limits.max_prompt_chars),
            route=query.route,
            edit_id=check_answer_edit(query.route, query.edit_id or ""),
        )

    def _checked_options(self, options: GenerationOptions) -> GenerationOptions:
        options = replace(options, max_new_tokens=options.max_new_tokens or self._config.default_max_new_tokens)
        check_generation_options(options, self._config.limits)
        return options


def _timings(decision: Decision, queue_ms: float, before_model: float, started: float) -> Timings:
    """The decision's embed, search and gate times, with the queue, generation and total times since `started`."""
    now = perf_counter()
    return replace(
        decision.timings, queue_ms=queue_ms, generate_ms=(now - before_model) * 1e3 - queue_ms,
        total_ms=(now - started) * 1e3,
    )


def _observe(kind: str, decision: Decision, timings: Timings, gated: bool) -> None:
    """The answer's route, gate score and timings into the metrics, once for every front end."""
    metrics.observe_answer(
        kind, decision.route.value, decision.abstained, gated, decision.score, timings.embed_ms, timings.search_ms,
        timings.gate_ms, timings.queue_ms, timings.generate_ms,
    )


def _log_answer(kind: str, namespace: str, answer: Answer, extra: str = "") -> None:
    decision = answer.decision
    log.info(
        "%s %s namespace=%s%s route=%s edit=%s score=%.3f tokens=%d total_ms=%.0f", kind, uuid.uuid4().hex[:8],
        namespace, extra, decision.route_label, decision.edit.id if decision.edit else "-", decision.score,
        len(answer.generation.token_ids), answer.timings.total_ms,
    )
