"""The harness's sequential loop (the WISE protocol): T edits written in calls of `batch`, all T scored once with
exactly those T in the model, then every one rolled back and deleted before the next block; time per edit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from client import EditInput, GenerationOptions, ParametricOptions, ParametricProgress
from client.evaluation.cli import build_parser
from client.evaluation.report import markdown_table, summarize
from client.evaluation.runner import BaselineCache, EvalSettings, Evaluator
from editdata.cases import Case, EditFact, Probe


def case(i: int) -> Case:
    return Case(
        str(i), (EditFact(f"s{i}", f"s{i} lives in", f"new{i}", f"old{i}"),),
        reliability=(Probe(f"s{i} lives in", (f"new{i}",)),),
        generalization=(Probe(f"where does s{i} live", (f"new{i}",)),),
        locality=(Probe(f"n{i} lives in", (f"keep{i}",)),),
    )


@dataclass
class RecordingClient:
    """Just enough of EditcacheClient for the Evaluator: records each call, and for every probe the parametric
    edits in the model when it was asked."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    baked: list[str] = field(default_factory=list)  # in the model now, in the order written
    prompts: dict[str, str] = field(default_factory=dict)  # edit id → its prompt
    probed_with: dict[str, tuple[str, ...]] = field(default_factory=dict)  # probe prompt → baked prompts then
    options: list[ParametricOptions] = field(default_factory=list)  # each apply call's

    def add_edits(self, specs: Sequence[EditInput], namespace: str) -> list[SimpleNamespace]:
        records = []
        for spec in specs:
            edit_id = f"id-{len(self.prompts)}"
            self.prompts[edit_id] = spec.prompt
            records.append(SimpleNamespace(id=edit_id))
        self.events.append(("add", [r.id for r in records]))
        return records

    def apply_parametric(self, method: str, edit_ids: Sequence[str], namespace: str, options: ParametricOptions,
                         on_progress: Callable[[ParametricProgress], None] | None = None) -> None:
        self.events.append(("apply", list(edit_ids)))
        self.options.append(options)
        self.baked += edit_ids

    def rollback_parametric(self, edit_id: str, namespace: str) -> None:
        self.events.append(("rollback", edit_id))
        self.baked.remove(edit_id)

    def delete_edit(self, edit_id: str, namespace: str) -> None:
        assert edit_id not in self.baked, "a baked edit cannot be deleted"
        self.events.append(("delete", edit_id))

    def score(self, prompt: str, target: str, route: str | None = None, edit_id: str | None = None,
              namespace: str | None = None) -> SimpleNamespace:
        self.events.append(("score", route))
        return SimpleNamespace(target_ids=(1, 2), predicted_ids=(1, 2))

    def generate(self, prompt: str, options: GenerationOptions, route: str | None = None,
                 edit_id: str | None = None, namespace: str | None = None) -> SimpleNamespace:
        self.events.append(("generate", route))
        if namespace is not None:  # a probe; the baseline asks without one
            self.probed_with[prompt] = tuple(self.prompts[e] for e in self.baked)
        return SimpleNamespace(text=" " + prompt.split()[0], token_ids=(1,), route=route, edit_id=None,
                               gate_score=0.0, timings_ms={"total": 1.0}, abstained=False,
                               related_edit_ids=())


def run(method: str, sequential: int, batch: int | None, n: int = 5,
        parametric: ParametricOptions | None = None) -> tuple[RecordingClient, Evaluator, list]:
    client = RecordingClient()
    settings = EvalSettings(method, sequential=sequential, batch=batch, parametric=parametric or ParametricOptions())
    evaluator = Evaluator(client, settings, BaselineCache(None))  # type: ignore[arg-type]
    return client, evaluator, evaluator.run([case(i) for i in range(n)])


def test_all_t_edits_are_written_in_calls_of_batch_before_any_is_scored_and_removed_after() -> None:
    client, evaluator, results = run("memit", sequential=5, batch=2)
    kinds = [kind for kind, _ in client.events]
    applies = [ids for kind, ids in client.events if kind == "apply"]
    assert applies == [["id-0", "id-1"], ["id-2", "id-3"], ["id-4"]]  # in order, `batch` a call
    first_apply, last_apply = kinds.index("apply"), len(kinds) - 1 - kinds[::-1].index("apply")
    # The unedited model's answers to the probes that must not change are read before the first write.
    assert {"score", "generate"} <= set(kinds[:first_apply])
    # Every probe is asked with all five edits in: scored once, after the last write.
    all_five = tuple(f"s{i} lives in" for i in range(5))
    assert client.probed_with == {p: all_five for i in range(5)
                                  for p in (f"s{i} lives in", f"where does s{i} live", f"n{i} lives in")}
    assert "rollback" not in kinds[:last_apply]
    assert [e for k, e in client.events if k == "rollback"] == [f"id-{i}" for i in range(5)] and client.baked == []
    assert kinds.index("delete") > len(kinds) - 1 - kinds[::-1].index("rollback")
    assert evaluator.applied_edits == 5 and len(evaluator.apply_seconds) == 3
    assert [r.case_id for r in results] == ["0", "1", "2", "3", "4"]
    assert all(p.route == "base" for r in results for p in r.probes)  # parametric methods ask the base route


def test_blocks_of_t_leave_nothing_behind_for_the_next_block() -> None:
    client, evaluator, _ = run("grace", sequential=2, batch=None)
    # Cases 0-1, then 2-3, then 4: each block scored with its own edits only, in one call each (batch unset).
    assert [ids for kind, ids in client.events if kind == "apply"] == [["id-0", "id-1"], ["id-2", "id-3"], ["id-4"]]
    assert client.probed_with["s1 lives in"] == ("s0 lives in", "s1 lives in")
    assert client.probed_with["n2 lives in"] == ("s2 lives in", "s3 lives in")
    assert client.probed_with["s4 lives in"] == ("s4 lives in",)
    assert client.baked == [] and evaluator.applied_edits == 5


def test_methods_that_write_nothing_never_apply() -> None:
    client, evaluator, _ = run("prompt", sequential=5, batch=2)
    assert not any(kind in ("apply", "rollback") for kind, _ in client.events)
    assert evaluator.applied_edits == 0 and evaluator.apply_seconds == []


def test_the_summary_gives_the_time_per_edit_written() -> None:
    _, evaluator, results = run("alphaedit", sequential=5, batch=2)
    evaluator.apply_seconds = [4.0, 4.0, 2.0]  # three calls writing 2, 2 and 1 edits
    summary = summarize(results, "alphaedit", 20.0, evaluator.apply_seconds, evaluator.applied_edits)
    assert summary["parametric_apply_s"]["per_edit"] == pytest.approx(2.0)
    assert summary["parametric_apply_s"]["total"] == pytest.approx(10.0)
    assert "2.0 s per edit" in markdown_table(summary | {"server_peak_rss_mb": 1234.0})


@pytest.mark.parametrize("batch", [0, -1])
def test_a_batch_below_one_is_refused(batch: int) -> None:
    with pytest.raises(ValueError, match="batch"):
        EvalSettings("memit", sequential=10, batch=batch)


def test_the_parametric_options_given_reach_every_apply_call() -> None:
    layers = ParametricOptions(layers=(12,))
    client, _, _ = run("alphaedit", sequential=5, batch=2, parametric=layers)
    assert client.options == [layers] * 3
    args = build_parser().parse_args(["--data", "x.json", "--method", "alphaedit", "--layers", "8", "9"])
    assert (args.layer, args.layers) == (None, [8, 9])
