"""Runs editing cases against a server through the client and scores every probe.

Each probe is measured twice, as DESIGN.md's protocol asks:

- exact match under greedy generation: for probes whose answer should follow the edit, an answer is
  a prefix of the continuation; for probes that must not change (locality, same subject), the
  continuation's tokens equal the unedited model's;
- teacher forcing: the share of the canonical answer's tokens that are the model's argmax
  (EasyEdit's rewrite_acc); for probes that must not change, the share of argmax predictions that
  agree with the unedited model's.

The unedited model's outputs come from the base route and are cached on disk per model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from client import EditcacheClient, EditInput, GenerationOptions, ParametricOptions, ParametricProgress, ServerInfo
from client.errors import InvalidArgument
from editdata.cases import Case, EditedFacts, Probe
from editdata.metrics import agreement, exact_match, ngram_entropy, token_accuracy

# method → the route requests force (None: the gate decides).
# Parametric methods write the edits into the weights (GRACE, T-Patcher, CaliNET, WISE: state beside them), which
# every route then uses; "base" measures them alone (an answer that state changed reports route parametric).
PARAMETRIC_METHODS = ("rome", "memit", "alphaedit", "ft", "grace", "tpatcher", "kn", "mend", "ke", "calinet", "wise")
METHOD_ROUTES: dict[str, str | None] = {
    "base": "base", "gate": None, "prompt": "prompt", "ike": "ike", "counterfactual": "counterfactual",
    **dict.fromkeys(PARAMETRIC_METHODS, "base"),
}
# Probes whose answer should follow the edit, and probes whose answer must not change.
CHANGE_CATEGORIES = ("reliability", "generalization", "portability", "reverse", "multi_hop")
KEEP_CATEGORIES = ("locality", "same_subject", "object_neighbourhood")
CATEGORIES = CHANGE_CATEGORIES + KEEP_CATEGORIES
# Generation length: the answer's tokens plus a few, so a prefix match is possible but cheap.
EXTRA_NEW_TOKENS = 3
FLUENCY_NEW_TOKENS = 32

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class EvalSettings:
    method: str
    sequential: int | None = None  # T: add T edits, then score those T cases (WISE); None: one at a time
    fluency: bool = False
    # Parametric methods: edits per ApplyParametric call, in order (MEMIT and AlphaEdit write each call's edits at
    # once; ROME, FT and GRACE one after another either way); None: all of a block's edits in one call.
    batch: int | None = None
    parametric: ParametricOptions = ParametricOptions()  # e.g. the layers; the server's defaults otherwise

    def __post_init__(self) -> None:
        if self.method not in METHOD_ROUTES:
            raise ValueError(f"method must be one of {', '.join(METHOD_ROUTES)}, got {self.method!r}")
        if self.sequential is not None and self.sequential < 1:
            raise ValueError(f"sequential T must be at least 1, got {self.sequential}")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")


@dataclass(frozen=True)
class ProbeResult:
    category: str
    prompt: str
    answer: str
    em: bool
    tf: float
    route: str
    edit_id: str | None
    gate_score: float
    latency_ms: float  # the generation request, end to end on the server
    text: str
    # A probe that must not change but asks the fact an edit in memory changes (editdata.cases.asks_edited_fact):
    # another case's edit (sequential runs), or the case's own (zsRE's same-relation "locality" probes).
    asks_other_edit: bool = False
    asks_own_edit: bool = False
    abstained: bool = False  # the gate let it in; the counterfactual model handed it to the base model
    kind: str = ""  # a portability probe's kind (editdata.cases.PORTABILITY_KINDS)
    related_edit_ids: list[str] = field(default_factory=list)  # further edits the answer read (several per answer)


@dataclass
class CaseResult:
    case_id: str
    edit_ids: list[str]
    probes: list[ProbeResult] = field(default_factory=list)
    fluency: float | None = None
    skipped: str | None = None  # why the server refused the case's edits; a skipped case has no probes


def flag_edited_fact(scored: ProbeResult, probe: Probe, case: Case, in_memory: EditedFacts) -> ProbeResult:
    """`scored` (of `probe`, one of `case`'s) marked when it must not change but asks a fact an edit in memory
    changes: another case's edit's, or its own case's."""
    if scored.category not in KEEP_CATEGORIES:
        return scored
    asked, own = in_memory.asked_by(probe), {id(e) for e in case.edits}
    return replace(scored, asks_other_edit=any(id(e) not in own for e in asked),
                   asks_own_edit=any(id(e) in own for e in asked))


def reflagged(saved: Sequence[CaseResult], cases: Sequence[Case], block: int) -> list[CaseResult]:
    """A saved run's results flagged again with this version's `asks_edited_fact`. The results come in blocks of
    `block` cases (T of a sequential run, else 1), each block's edits in memory together, as `Evaluator.run` had
    them; a result's probes are its case's, category by category, in order."""
    by_id = {case.case_id: case for case in cases}
    if missing := sorted({r.case_id for r in saved} - set(by_id)):
        raise ValueError(f"the saved results have cases the data file lacks ({', '.join(missing[:5])}): "
                         "not the same data file")
    flagged: list[CaseResult] = []
    for start in range(0, len(saved), block):
        chunk = saved[start : start + block]
        in_memory = EditedFacts(e for r in chunk if r.skipped is None for e in by_id[r.case_id].edits)
        for result in chunk:
            if result.skipped is not None:
                flagged.append(result)
                continue
            case = by_id[result.case_id]
            probes = [(category, probe) for category in CATEGORIES for probe in getattr(case, category)]
            if [(c, p.prompt) for c, p in probes] != [(s.category, s.prompt) for s in result.probes]:
                raise ValueError(f"case {case.case_id}'s probes in the saved results are not those of the data "
                                 "file: not the same data file")
            flagged.append(replace(result, probes=[flag_edited_fact(scored, probe, case, in_memory)
                                                   for scored, (_, probe) in zip(result.probes, probes, strict=True)]))
    return flagged


class BaselineCache:
    """The unedited model's greedy tokens and teacher-forced argmax per (prompt, answer, length), on disk."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._entries: dict[str, dict[str, list[int]]] = {}
        if path is not None and path.exists():
            self._entries = json.loads(path.read_text())

    @staticmethod
    def for_server(info: ServerInfo, cache_dir: Path) -> BaselineCache:
        """The cache of the served weights' outputs (a server before 2026-12 names no fingerprint: its model)."""
        weights = info.model_fingerprint or f"{info.model}|{info.model_type}|{info.parameters}"
        return BaselineCache(cache_dir / f"baseline-{hashlib.sha256(weights.encode()).hexdigest()[:16]}.json")

    def lookup(self, client: EditcacheClient, prompt: str, target: str, max_new_tokens: int) -> dict[str, list[int]]:
        key = f"{max_new_tokens}\x1f{prompt}\x1f{target}"
        if key not in self._entries:
            scores = client.score(prompt, target, route="base")
            greedy = client.generate(prompt, options=GenerationOptions(max_new_tokens=max_new_tokens), route="base")
            self._entries[key] = {"token_ids": list(greedy.token_ids), "predicted_ids": list(scores.predicted_ids)}
        return self._entries[key]

    def save(self) -> None:
        """Replaces the file whole. Each save writes its own temporary file first: evaluations running side by side
        share the cache file (the last to save wins: it is a cache), and a shared temporary name let one rename the
        other's away mid-save (FileNotFoundError at the end of a 23-minute run)."""
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self._path.parent, prefix=self._path.stem, suffix=".tmp",
                                             delete=False) as tmp:
                tmp.write(json.dumps(self._entries))
            os.replace(tmp.name, self._path)


