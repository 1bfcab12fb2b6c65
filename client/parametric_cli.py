"""editctl's parametric commands: apply, rollback, baked, export (they need an admin token), and attribute (reads)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

from client import BakedEditRecord, EditcacheClient, ParametricOptions, ParametricProgress
from client.convert import METHOD_VALUES


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    apply = commands.add_parser(
        "apply", parents=[common],
        help="write stored edits into the model's weights (ROME, MEMIT, AlphaEdit, FT, KN) or beside them "
             "(GRACE, T-Patcher)",
    )
    apply.add_argument("ids", nargs="+", metavar="ID", help="edits of the namespace, as `add` printed them")
    apply.add_argument("--method", required=True, choices=tuple(METHOD_VALUES))
    apply.add_argument("--layer", type=int, help="ROME/FT/GRACE: the MLP layer to edit, T-Patcher: the FFN given "
                       "the neurons (default: the model's; T-Patcher: the last)")
    apply.add_argument("--layers", type=int, nargs="+", default=[],
                       help="MEMIT, AlphaEdit: the layers to spread over; KN: the layers its neurons are sought in")
    apply.add_argument("--steps", type=int, help="optimisation steps (KN: Riemann steps of its attribution)")
    apply.add_argument("--lr", type=float, help="learning rate of those steps")
    apply.add_argument("--mom2-weight", type=float, help="MEMIT: λ, how firmly other facts are held")
    apply.add_argument("--norm-constraint", type=float, help="FT: the largest change of any one weight")
    apply.add_argument("--null-space-cutoff", type=float,
                       help="AlphaEdit: eigenvalue share below which key directions are held fixed, in (0, 1]")
    apply.add_argument("--deferral-radius", type=float,
                       help="GRACE: the radius ε within which an entry answers, as a share of its key's norm")
    apply.add_argument("--fire-at", choices=("last", "subject"),
                       help="T-Patcher, CaliNET: train the neurons to fire at the prompt's last token (default; "
                            "T-Patcher: and at each answer token's place) or at the subject's (give a --layer below "
                            "the last)")
    apply.add_argument("--memory-subjects", type=int,
                       help="T-Patcher, CaliNET: other subjects asked the edit's questions in the memory (default 16)")
    apply.add_argument("--own-subject-questions", type=int,
                       help="T-Patcher, CaliNET: other questions about the edit's subject in the memory "
                            "(default: T-Patcher 8, CaliNET 0)")
    apply.add_argument("--own-subject-tokens", type=int,
                       help="T-Patcher, CaliNET: the model's tokens continuing each memory prompt about the edit's "
                            "subject, at least (default: T-Patcher 24, CaliNET 0)")
    apply.add_argument("--remove-from-gate", action="store_true",
                       help="let only the weights carry the edits (default: the gate still routes to them)")
    apply.set_defaults(run=run_apply)

    rollback = commands.add_parser("rollback", parents=[common], help="take one edit back out of the weights")
    rollback.add_argument("id")
    rollback.set_defaults(run=run_rollback)

    baked = commands.add_parser("baked", parents=[common], help="list the namespace's edits that are in the weights")
    baked.set_defaults(run=run_baked)

    export = commands.add_parser("export", parents=[common],
                                 help="write the edited model as a Hugging Face folder (on the server's machine)")
    export.add_argument("dir", help="a new or empty directory under the server's export_dir (a name relative to it, "
                                    "or an absolute path inside it)")
    export.set_defaults(run=run_export)

    attribute = commands.add_parser(
        "attribute", parents=[common],
        help="show the FFN neurons that carry an answer after a prompt (KN's integrated gradients; reads only)",
    )
    attribute.add_argument("prompt", help='e.g. "The capital of France is"')
    attribute.add_argument("--answer", required=True, help="the answer whose first token is attributed, e.g. Paris")
    attribute.add_argument("--layers", type=int, nargs="+", default=[], help="layers to attribute (default: KN's)")
    attribute.add_argument("--top", type=int, default=10, help="neurons shown per layer (default 10)")
    attribute.add_argument("--steps", type=int, help="Riemann steps of the integral (default: KN's, 20)")
    attribute.set_defaults(run=run_attribute)


@contextmanager
def parametric_progress_bar(disable: bool | None = False) -> Iterator[Callable[[ParametricProgress], None]]:
    """A progress bar for ApplyParametric's stream: one stage (and edit) at a time, with the loss.

    `disable` as tqdm takes it: None hides the bar when stderr is not a terminal.
    """
    bar = tqdm(total=0, desc="starting", unit="step", file=sys.stderr, disable=disable)
    shown = ("starting", 0)  # (label, total) of the stage on the bar; tqdm keeps its desc with a ": " added

    def show(progress: ParametricProgress) -> None:
        nonlocal shown
        label = progress.stage + (f" {progress.edit_id[:8]}" if progress.edit_id else "")
        if shown != (label, progress.total):
            shown = (label, progress.total)
            bar.reset(total=progress.total)
            bar.set_description(label)
        bar.update(progress.step - bar.n)
        bar.set_postfix_str("" if progress.loss is None else f"loss {progress.loss:.3f}", refresh=False)
        bar.refresh()

    try:
        yield show
    finally:
        bar.close()


def run_apply(ec: EditcacheClient, args: argparse.Namespace) -> None:
    with parametric_progress_bar(disable=args.json or None) as show:
        options = ParametricOptions(
            layer=args.layer, layers=args.layers, steps=args.steps, lr=args.lr, mom2_weight=args.mom2_weight,
            norm_constraint=args.norm_constraint, null_space_cutoff=args.null_space_cutoff,
            deferral_radius=args.deferral_radius, fire_at=args.fire_at, memory_subjects=args.memory_subjects,
            own_subject_questions=args.own_subject_questions, own_subject_tokens=args.own_subject_tokens,
            remove_from_gate=args.remove_from_gate,
        )
        result = ec.apply_parametric(args.method, args.ids, options=options, on_progress=show)
    if args.json:
        print(json.dumps({"application_id": result.application_id, "seconds": round(result.seconds, 3),
                          "edits": [_baked_json(b) for b in result.edits]}))
        return
    print(f"applied {len(result.edits)} edit(s) with {args.method} in {result.seconds:.1f} s "
          f"(application {result.application_id})")
    for baked in result.edits:
        print(f"  {baked.edit_id}  {', '.join(baked.modules)}")


def run_rollback(ec: EditcacheClient, args: argparse.Namespace) -> None:
    baked = ec.rollback_parametric(args.id)
    print(json.dumps(_baked_json(baked)) if args.json else f"rolled back {baked.edit_id} ({baked.method})")


def run_baked(ec: EditcacheClient, args: argparse.Namespace) -> None:
    edits = ec.baked_edits()
    if args.json:
        print(json.dumps([_baked_json(b) for b in edits]))
        return
    for b in edits:
        gate = "in gate" if b.in_gate else "weights only"
        print(f"{b.edit_id}  {b.method:<5}  application {b.application_id}  {gate}  {', '.join(b.modules)}")
    if not edits:
        print("(no edits of this namespace are in the weights)")


def run_export(ec: EditcacheClient, args: argparse.Namespace) -> None:
    path = ec.export_model(args.dir)  # a path on the server, resolved there under its export directory
    print(json.dumps({"path": path}) if args.json else f"exported the served model to {path}")


def run_attribute(ec: EditcacheClient, args: argparse.Namespace) -> None:
    result = ec.attribute(args.prompt, args.answer, layers=args.layers, top=args.top, steps=args.steps)
    if args.json:
        print(json.dumps({"answer_token": result.answer_token, "probability": result.probability, "layers": [
            {"layer": layer.layer, "module": layer.module, "neurons": [
                {"neuron": n.neuron, "attribution": n.attribution, "activation": n.activation} for n in layer.neurons
            ]} for layer in result.layers
        ]}))
        return
    print(f"p({result.answer_token!r} | prompt) = {result.probability:.4f}; integrated gradients per neuron "
          "(neuron:attribution):")
    for layer in result.layers:
        print(f"  layer {layer.layer:>3}  " + "  ".join(f"{n.neuron}:{n.attribution:+.4g}" for n in layer.neurons))


def _baked_json(b: BakedEditRecord) -> dict[str, object]:
    return {"edit_id": b.edit_id, "method": b.method, "application_id": b.application_id,
            "modules": list(b.modules), "in_gate": b.in_gate}
