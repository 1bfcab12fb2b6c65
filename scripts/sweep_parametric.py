#!/usr/bin/env python
"""Edit quality per layer (or per statistics sample count) for a parametric method, in process.

Edits CounterFact cases of a TRAIN file on the loaded model (ROME and FT one at a time, MEMIT and
AlphaEdit all at once, or `--batch` per application), scores them teacher-forced and by greedy exact
match, rolls them back, and prints one JSON line per setting (and per value scale). Used to choose
the defaults (docs/BENCHMARKS.md); never run it on validation or dev files.

    scripts/sweep_parametric.py --layers 2 4 6 8 10 12 --cases 10
    scripts/sweep_parametric.py --layers 6 --stats-tokens 2000 20000 100000 --cases 10
    scripts/sweep_parametric.py --layers 12 --other-wordings 0 4 --cases 30
    scripts/sweep_parametric.py --method memit --layers 8 9 10 11 12 --cases 20   # 20 edits at once
    scripts/sweep_parametric.py --method alphaedit --layers 8 9 10 11 12 --cases 20 --null-space-cutoff 1e-3 1e-2
    scripts/sweep_parametric.py --layers 12 --cases 30 --delta-scales 0.25 0.5 0.75 1 --random-value
    scripts/sweep_parametric.py --method grace --layers 12 --cases 10 --deferral-radius 0.25 0.5 1
    scripts/sweep_parametric.py --method tpatcher --layers 17 --cases 8 --offset 20 --memory-subjects 16 64 128
    scripts/sweep_parametric.py --method kn --layers 14 15 16 17 --span --batch 1 --cases 6 --delta-scales 0.5 1 2
    scripts/sweep_parametric.py --method alphaedit --layers 12 --batch 1 --cases 20 --continuation-tokens 0 8

Other wordings are mined from the same file without the swept cases, so no case sees its own paraphrase; so is
T-Patcher's (and CaliNET's) table of memory subjects, so no case's own neighbours are drawn from its own records.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from client.evaluation.runner import EXTRA_NEW_TOKENS, FLUENCY_NEW_TOKENS  # noqa: E402
from editdata.metrics import agreement, exact_match, ngram_entropy, token_accuracy  # noqa: E402
from editdata.paths import COUNTERFACT_TRAIN  # noqa: E402
from server.config import default_cache_dir  # noqa: E402
from server.generators.decoding import CausalLM  # noqa: E402
from server.models.load import load_model  # noqa: E402
from server.parametric.alphaedit import AlphaEdit  # noqa: E402
from server.parametric.deltas import WeightDelta  # noqa: E402
from server.parametric.editor import MethodRequest, ParametricEditor, ParametricSettings  # noqa: E402
from server.parametric.ledger import Ledger  # noqa: E402
from server.parametric.memory_subjects import SubjectTable  # noqa: E402
from server.parametric.method import Change  # noqa: E402
from server.parametric.registry import METHODS  # noqa: E402
from server.parametric.targets import finish  # noqa: E402
from server.parametric.tpatcher import TPatcher  # noqa: E402
from server.parametric.wordings import Wordings  # noqa: E402
from server.types import Edit, GenerationOptions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--data", type=Path, default=COUNTERFACT_TRAIN)
    parser.add_argument("--method", default="rome", choices=sorted(METHODS))
    parser.add_argument("--layers", type=int, nargs="+", required=True,
                        help="layers to sweep; for MEMIT and AlphaEdit, the one range the cases are spread over")
    parser.add_argument("--mom2-weight", type=float, nargs="+", default=[None],
                        help="MEMIT's λ values to sweep (default: the method's)")
    parser.add_argument("--null-space-cutoff", type=float, nargs="+", default=[None],
                        help="AlphaEdit's eigenvalue cut-offs (shares of C's largest) to sweep (default: the method's)")
    parser.add_argument("--memory-subjects", type=int, nargs="+", default=[None],
                        help="T-Patcher/CaliNET: other subjects the memory asks the edit's questions about; "
                             "AlphaEdit: subjects whose keys it preserves (0: none)")
    parser.add_argument("--same-answer-subjects", type=int, nargs="+", default=[None],
                        help="tpatcher, calinet: memory subjects that share the edit's old answer")
    parser.add_argument("--own-subject-questions", type=int, nargs="+", default=[None],
                        help="tpatcher, calinet: other questions of the table the memory asks the edit's subject")
    parser.add_argument("--own-subject-tokens", type=int, nargs="+", default=[None],
                        help="tpatcher, calinet: greedy tokens continuing the memory's prompts about the subject")
    parser.add_argument("--fire-at", nargs="+", default=[None], choices=["last", "subject"],
                        help="T-Patcher/CaliNET: where the neurons must fire on the edit's prompts")
    parser.add_argument("--deferral-radius", type=float, nargs="+", default=[None],
                        help="GRACE's ε values to sweep, shares of the key's norm (default: the method's)")
    parser.add_argument("--continuation-tokens", type=int, nargs="+", default=[None],
                        help="tokens of the unedited continuation after the answer the value holds (ROME, MEMIT, "
                             "AlphaEdit; 0: none; default: the method's)")
    parser.add_argument("--continuation-factor", type=float, nargs="+", default=[None],
                        help="weights of that term to sweep (default: the method's)")
    parser.add_argument("--stats-tokens", type=int, nargs="+", default=[20_000])
    parser.add_argument("--prefixes", type=int, default=5, help="generated context prefixes (besides none)")
    parser.add_argument("--other-wordings", type=int, nargs="+", default=[4],
                        help="other wordings of each prompt the value is optimised on (0: none)")
    parser.add_argument("--batch", type=int, default=None,
                        help="cases written in one application (default: ROME/FT one, MEMIT all)")
    parser.add_argument("--delta-scales", type=float, nargs="+", default=[1.0],
                        help="also score each application's deltas scaled by these factors (the value's size)")
    parser.add_argument("--random-value", action="store_true",
                        help="also score a rank-one delta of the same key and size whose value points at random")
    parser.add_argument("--span", action="store_true",
                        help="one-at-a-time methods get all --layers as one span (KN), not one layer per setting")
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the method's)")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--offset", type=int, default=0, help="first case of the file to use")
    args = parser.parse_args()
    if "val" in args.data.name or "dev" in args.data.name:
        parser.error("choose settings on a train file, not on validation or dev data")

    loaded = load_model(args.model, default_cache_dir())
    lm = CausalLM(loaded.model, loaded.tokenizer)
    records = json.loads(args.data.read_text())
    cases = records[args.offset : args.offset + args.cases]
    baseline = {c["locality_prompt"]: locality_outputs(lm, c) for c in cases}
    rest = records[: args.offset] + records[args.offset + args.cases :]
    wordings = Wordings.from_records(rest)
    method = METHODS[args.method]
    if isinstance(method, TPatcher | AlphaEdit):  # CaliNET too; the shipped table holds the swept cases' subjects
        method = replace(method, subjects=SubjectTable.from_records(rest))
    batched = METHODS[args.method].batched
    spans = [tuple(args.layers)] if batched or args.span else [(layer,) for layer in args.layers]
    for (tokens, layers, others, mom2, cutoff, radius, held, held_factor, subjects, fire_at, alike, own_questions,
         own_tokens) in itertools.product(
        args.stats_tokens, spans, args.other_wordings, args.mom2_weight, args.null_space_cutoff, args.deferral_radius,
        args.continuation_tokens, args.continuation_factor, args.memory_subjects, args.fire_at,
        args.same_answer_subjects, args.own_subject_questions, args.own_subject_tokens,
    ):
        own = {k: v for k, v in (("own_subject_questions", own_questions), ("own_subject_tokens", own_tokens))
               if v is not None}
        if own and fire_at == "subject":
            parser.error("--own-subject-* need the neurons to fire at the last token, not --fire-at subject")
        if isinstance(method, TPatcher):
            options = method.options
            options = options if subjects is None else replace(options, memory_subjects=subjects)
            options = options if fire_at is None else replace(options, fire_at=fire_at)
            options = options if alike is None else replace(options, same_answer_subjects=alike)
            options = replace(options, **own)
            METHODS[args.method] = replace(method, options=options)
        elif isinstance(method, AlphaEdit) and fire_at is None and alike is None and not own:
            METHODS[args.method] = replace(method, **({} if subjects is None else {"neighbour_subjects": subjects}))
        elif subjects is not None or fire_at is not None or alike is not None or own:
            parser.error("--memory-subjects (alphaedit: its neighbour subjects), --same-answer-subjects, --fire-at and "
                         "--own-subject-* are options of tpatcher and calinet")
        # T-Patcher's and CaliNET's own-subject memory as trained (their defaults where no flag is given)
        patched = METHODS[args.method]
        used = ({k: getattr(patched.options, k) for k in ("own_subject_questions", "own_subject_tokens")}
                if isinstance(patched, TPatcher) else {})
        with tempfile.TemporaryDirectory() as scratch:  # the server's default statistics text, whatever --data is
            settings = ParametricSettings(default_cache_dir(), (COUNTERFACT_TRAIN,), tokens, model_samples=64,
                                          prefixes=args.prefixes, wordings=wordings, other_wordings=others)
            editor = ParametricEditor(loaded.model, loaded.tokenizer, loaded.arch,
                                      Ledger(Path(scratch) / "p.sqlite", "sweep"), loaded.fingerprint.current,
                                      settings)
            setting = (f"layers {layers}, C from {tokens} tokens, {others} other wordings"
                       + ("" if mom2 is None else f", λ {mom2:g}")
                       + ("" if cutoff is None else f", cut-off {cutoff:g}")
                       + ("" if radius is None else f", ε {radius:g}·‖k‖")
                       + ("" if subjects is None else f", {subjects} memory subjects")
                       + ("" if fire_at is None else f", firing at the {fire_at} token")
                       + ("" if alike is None else f", {alike} sharing the old answer")
                       + "".join(f", {k} {v}" for k, v in own.items())
                       + ("" if held is None else f", {held} continuation tokens")
                       + ("" if held_factor is None else f" × {held_factor:g}"))
            edits = [Edit(f"{i:032x}", "sweep", c["subject"], c["prompt"], c["target_new"], true_answer(c), (), 0)
                     for i, c in enumerate(cases)]
            value = {"continuation_tokens": held, "continuation_factor": held_factor, "steps": args.steps}
            if batched:
                request = MethodRequest(args.method, layers=layers, mom2_weight=mom2, null_space_cutoff=cutoff, **value)
            else:
                request = MethodRequest(args.method, layer=layers[0], deferral_radius=radius, **value)
            batch = args.batch or (len(cases) if batched else 1)
            variants = [*args.delta_scales, *(["random"] if args.random_value else [])]
            rows: dict[float | str, list[dict[str, float]]] = {v: [] for v in variants}
            for start in tqdm(range(0, len(cases), batch), desc=setting):
                chunk = slice(start, start + batch)
                for variant, scored in apply_and_score(editor, request, edits[chunk], cases[chunk], lm, baseline,
                                                       variants).items():
                    rows[variant] += scored
            editor.close()
        for variant, scored in rows.items():
            summary = {k: round(sum(r[k] for r in scored) / len(scored), 3) for k in scored[0]}
            print(json.dumps({"method": args.method, "layers": layers, "stats_tokens": tokens,
                              "prefixes": args.prefixes, "other_wordings": others, "mom2_weight": mom2,
                              "null_space_cutoff": cutoff, "deferral_radius": radius, "memory_subjects": subjects,
                              "fire_at": fire_at, "same_answer_subjects": alike, **used, "steps": args.steps,
                              "continuation_tokens": held, "continuation_factor": held_factor,
                              "batch": batch, "delta_scale": variant, "cases": len(scored), **summary}), flush=True)


def apply_and_score(
    editor: ParametricEditor, request: MethodRequest, edits: list[Edit], cases: list[dict], lm: CausalLM,
    baseline: dict, variants: list[float | str],
) -> dict[float | str, list[dict[str, float]]]:
    """Computes the edits in one application, then for each variant writes its deltas, scores every case
    and rolls them back; seconds are the computation's, per edit."""
    started = time.perf_counter()
    deltas = finish(editor.compute(request, edits))
    seconds = (time.perf_counter() - started) / len(edits)
    rows = {}
    for variant in variants:
        editor.commit("sweep", request, [changed_value(d, variant) for d in deltas])
        rows[variant] = [score(lm, case, baseline) | {"seconds": seconds} for case in cases]
        for edit in edits:
            editor.rollback("sweep", edit.id)
    return rows