class Evaluator:
    def __init__(self, client: EditcacheClient, settings: EvalSettings, baseline: BaselineCache) -> None:
        self._client = client
        self._settings = settings
        self._baseline = baseline
        self._route = METHOD_ROUTES[settings.method]
        self._namespace = f"eval-{uuid.uuid4().hex[:12]}"
        self.apply_seconds: list[float] = []  # wall time of each ApplyParametric call
        self.applied_edits = 0  # edits those calls wrote

    def run(
        self,
        cases: Sequence[Case],
        progress: Progress | None = None,
        on_parametric: Callable[[ParametricProgress], None] | None = None,
    ) -> list[CaseResult]:
        """Scores every case; edits are added before and deleted after their block.

        `on_parametric` sees ApplyParametric's steps: MEMIT on a block of 100 edits runs for many minutes.
        """
        block = self._settings.sequential or 1
        results: list[CaseResult] = []
        for start in range(0, len(cases), block):
            chunk, edit_ids = [], []
            for case in cases[start : start + block]:  # all T edits are in before any is scored
                try:
                    edit_ids.append(self._add_edits(case))
                    chunk.append(case)
                except InvalidArgument as refused:  # e.g. a zsRE subject the prompt does not name
                    results.append(CaseResult(case.case_id, [], skipped=refused.details))
            baked = [i for ids in edit_ids for i in ids] if self._settings.method in PARAMETRIC_METHODS else []
            if baked:
                self._warm_baseline(chunk)
                self._apply(baked, on_parametric)
            in_memory = EditedFacts(e for case in chunk for e in case.edits)
            for case, ids in zip(chunk, edit_ids, strict=True):
                results.append(self._evaluate(case, ids, in_memory))
                if progress is not None:
                    progress(len(results), len(cases), case.case_id)
            for edit_id in baked:
                self._client.rollback_parametric(edit_id, namespace=self._namespace)
            for ids in edit_ids:
                for edit_id in ids:
                    self._client.delete_edit(edit_id, namespace=self._namespace)
            self._baseline.save()
        return results

    def _apply(self, edit_ids: Sequence[str], on_parametric: Callable[[ParametricProgress], None] | None) -> None:
        """Writes the edits in calls of `batch`, in order, each call timed."""
        step = self._settings.batch or len(edit_ids)
        for start in range(0, len(edit_ids), step):
            call = edit_ids[start : start + step]
            started = time.perf_counter()
            self._client.apply_parametric(self._settings.method, call, namespace=self._namespace,
                                          options=self._settings.parametric, on_progress=on_parametric)
            self.apply_seconds.append(time.perf_counter() - started)
            self.applied_edits += len(call)

    def _warm_baseline(self, cases: Sequence[Case]) -> None:
        """Reads the unedited model's outputs for the probes that must not change, while it is still unedited."""
        for case in cases:
            for category in KEEP_CATEGORIES:
                for probe in getattr(case, category):
                    target = " " + probe.answers[0].strip()
                    n = len(self._client.score(probe.prompt, target, route="base").target_ids) + EXTRA_NEW_TOKENS
                    self._baseline.lookup(self._client, probe.prompt, target, n)

    def _add_edits(self, case: Case) -> list[str]:
        if self._settings.method == "base":
            return []
        specs = [EditInput(e.subject, e.prompt, e.target_new, e.target_true) for e in case.edits]
        return [e.id for e in self._client.add_edits(specs, namespace=self._namespace)]

    def _evaluate(self, case: Case, edit_ids: list[str], in_memory: EditedFacts) -> CaseResult:
        result = CaseResult(case.case_id, edit_ids)
        # With a forced in-scope route, a single-edit case answers from its own edit.
        edit_id = edit_ids[0] if len(edit_ids) == 1 and self._route not in (None, "base") else None
        for category in CATEGORIES:
            for probe in getattr(case, category):
                result.probes.append(flag_edited_fact(self._probe(category, probe, edit_id), probe, case, in_memory))
        if self._settings.fluency and case.reliability:
            prompt = case.reliability[0].prompt
            text = self._client.generate(
                prompt, options=GenerationOptions(max_new_tokens=FLUENCY_NEW_TOKENS), route=self._route,
                edit_id=edit_id, namespace=self._namespace,
            ).text
            result.fluency = ngram_entropy(text)
        return result

    def _probe(self, category: str, probe: Probe, edit_id: str | None) -> ProbeResult:
        target = " " + probe.answers[0].strip()
        scores = self._client.score(
            probe.prompt, target, route=self._route, edit_id=edit_id, namespace=self._namespace
        )
        max_new_tokens = len(scores.target_ids) + EXTRA_NEW_TOKENS
        started = time.perf_counter()
        answer = self._client.generate(
            probe.prompt, options=GenerationOptions(max_new_tokens=max_new_tokens), route=self._route, edit_id=edit_id,
            namespace=self._namespace,
        )
        latency_ms = answer.timings_ms["total"] or (time.perf_counter() - started) * 1e3
        if category in KEEP_CATEGORIES:
            base = self._baseline.lookup(self._client, probe.prompt, target, max_new_tokens)
            em = list(answer.token_ids) == base["token_ids"]
            tf = agreement(scores.predicted_ids, base["predicted_ids"])
        else:
            em = exact_match(answer.text, probe.answers)
            tf = token_accuracy(scores.target_ids, scores.predicted_ids)
        return ProbeResult(
            category, probe.prompt, probe.answers[0], em, tf, answer.route, answer.edit_id, answer.gate_score,
            latency_ms, answer.text, abstained=answer.abstained, kind=probe.kind,
            related_edit_ids=list(answer.related_edit_ids),
        )
