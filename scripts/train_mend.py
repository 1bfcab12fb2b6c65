#!/usr/bin/env python
"""Trains MEND's editor network (server/parametric/mend.py), or KE's (--method ke, server/parametric/ke.py), for one
model, on train files only, with one objective for both.

Edits come from counterfact/train.json, zsre/train-1k.json and knowedit/*_train.json (../shared/data); each
example is one edit (its prompt and new answer), its equivalents (the prompt and one paraphrase, new answer) and
one locality prompt from the same record (its true answer: the unedited model's distribution there must stay).
A held-out part of the same train files (never trained on) is scored before and after, teacher-forced: the new
answer's token accuracy on the prompt (reliability) and the paraphrase (generalization), and the share of locality
answer tokens whose argmax is unchanged.

Checkpoints every --checkpoint-every steps into OUT/checkpoint.pt and resumes from it (or, with --init-from, from
a shipped artifact's weights, step count and "before" scores, with a fresh optimiser); the artifact (mend.json,
mend.safetensors) and metrics.json are written at the end. On one niced CPU core (Gemma-3-270M, last three
down-projections, rank 64) a step takes about a second: see docs/BENCHMARKS.md for the run's time.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python scripts/train_mend.py --steps 3000
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python scripts/train_mend.py --method ke --steps 3000
    scripts/train_mend.py --steps 0              # scores the held-out cases with the artifact's state (resumes)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402
from transformers import PreTrainedTokenizerBase  # noqa: E402

from editdata.paths import DATA_DIR  # noqa: E402
from editdata.readers import load_cases  # noqa: E402
from server.config import default_cache_dir  # noqa: E402
from server.models.arch import ArchTemplate, num_layers  # noqa: E402
from server.models.load import load_model  # noqa: E402
from server.parametric.ke import Ke  # noqa: E402
from server.parametric.mend import (  # noqa: E402
    ARTIFACTS,
    EDITED_LAYERS,
    MANIFEST,
    EditorNetwork,
    GradientEditor,
    Mend,
    MendConfig,
    TrainingExample,
    gradient_factors,
    load_artifact,
    save_artifact,
    teacher_forced_scores,
    training_example,
    training_losses,
)

FIXTURE = ROOT / "tests" / "fixtures" / "eval" / "counterfact_flat.json"
TRAIN_FILES = ("counterfact/train.json", "zsre/train-1k.json", "knowedit/wiki_counterfact_train.json",
               "knowedit/wiki_recent_train.json")


@dataclass(frozen=True)
class Sample:
    prompt: str
    target_new: str
    paraphrase: str | None
    locality_prompt: str
    locality_answer: str


def read_samples(data_dir: Path, files: tuple[str, ...]) -> list[Sample]:
    """One sample per single-edit record that has a locality probe."""
    samples = []
    for name in files:
        path = data_dir / name
        if "val" in path.name or "dev" in path.name:
            raise SystemExit(f"{path} is a validation or dev file: MEND trains on train files only")
        _, cases = load_cases(path)
        for case in cases:
            if len(case.edits) != 1 or not case.locality or not case.locality[0].answers:
                continue
            edit = case.edits[0]
            samples.append(Sample(edit.prompt, edit.target_new,
                                  case.generalization[0].prompt if case.generalization else None,
                                  case.locality[0].prompt, case.locality[0].answers[0]))
    return samples


def example(tokenizer: PreTrainedTokenizerBase, sample: Sample) -> TrainingExample:
    return training_example(tokenizer, sample.prompt, sample.target_new, [sample.paraphrase] if sample.paraphrase
                            else [], [(sample.locality_prompt, sample.locality_answer)])


def short_enough(tokenizer: object, sample: Sample, max_tokens: int) -> bool:
    texts = (sample.prompt, sample.paraphrase or "", sample.locality_prompt)
    return all(len(tokenizer(t)["input_ids"]) + 4 <= max_tokens for t in texts)  # type: ignore[operator]


NETWORKS: dict[str, type[GradientEditor]] = {m.name: m.network_class for m in (Mend, Ke)}


def score(model: torch.nn.Module, arch: ArchTemplate, network: GradientEditor | None, samples: list[Sample],
          tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
    """Mean teacher-forced reliability, generalization and locality over `samples`, one edit at a time (`network`
    None: the unedited model's scores)."""
    rows = [teacher_forced_scores(model, arch, network, example(tokenizer, s))
            for s in tqdm(samples, desc="scoring", leave=False)]
    return {k: round(sum(r[k] for r in rows if not math.isnan(r[k]))
                     / max(1, sum(not math.isnan(r[k]) for r in rows)), 4) for k in rows[0]}


def fixture_scores(model: torch.nn.Module, arch: ArchTemplate, network: GradientEditor,
                   tokenizer: PreTrainedTokenizerBase) -> list[dict[str, float]]:
    """Per-case scores of tests/fixtures/eval/counterfact_flat.json, which tests/e2e/test_mend_gemma.py reproduces."""
    records = json.loads(FIXTURE.read_text())
    return [teacher_forced_scores(model, arch, network, training_example(
        tokenizer, r["prompt"], r["target_new"], [r["rephrase_prompt"]],
        [(r["locality_prompt"], r["locality_ground_truth"])])) for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=sorted(NETWORKS), default="mend")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=None, help="default: artifacts/METHOD/MODEL")
    parser.add_argument("--steps", type=int, default=3000, help="total training steps (one edit each)")
    parser.add_argument("--rank", type=int, default=64, help="MEND's low rank; KE's conditioner width")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam's step for the editor network")
    parser.add_argument("--lr-lr", type=float, default=1e-2, help="Adam's step for log α per layer")
    parser.add_argument("--edit-lr", type=float, default=1e-4, help="MEND: α's starting value; KE: its largest step")
    parser.add_argument("--c-edit", type=float, default=1.0)
    parser.add_argument("--c-loc", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=40, help="skip samples with longer prompts")
    parser.add_argument("--held-out", type=int, default=50, help="train-file samples kept out, scored before/after")
    parser.add_argument("--stats-warmup", type=int, default=100,
                        help="examples whose gradients only feed the editor's running statistics, before training")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop training after this much training time (this run and earlier ones together)")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--init-from", type=Path, default=None,
                        help="an artifact directory to go on training from when OUT has no checkpoint")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out = args.out or ARTIFACTS / args.method / args.model
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    loaded = load_model(args.model, default_cache_dir(), torch_threads=args.threads)
    model, tokenizer = loaded.model, loaded.tokenizer
    samples = [s for s in read_samples(args.data_dir, TRAIN_FILES) if short_enough(tokenizer, s, args.max_tokens)]
    random.Random(args.seed).shuffle(samples)
    held_out, train = samples[: args.held_out], samples[args.held_out :]
    print(f"{len(train)} training samples, {len(held_out)} held out", file=sys.stderr)

    last = num_layers(model.config) - 1
    layers = tuple(range(last - EDITED_LAYERS + 1, last + 1))
    modules = tuple(loaded.arch.mlp_out.format(i) for i in layers)
    weight: torch.Tensor = model.get_submodule(modules[0]).weight  # type: ignore[assignment]
    d_out, d_in = weight.shape if loaded.arch.out_features_first else weight.shape[::-1]
    config = MendConfig(loaded.fingerprint.current, str(model.config.model_type), modules, layers, int(d_in),
                        int(d_out), args.rank, args.edit_lr, args.method)
    network = NETWORKS[args.method](config)
    optimiser = torch.optim.Adam([  # MEND's log α steps faster than the network
        {"params": [p for n, p in network.named_parameters() if n != "log_lr"], "lr": args.lr},
        {"params": [p for n, p in network.named_parameters() if n == "log_lr"], "lr": args.lr_lr},
    ])
    checkpoint = args.out / "checkpoint.pt"
    step, seconds, before = 0, 0.0, None
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        step, seconds, before = state["step"], state["seconds"], state["before"]
        print(f"resumed at step {step} ({seconds:.0f} s trained)", file=sys.stderr)
    elif args.init_from is not None:
        trained = load_artifact(args.init_from, NETWORKS[args.method])
        if trained.config != config:
            raise SystemExit(f"{args.init_from} was trained with {trained.config}, not {config}")
        network.load_state_dict(trained.state_dict())
        manifest = json.loads((args.init_from / MANIFEST).read_text())
        step, seconds = manifest["trained_steps"], manifest["training_seconds"]
        before = json.loads((args.init_from / "metrics.json").read_text())["before"]
        print(f"starting from {args.init_from} at step {step} (fresh optimiser)", file=sys.stderr)
    if isinstance(network, EditorNetwork) and step == 0 and int(network.count.min()) == 0:
        # MEND standardises its input: running statistics before the first update (KE reads the gradient as it is)
        for sample in tqdm(train[-args.stats_warmup :], desc="gradient statistics"):
            ex = example(tokenizer, sample)
            factors = gradient_factors(model, config.modules, ex.edit)
            for layer, name in enumerate(config.modules):
                network.observe(layer, *factors[name])
    if before is None:
        before = {"unedited": score(model, loaded.arch, None, held_out, tokenizer),
                  "untrained_editor": score(model, loaded.arch, network, held_out, tokenizer)}
        print(json.dumps({"before": before}), file=sys.stderr)

    def save_checkpoint() -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint.with_suffix(".tmp")
        torch.save({"network": network.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                    "seconds": seconds, "before": before}, tmp)
        tmp.replace(checkpoint)

    recent: list[tuple[float, float]] = []
    with tqdm(total=args.steps, initial=min(step, args.steps), desc=args.method.upper()) as bar:
        while step < args.steps and (args.max_minutes is None or seconds < 60 * args.max_minutes):
            started = time.perf_counter()
            sample = train[step % len(train)]
            edit_loss, loc_loss = training_losses(model, loaded.arch, network, example(tokenizer, sample))
            loss = args.c_edit * edit_loss + args.c_loc * loc_loss
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(network.parameters(), 100.0)
            optimiser.step()
            step += 1
            seconds += time.perf_counter() - started
            recent = (recent + [(float(edit_loss.detach()), float(loc_loss.detach()))])[-100:]
            bar.update(1)
            bar.set_postfix(edit=f"{sum(e for e, _ in recent) / len(recent):.3f}",
                            loc=f"{sum(c for _, c in recent) / len(recent):.4f}",
                            **({"lr": f"{float(network.log_lr.exp().mean()):.2e}"}
                               if isinstance(network, EditorNetwork) else {}))
            if step % args.checkpoint_every == 0:
                save_checkpoint()
    save_checkpoint()
    after = score(model, loaded.arch, network, held_out, tokenizer)
    extra = {"trained_steps": step, "training_seconds": round(seconds), "threads": args.threads,
             "train_files": list(TRAIN_FILES), "options": {k: str(v) for k, v in vars(args).items()}}
    save_artifact(network, args.out, extra)
    metrics = {"held_out_train_samples": len(held_out), "before": before, "after": after,
               "fixture_scores": fixture_scores(model, loaded.arch, network, tokenizer), **extra,
               "config": asdict(config)}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps({"after": after}), file=sys.stderr)


if __name__ == "__main__":
    main()
