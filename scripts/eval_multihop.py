#!/usr/bin/env python
"""Multi-hop questions (MQuAKE) answered from the edits, in-process on the served model (issue 24 item 3).

Two measurements, both on an MQuAKE file (dev: report only, nothing is fitted on it):

- `ceiling`: the base model alone on the hops of `new_single_hops` that are not edits (their answers after the
  edits), greedy, as a cloze and as a question (server.multihop.base_prompt). A method that follows the edits
  exactly and asks the model the rest answers a case only if the model gets every such hop: the share of cases
  where it does bounds any such method. Per hop count.
- `follow`: the chain follower (server.multihop.ChainFollower): the served model plans the sub-questions from
  KnowEdit train demonstrations, each step is answered by an edit the gate finds for it or by the base model.
  The edits of every case read (`--cases`) are in memory at once, or one case's at a time (`--one-at-a-time`);
  the questions of the first `--limit` cases are asked. `--planner gold` replaces the model's plan by the case's
  own `new_single_hops` clozes, each earlier answer replaced by "#k": a diagnostic of the rest of the chain
  (it reads the dev record's decomposition), not a method; `--planner none` asks each question whole, as the
  pipeline answers a plain query today (the gate's route generates), for comparison.

    .venv/bin/python scripts/eval_multihop.py ceiling
    .venv/bin/python scripts/eval_multihop.py follow --limit 50
    .venv/bin/python scripts/eval_multihop.py follow --limit 50 --one-at-a-time
    .venv/bin/python scripts/eval_multihop.py demonstrations     # rewrites the server's planner shots from train

`demonstrations` writes the planner's shots (server.multihop.DEFAULT_DEMONSTRATIONS, which the server and `follow`
read) from the KnowEdit train files.

Prints one JSON object per case (with --verbose) and a summary JSON line last.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client import EditcacheClient, EditInput, HopResult, MultiHopResult  # noqa: E402
from client.launch import LocalServer  # noqa: E402
from editdata.metrics import exact_match, normalise, percentile  # noqa: E402
from editdata.paths import DATA_DIR  # noqa: E402
from server.app import build_counterfactual, build_gate, build_reverse, in_scope_routes  # noqa: E402
from server.config import Config  # noqa: E402
from server.generators.base import BaseGenerator  # noqa: E402
from server.generators.decoding import CausalLM  # noqa: E402
from server.generators.prompted import PromptedGenerator  # noqa: E402
from server.interfaces import Generator, StopCheck  # noqa: E402
from server.memory.ann import AnnSettings  # noqa: E402
from server.memory.edit_memory import EditMemory  # noqa: E402
from server.memory.embed import SentenceEncoder  # noqa: E402
from server.models.load import LoadedModel, load_model  # noqa: E402
from server.multihop import (  # noqa: E402
    DEFAULT_DEMONSTRATIONS,
    ChainAnswer,
    ChainFollower,
    FewShotPlanner,
    Hop,
    Planner,
    RouterSteps,
    as_question,
    base_prompt,
    knowedit_demonstrations,
    load_demonstrations,
    save_demonstrations,
)
from server.router import Router  # noqa: E402
from server.scope import ScopeCheck  # noqa: E402
from server.types import EditSpec, GenerationOptions, Query, Route  # noqa: E402

MQUAKE_DEV = DATA_DIR / "mquake" / "dev.json"
KNOWEDIT_TRAIN = tuple(DATA_DIR / "knowedit" / f for f in ("wiki_counterfact_train.json", "wiki_recent_train.json"))
ANSWER_TOKENS = 12  # a short answer: the longest MQuAKE answers ("Kolinda Grabar-Kitarović") fit


@dataclass(frozen=True)
class SingleHop:
    cloze: str
    question: str
    answers: tuple[str, ...]  # the answer after the edits, then its aliases
    edited: bool  # the hop is one of the case's edits


def hops_of(record: dict) -> list[SingleHop]:
    """The record's `new_single_hops`, each marked edited when its cloze is one of the record's rewrites."""
    edited = {normalise(rw["prompt"].replace("{}", rw["subject"])) for rw in record["requested_rewrite"]}
    return [SingleHop(h["cloze"], h["question"], (h["answer"], *h.get("answer_alias", [])),
                      normalise(h["cloze"]) in edited) for h in record["new_single_hops"]]


def specs_of(record: dict) -> list[EditSpec]:
    return [EditSpec(rw["subject"], rw["prompt"].replace("{}", rw["subject"]), rw["target_new"]["str"],
                     rw["target_true"]["str"]) for rw in record["requested_rewrite"]]


def answers_of(record: dict) -> tuple[str, ...]:
    return (record["new_answer"], *record.get("new_answer_alias", []))


# --- ceiling ------------------------------------------------------------------------------------------------


def greedy_batch(loaded: LoadedModel, prompts: Sequence[str], max_new_tokens: int, batch: int = 16) -> list[str]:
    """Greedy continuations, in batches left-padded so every row's last prompt token is at the end."""
    tokenizer, model = loaded.tokenizer, loaded.model
    tokenizer.padding_side = "left"
    out: list[str] = []
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start : start + batch])
        inputs = tokenizer(chunk, return_tensors="pt", padding=True)
        with torch.inference_mode():
            ids = model.generate(  # type: ignore[operator]  # transformers types it loosely
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            )  # (batch, prompt + new)
        out.extend(tokenizer.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def ceiling(args: argparse.Namespace) -> dict:
    records = json.loads(args.data.read_text())[: args.limit]
    loaded = load_model("gemma-3-270m", Config().cache_dir, args.torch_threads)
    unedited = sorted({(h.cloze, h.question, h.answers) for r in records for h in hops_of(r) if not h.edited})
    forms = {"cloze": [base_prompt(c) for c, _, _ in unedited], "question": [base_prompt(q) for _, q, _ in unedited]}
    correct: dict[str, dict[str, bool]] = {}
    for form, prompts in forms.items():
        texts = greedy_batch(loaded, prompts, ANSWER_TOKENS)
        correct[form] = {c: exact_match(t.strip().split("\n", 1)[0], a)
                         for (c, _, a), t in zip(unedited, texts, strict=True)}
        if args.verbose:
            for (c, _, a), t in zip(unedited, texts, strict=True):
                print(json.dumps({"form": form, "cloze": c, "answer": a[0], "text": t, "em": correct[form][c]}))
    by_hops: dict[str, dict[str, object]] = {}
    for n in sorted({len(r["new_single_hops"]) for r in records}) + ["all"]:
        group = [r for r in records if n == "all" or len(r["new_single_hops"]) == n]
        hops = [h for r in group for h in hops_of(r) if not h.edited]
        row: dict[str, object] = {"cases": len(group), "unedited_hops": len(hops),
                                  "cases_without_unedited_hop": sum(all(h.edited for h in hops_of(r)) for r in group)}
        for form in forms:
            row[f"hop_em_{form}"] = round(sum(correct[form][h.cloze] for h in hops) / max(len(hops), 1), 3)
            row[f"case_ceiling_{form}"] = round(sum(all(correct[form][h.cloze] for h in hops_of(r) if not h.edited)
                                                    for r in group) / len(group), 3)
        row["case_ceiling_either"] = round(sum(all(correct["cloze"][h.cloze] or correct["question"][h.cloze]
                                                   for h in hops_of(r) if not h.edited) for r in group) / len(group), 3)
        by_hops[str(n)] = row
    return {"mode": "ceiling", "data": str(args.data), "cases": len(records), "unique_unedited_hops": len(unedited),
            "by_hops": by_hops}


# --- follow -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldPlanner:
    """The record's own decomposition (a diagnostic: it reads the dev record): its `new_single_hops` clozes, each
    earlier hop's answer written "#k"."""

    plans: dict[str, list[str]]

    @staticmethod
    def of(records: Sequence[dict]) -> GoldPlanner:
        plans: dict[str, list[str]] = {}
        for record in records:
            steps: list[str] = []
            for hop in record["new_single_hops"]:
                step = hop["cloze"]  # the form the base model answers better (`ceiling`: 0.285 against 0.158 EM)
                for k, earlier in enumerate(record["new_single_hops"][: len(steps)], 1):
                    step = step.replace(earlier["answer"], f"#{k}")
                steps.append(step)
            for question in record["questions"]:
                plans[question] = steps
        return GoldPlanner(plans)

    def plan(self, question: str, should_stop: StopCheck | None = None) -> list[str]:
        return self.plans[question]


@dataclass(frozen=True)
class WholeQuestion:
    """No split: the question is its own only step (with `PipelineAnswers`, the pipeline as it answers today)."""

    def plan(self, question: str, should_stop: StopCheck | None = None) -> list[str]:
        return [question]


@dataclass(frozen=True)
class PipelineAnswers:
    """A step answered as the server answers a plain query: the gate's route generates (the counterfactual model
    renders an in-scope edit's answer), with no cut to a short answer."""

    router: Router
    options: GenerationOptions

    def answer(self, namespace: str, question: str, should_stop: StopCheck | None = None) -> Hop:
        query = Query(namespace, question)
        decision = self.router.decide(query)
        text = self.router.generate(query, decision, self.options).text
        return Hop(question, text.strip(), decision.route, decision.edit, decision.related)


def build_router(config: Config, loaded: LoadedModel, lm: CausalLM) -> tuple[Router, ScopeCheck]:
    """The server's router as server/app.py builds it (reverse route included), without parametric state or IKE
    (the counterfactual model's fallback is the prompt route; it is never taken at the default min confidence 0)."""
    encoder = SentenceEncoder(config.encoder)
    memory = EditMemory(config.data_dir, encoder, config.encoder, config.limits.max_edits_per_namespace,
                        AnnSettings(threshold=config.approximate_index_threshold))
    gate, threshold, degraded = build_gate(config, encoder)
    if degraded:
        print(f"warning: {degraded}", file=sys.stderr)
    counterfactual, off = build_counterfactual(config, loaded)
    if counterfactual is None:
        raise SystemExit(f"no counterfactual model: {off}")
    base = BaseGenerator(lm)
    generators: dict[Route, Generator] = {Route.BASE: base, Route.PROMPT: PromptedGenerator(lm),
                                          Route.COUNTERFACTUAL: counterfactual}
    if (reverse := build_reverse(config, gate, loaded.tokenizer)) is not None:
        generators[Route.REVERSE] = reverse
    in_scope, fallback = in_scope_routes(config.in_scope_route, generators)
    scope = ScopeCheck(encoder, memory, gate, config.top_k, threshold=threshold)
    router = Router(scope=scope, memory=memory, generators=generators, in_scope_route=in_scope, threshold=threshold,
                    judge=counterfactual.judge, min_confidence=config.counterfactual_min_confidence,
                    fallback_route=fallback, max_facts=config.max_facts)
    return router, scope


def follow_through_server(args: argparse.Namespace, asked: Sequence[dict], in_memory: Sequence[dict]) -> list[dict]:
    """As `follow`, through a real server (AnswerMultiHop): the model planner is the server's own (no steps sent);
    gold sends the record's decomposition as the steps. Per-request latency goes into each phrasing."""
    gold = GoldPlanner.of(asked) if args.planner == "gold" else None
    results = []
    with tempfile.TemporaryDirectory(prefix="multihop-server-") as data_dir:
        server = LocalServer(args.model, Path(data_dir), f"--torch-threads={args.torch_threads}")
        server.start(timeout_s=900)
        try:
            with EditcacheClient(server.addr, namespace="mh", timeout_s=600) as client:
                if not args.one_at_a_time:
                    client.add_edits([edit_input(s) for r in in_memory for s in specs_of(r)], skip_supersede=True)
                for index, record in enumerate(asked):
                    namespace = f"case-{index}" if args.one_at_a_time else "mh"
                    if args.one_at_a_time:
                        client.add_edits([edit_input(s) for s in specs_of(record)], namespace=namespace,
                                         skip_supersede=True)
                    chains = [client.answer_multihop(q, steps=gold.plan(q) if gold else (), namespace=namespace)
                              for q in record["questions"]]
                    results.append(_case_result(record, chains))
                    for phrasing, chain in zip(results[-1]["phrasings"], chains, strict=True):
                        phrasing["total_ms"] = chain.timings_ms["total"]
                    if args.verbose:
                        print(json.dumps(results[-1]), flush=True)
                    print(f"\r{index + 1}/{len(asked)}", end="", file=sys.stderr, flush=True)
        finally:
            server.stop()
    print(file=sys.stderr)
    return results


def edit_input(spec: EditSpec) -> EditInput:
    return EditInput(spec.subject, spec.prompt, spec.target_new, spec.target_true or None)


def follow(args: argparse.Namespace) -> dict:
    records = json.loads(args.data.read_text())
    # MQuAKE dev is sorted by hop count (its first 136 records are all 2-hop): --seed asks a mixed sample.
    order = list(range(len(records)))
    if args.seed is not None:
        random.Random(args.seed).shuffle(order)
    asked = [records[i] for i in order[: args.limit]]
    in_memory = asked if args.one_at_a_time else records[: args.cases]
    edits = sum(len(specs_of(r)) for r in in_memory)
    summary = {"mode": "follow", "planner": args.planner, "server": args.server, "data": str(args.data),
               "seed": args.seed, "asked": len(asked), "max_facts": None if args.server else args.max_facts,
               "edits_in_memory": "one case at a time" if args.one_at_a_time else edits,
               "cases_in_memory": 1 if args.one_at_a_time else len(in_memory)}
    if args.server:
        if args.planner == "none":
            raise SystemExit("--planner none answers through the router in process; it has no --server form")
        results = follow_through_server(args, asked, in_memory)
        latencies = [p["total_ms"] for r in results for p in r["phrasings"]]
        request_ms = {f"p{q}": round(percentile(latencies, q)) for q in (50, 90)} if latencies else {}
        return {**summary, **summarize(results), "request_ms": request_ms}
    with tempfile.TemporaryDirectory(prefix="multihop-") as data_dir:
        config = Config(data_dir=Path(data_dir), torch_threads=args.torch_threads, max_facts=args.max_facts)
        loaded = load_model(config.model, config.cache_dir, args.torch_threads)
        lm = CausalLM(loaded.model, loaded.tokenizer)
        router, scope = build_router(config, loaded, lm)
        options = GenerationOptions(ANSWER_TOKENS, stop=("\n",))
        steps: RouterSteps | PipelineAnswers = RouterSteps(router, options)
        planner: Planner
        if args.planner == "none":
            planner, steps = WholeQuestion(), PipelineAnswers(router, options)
        elif args.planner == "gold":
            planner = GoldPlanner.of(asked)
        else:
            planner = FewShotPlanner(lm, load_demonstrations(args.demonstrations))
        follower = ChainFollower(planner, steps, args.max_hops)
        if not args.one_at_a_time:
            scope.add("mh", [s for r in in_memory for s in specs_of(r)], supersede=False)
        results = []
        for index, record in enumerate(asked):
            namespace = f"case-{index}" if args.one_at_a_time else "mh"
            if args.one_at_a_time:
                scope.add(namespace, specs_of(record), supersede=False)
            chains = [follower.follow(namespace, q) for q in record["questions"]]
            results.append(_case_result(record, chains))
            if args.verbose:
                print(json.dumps(results[-1]), flush=True)
            print(f"\r{index + 1}/{len(asked)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    return {**summary, **summarize(results)}


def _case_result(record: dict, chains: Sequence[ChainAnswer | MultiHopResult]) -> dict:
    answers = answers_of(record)
    edited = [h.edited for h in hops_of(record)]
    return {
        "case_id": record["case_id"], "hops": len(edited), "edited": edited,
        "phrasings": [{"question": q, "plan": list(c.plan), "answer": c.answer, "em": exact_match(c.answer, answers),
                       "steps": [_step(h) for h in c.hops], "edits_used": list(_edits_used(c))}
                      for q, c in zip(record["questions"], chains, strict=True)],
        "answer": answers[0],
    }


def _step(hop: Hop | HopResult) -> dict:
    if isinstance(hop, HopResult):  # through the server: the edit by id
        return {"q": hop.question, "a": hop.answer, "route": hop.route, "edit": hop.edit_id}
    return {"q": hop.question, "a": hop.answer, "route": hop.route.value,
            "edit": None if hop.edit is None else hop.edit.subject, "related": [e.subject for e in hop.related]}


def _edits_used(chain: ChainAnswer | MultiHopResult) -> tuple[str, ...]:
    return chain.edit_ids if isinstance(chain, MultiHopResult) else chain.edits_used


def summarize(results: Sequence[dict]) -> dict:
    """MQuAKE's multi-hop accuracy (a case counts when any phrasing is right), each phrasing alone, per hop count;
    and how the steps were answered, by the hop's position and whether the dataset's hop there is an edit."""
    def rate(rows: Sequence[dict], phrasing: int | None) -> float:
        hits = [any(p["em"] for p in r["phrasings"]) if phrasing is None else r["phrasings"][phrasing]["em"]
                for r in rows if phrasing is None or phrasing < len(r["phrasings"])]
        return round(sum(hits) / max(len(hits), 1), 3)

    by_hops: dict[str, dict] = {}
    for n in sorted({r["hops"] for r in results}):
        rows = [r for r in results if r["hops"] == n]
        by_hops[str(n)] = {"cases": len(rows), "any": rate(rows, None)}
    routes: Counter[str] = Counter()
    plan_lengths: dict[str, Counter[int]] = defaultdict(Counter)
    for r in results:
        for p in r["phrasings"]:
            plan_lengths[str(r["hops"])][len(p["plan"])] += 1
            for i, step in enumerate(p["steps"]):
                truth = "edit hop" if i < len(r["edited"]) and r["edited"][i] else (
                    "model hop" if i < len(r["edited"]) else "extra step")
                routes[f"step {i + 1} ({truth}): {'edit' if step['edit'] else 'base'}"] += 1
    return {"multi_hop_any": rate(results, None),
            "per_phrasing": [rate(results, i) for i in range(3)],
            "by_hops": by_hops,
            "step_routes": dict(sorted(routes.items())),
            "plan_lengths_by_hops": {k: dict(sorted(v.items())) for k, v in sorted(plan_lengths.items())}}


def demonstrations(args: argparse.Namespace) -> dict:
    train = [r for path in KNOWEDIT_TRAIN for r in json.loads(path.read_text())]
    shots = knowedit_demonstrations(train, args.shots)
    if args.question_form:
        shots = tuple(as_question(d) for d in shots)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_demonstrations(args.out, shots)
    return {"mode": "demonstrations", "out": str(args.out), "demonstrations": len(shots)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("demonstrations")
    d.add_argument("--shots", type=int, default=6, help="KnowEdit train demonstrations the planner sees")
    d.add_argument("--out", type=Path, default=DEFAULT_DEMONSTRATIONS)
    d.add_argument("--question-form", action="store_true",
                   help="ask each shot's question as a question (its steps stay clozes)")
    for mode in ("ceiling", "follow"):
        p = sub.add_parser(mode)
        p.add_argument("--data", type=Path, default=MQUAKE_DEV)
        p.add_argument("--limit", type=int, help="the first N records (follow: whose questions are asked)")
        p.add_argument("--torch-threads", type=int, default=1)
        p.add_argument("--verbose", action="store_true", help="one JSON line per hop (ceiling) or case (follow)")
    f = sub.choices["follow"]
    f.add_argument("--cases", type=int, help="records whose edits are in memory at once (default: all)")
    f.add_argument("--seed", type=int, help="ask the --limit records of a shuffle with this seed (edits: as before)")
    f.add_argument("--one-at-a-time", action="store_true", help="only the asked case's edits in memory")
    f.add_argument("--planner", choices=("model", "gold", "none"), default="model",
                   help="model: the served model plans from KnowEdit train shots; gold: the record's own hops "
                   "(diagnostic); none: no split, the pipeline as it answers a plain query today")
    f.add_argument("--demonstrations", type=Path, default=DEFAULT_DEMONSTRATIONS,
                   help="the planner's shots (default: the server's)")
    f.add_argument("--max-hops", type=int, default=4, help="in process only: a server cuts at its limits.max_hops")
    f.add_argument("--max-facts", type=int, default=Config.max_facts,
                   help="in process only: facts an in-scope answer may read (1: the answering edit alone)")
    f.add_argument("--server", action="store_true",
                   help="through a real server's AnswerMultiHop (its own planner, or the gold steps sent), timed")
    f.add_argument("--model", default="gemma-3-270m", help="with --server: the model the server serves")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    summary = {"ceiling": ceiling, "follow": follow, "demonstrations": demonstrations}[args.mode](args)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