def true_answer(case: dict) -> str | None:
    """The answer before the edit, as the evaluation gives it: KN erases it (before 2026-12-05 sweeps passed none, so
    KN used the model's greedy token), T-Patcher and AlphaEdit draw subjects that share it."""
    truth = case.get("ground_truth")
    return truth if isinstance(truth, str) else None


def changed_value(delta: Change, variant: float | str) -> Change:
    """The delta with its value (u) scaled, or for "random" turned to a random direction of the same size; an
    addition (GRACE's entry) as it is, at scale 1 only."""
    if variant == 1.0:
        return delta
    if not isinstance(delta, WeightDelta):
        raise SystemExit(f"--delta-scales and --random-value apply to weight deltas, not to {delta.kind} entries")
    if variant != "random":
        return replace(delta, u=delta.u * float(variant))
    seed = int(delta.edit_id, 16) % 2**31
    noise = torch.randn(delta.u.shape, generator=torch.Generator().manual_seed(seed), dtype=delta.u.dtype)
    return replace(delta, u=noise * (delta.u.norm() / noise.norm()))


def locality_outputs(lm: CausalLM, case: dict) -> tuple[list[int], str]:
    """The neighbourhood prompt's teacher-forced argmax tokens and its greedy continuation."""
    answer = " " + case["locality_ground_truth"]
    scored = lm.score(case["locality_prompt"], answer)
    options = GenerationOptions(max_new_tokens=len(scored.target_ids) + EXTRA_NEW_TOKENS)
    return list(scored.predicted_ids), lm.decode(case["locality_prompt"], options).text


