"""python -m scope_classifier train | calibrate | evaluate | train-object | evaluate-object"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from editdata.paths import DATA_DIR
from scope_classifier.evaluate import OBJECT_SPLITS, SPLITS
from server.gate.artifact import DEFAULT_ARTIFACT, DEFAULT_OBJECT_ARTIFACT
from server.gate.artifact import KINDS as DESIGNS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scope_classifier")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="build pairs from the train files, fit, choose the threshold, save")
    train.add_argument("--data-dir", type=Path, default=DATA_DIR)
    train.add_argument("--out", type=Path, default=DEFAULT_ARTIFACT)
    train.add_argument("--max-cases-per-file", type=int, default=None,
                       help="records read from each train file (default: all; counterfact/train.json has 10,000)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--epochs", type=int, default=3, help="passes over the pairs when training `interaction`")
    train.add_argument("--init", type=Path,
                       help="continue training `interaction` from this artifact's weights (warm start)")
    train.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of `interaction`")
    train.add_argument("--designs", default=",".join(DESIGNS),
                       help=f"comma-separated designs to train and compare (default: {','.join(DESIGNS)})")
    train.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "editcache" / "scope",
                       help="where the encoder outputs of the training texts are cached")
    calibrate = commands.add_parser(
        "calibrate", help="choose an artifact's threshold again on val/dev (network unchanged) and save it")
    calibrate.add_argument("--data-dir", type=Path, default=DATA_DIR)
    calibrate.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    calibrate.add_argument("--out", type=Path, help="default: overwrite --artifact")
    evaluate = commands.add_parser("evaluate", help="the whole gate on val/dev or a file; last line is JSON")
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--split", choices=list(SPLITS), default="val",
                        help="val: counterfact/val.json + zsre/dev.json (default); or either file alone")
    source.add_argument("--data", type=Path, help="any file scripts/evaluate.py reads")
    evaluate.add_argument("--data-dir", type=Path, default=DATA_DIR)
    evaluate.add_argument("--gate", choices=["classifier", "similarity"], default="classifier")
    evaluate.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    evaluate.add_argument("--threshold", type=float, help="default: the artifact's (classifier) or 0.8 (similarity)")
    evaluate.add_argument("--json", action="store_true", help="print the summary as one JSON line (default: a table)")
    train_object = commands.add_parser(
        "train-object", help="train the object gate on the train files; threshold on held-out train")
    train_object.add_argument("--data-dir", type=Path, default=DATA_DIR)
    train_object.add_argument("--out", type=Path, default=DEFAULT_OBJECT_ARTIFACT)
    train_object.add_argument("--init", type=Path, default=DEFAULT_ARTIFACT, help="interaction weights to start from")
    train_object.add_argument("--seed", type=int, default=0)
    train_object.add_argument("--epochs", type=int, default=2)
    train_object.add_argument("--lr", type=float, default=3e-4)
    train_object.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "editcache" / "scope")
    evaluate_object = commands.add_parser(
        "evaluate-object", help="the object gate on a dev split: reverse recall, object-neighbourhood FPR (JSON)")
    evaluate_object.add_argument("--data-dir", type=Path, default=DATA_DIR)
    evaluate_object.add_argument("--split", choices=list(OBJECT_SPLITS), default="zsre-dev")
    evaluate_object.add_argument("--limit", type=int, help="first N records of the split")
    evaluate_object.add_argument("--erased", action="store_true",
                                 help="key the edits by the answers they erase, as erase edits are")
    evaluate_object.add_argument("--artifact", type=Path, action="append",
                                 help="artifacts to compare (repeatable; default: the object gate's)")
    evaluate_object.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "editcache" / "scope")
    for p in (train, calibrate, evaluate, train_object, evaluate_object):
        p.add_argument("--encoder", default="all-MiniLM-L6-v2")
        p.add_argument("--top-k", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    progress = _progress()
    if args.command in ("train-object", "evaluate-object"):
        return _object_gate(args, progress)
    if args.command == "train":
        from scope_classifier.train import train as run_train
        from server.gate.artifact import load_artifact

        init = load_artifact(args.init) if args.init else None
        if init is not None and (init.kind != "interaction" or args.designs != "interaction"):
            raise SystemExit("--init continues an interaction artifact: pass one, with --designs interaction")
        report = run_train(args.data_dir, args.out, args.encoder, args.max_cases_per_file, args.seed, args.top_k,
                           cache_dir=args.cache_dir, designs=tuple(args.designs.split(",")), epochs=args.epochs,
                           progress=progress, init=init, lr=args.lr)
        print(json.dumps(report))
        return 0

    from editdata.readers import load_cases
    from scope_classifier.evaluate import (
        TRAINING_RECORDS,
        gate_metrics,
        load_val_cases,
        score_probes,
        unrelated_questions,
    )
    from scope_classifier.evaluate import calibrate as run_calibrate
    from server.config import SIMILARITY_THRESHOLD
    from server.gate.artifact import load_artifact, save_artifact
    from server.gate.classifier import ClassifierGate
    from server.gate.similarity import SimilarityGate
    from server.interfaces import Gate
    from server.memory.embed import SentenceEncoder

    if args.command == "calibrate":
        before = load_artifact(args.artifact)
        after = run_calibrate(before, load_val_cases(args.data_dir), unrelated_questions(args.data_dir),
                              SentenceEncoder(args.encoder), args.top_k, progress)
        out = args.out or args.artifact
        save_artifact(after, out)
        logging.info("threshold %.4f -> %.4f, saved to %s", before.threshold, after.threshold, out)
        print(json.dumps({k: v for k, v in after.metrics.items() if k not in TRAINING_RECORDS}))
        return 0

    cases = load_cases(args.data)[1] if args.data else load_val_cases(args.data_dir, SPLITS[args.split])
    artifact = load_artifact(args.artifact) if args.gate == "classifier" else None

    def factory(encoder: SentenceEncoder) -> Gate:
        return SimilarityGate() if artifact is None else ClassifierGate(artifact, encoder)

    default_threshold = SIMILARITY_THRESHOLD if artifact is None else artifact.threshold
    threshold = default_threshold if args.threshold is None else args.threshold
    scores, n_edits, latencies = score_probes(cases, unrelated_questions(args.data_dir), SentenceEncoder(args.encoder),
                                              factory, args.top_k, progress)
    data = str(args.data) if args.data else " + ".join(SPLITS[args.split])
    metrics = gate_metrics(scores, threshold, n_edits, latencies) | {"gate": args.gate, "top_k": args.top_k,
                                                                     "data": data}
    print(json.dumps(metrics) if args.json else "\n".join(f"{k:<28}{v}" for k, v in metrics.items()))
    return 0


def _object_gate(args: argparse.Namespace, progress) -> int:  # type: ignore[no-untyped-def]
    from scope_classifier.object_gate import evaluate_object_gate, train_object_gate
    from server.gate.artifact import load_artifact

    if args.command == "train-object":
        metrics = train_object_gate(args.data_dir, args.out, args.encoder, load_artifact(args.init), args.cache_dir,
                                    args.seed, args.epochs, args.lr, progress)
        print(json.dumps(metrics))
        return 0
    paths = args.artifact or [DEFAULT_OBJECT_ARTIFACT]
    report = evaluate_object_gate({str(p): load_artifact(p) for p in paths}, args.data_dir, args.split, args.limit,
                                  args.encoder, args.cache_dir, args.erased)
    print(json.dumps(report))
    return 0


def _progress():  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(done: int, total: int, what: str) -> None:
        key = what if what in ("encoding", "training") else "probes"
        bar = bars.get(key)
        if bar is None or bar.total != total or done < bar.n:
            bar = bars[key] = tqdm(total=total, desc=key, file=sys.stderr)
        bar.update(done - bar.n)

    return update


if __name__ == "__main__":
    sys.exit(main())