def score(lm: CausalLM, case: dict, baseline: dict) -> dict[str, float]:
    target = " " + case["target_new"]

    def tf(prompt: str) -> float:
        s = lm.score(prompt, target)
        return token_accuracy(s.target_ids, s.predicted_ids)

    def em(prompt: str) -> float:
        n = len(lm.tokenizer(target, add_special_tokens=False)["input_ids"]) + EXTRA_NEW_TOKENS
        return float(exact_match(lm.decode(prompt, GenerationOptions(max_new_tokens=n)).text, [case["target_new"]]))

    local_tf, local_text = locality_outputs(lm, case)
    before_tf, before_text = baseline[case["locality_prompt"]]
    return {
        "rel_tf": tf(case["prompt"]), "gen_tf": tf(case["rephrase_prompt"]),
        "loc_tf": agreement(local_tf, before_tf),
        "rel_em": em(case["prompt"]), "gen_em": em(case["rephrase_prompt"]),
        "loc_em": float(local_text == before_text),
        # ROME's fluency: n-gram entropy of a longer continuation of the edited prompt (repetition drives it down)
        "fluency": ngram_entropy(lm.decode(case["prompt"], GenerationOptions(max_new_tokens=FLUENCY_NEW_TOKENS)).text),
    }


if __name__ == "__main__":
    main()
