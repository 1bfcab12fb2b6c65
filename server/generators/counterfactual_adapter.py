"""The trained counterfactual model on disk, and loading it beside the served model.

A directory holds the LoRA adapter as peft writes it (`adapter_config.json`, `adapter_model.safetensors`),
`counterfactual.json` (the base model's fingerprint and the prompt format the adapter was trained on) and
`metrics.json` (what training measured). counterfactual/ trains the adapter and writes these files.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: the prompt format has an abstention word
MANIFEST_FILE = "counterfactual.json"
METRICS_FILE = "metrics.json"
ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "artifacts" / "counterfactual"


def default_adapter_dir(model_name: str) -> Path:
    """Where the adapter for a served model lives unless configured: artifacts/counterfactual/<model name>/."""
    return ARTIFACTS_DIR / model_name


class AdapterMismatch(ValueError):
    """The adapter was trained on other weights than the served model's (or is not an adapter directory)."""


@dataclass(frozen=True)
class PromptFormat:
    """How an (edit, query) pair is shown to the counterfactual model, and what ends its answer."""

    template: str = "Fact: {fact}\nQ: {query}\nA:"
    answer_end: str = "\n"  # written after every answer in training; the generator stops there
    # The whole answer to a query the fact does not bear on (one token for Gemma 3's tokenizer). The router sends
    # such queries to the base model, so a gate false alarm costs a few tokens, not a rewritten answer.
    abstain: str = "unaffected"

    def render(self, edit_prompt: str, target_new: str, query: str) -> str:
        return self.render_statement(self.fact(edit_prompt, target_new), query)

    @staticmethod
    def fact(edit_prompt: str, target_new: str) -> str:
        """An edit's fact as one sentence, as Edit.statement() writes it."""
        return f"{edit_prompt.strip()} {target_new.strip()}."

    def render_statement(self, statement: str, query: str) -> str:
        """The prompt for a fact or rule already written as a sentence (a patch's rule)."""
        return self.template.format(fact=statement.strip(), query=query.strip())

    def continuation(self, answer: str) -> str:
        """What the model learns to write after the prompt: the answer after a space, then the end marker."""
        return f" {answer.strip()}{self.answer_end}"

    def abstains(self, answer: str) -> bool:
        """True when a generated answer (text before the end marker) is the abstention word."""
        return bool(self.abstain) and answer.strip() == self.abstain


@dataclass(frozen=True)
class Manifest:
    model: str  # the served model's name when it was trained (informative)
    model_fingerprint: str  # server.models.fingerprint's name of the weights it was trained on
    prompt: PromptFormat = field(default_factory=PromptFormat)
    settings: dict[str, Any] = field(default_factory=dict)  # training settings (informative)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **asdict(manifest)}, indent=2))


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise AdapterMismatch(
            f"{directory} holds no {MANIFEST_FILE}; it is not a counterfactual adapter written by "
            "scripts/train_counterfactual.py"
        ) from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise AdapterMismatch(
            f"{path} has format {meta.get('format_version')}, this server reads {FORMAT_VERSION}; "
            "retrain with scripts/train_counterfactual.py"
        )
    return Manifest(model=meta["model"], model_fingerprint=meta["model_fingerprint"],
                    prompt=PromptFormat(**meta["prompt"]), settings=meta.get("settings", {}))


def restamp_manifest(directory: Path, fingerprint: str, legacy_fingerprint: str) -> Manifest:
    """Records `fingerprint` in an adapter whose manifest names the same weights by the old scheme."""
    manifest = read_manifest(directory)
    if manifest.model_fingerprint not in (fingerprint, legacy_fingerprint):
        raise AdapterMismatch(
            f"the counterfactual adapter in {directory} was trained on {manifest.model_fingerprint}, which names "
            f"neither {fingerprint} nor, by the old scheme, {legacy_fingerprint}: retrain it instead"
        )
    restamped = replace(manifest, model_fingerprint=fingerprint)
    write_manifest(directory, restamped)
    return restamped


def load_adapted_model(
    base: PreTrainedModel, directory: Path, fingerprint: str, legacy_fingerprint: str | None = None
) -> tuple[PreTrainedModel, Manifest]:
    """A second model: `base`'s weights with the adapter merged in, and the adapter's manifest.

    Raises AdapterMismatch when the adapter was trained on other weights than `fingerprint` names. An adapter
    whose manifest names the same files by the earlier fingerprint scheme (`legacy_fingerprint`) is accepted
    with a log line that says so.
    The copy shares the input and output embeddings with `base` (no adapter touches them, and no parametric
    edit writes them), which is most of a small model's memory: about 0.4 GB extra for Gemma-3-270M, not 1.1.
    Call it before parametric deltas are replayed onto `base`: the adapter was trained on the unedited weights.
    """
    from peft import PeftModel  # imported here: only servers with an adapter pay for it

    manifest = read_manifest(directory)
    if legacy_fingerprint is not None and manifest.model_fingerprint == legacy_fingerprint:
        log.warning("the counterfactual adapter in %s names the served weights by their old fingerprint %s (scheme "
                    "1: config.json bytes); accepted, they are now %s: run scripts/train_counterfactual.py "
                    "--restamp %s to record that", directory, legacy_fingerprint, fingerprint, directory)
    elif manifest.model_fingerprint != fingerprint:
        raise AdapterMismatch(
            f"the counterfactual adapter in {directory} was trained on {manifest.model_fingerprint}, but the served "
            f"model is {fingerprint}; train one for this model with scripts/train_counterfactual.py or point "
            "counterfactual_adapter elsewhere"
        )
    shared = {id(p): p for m in (base.get_input_embeddings(), base.get_output_embeddings()) if m is not None
              for p in m.parameters()}
    adapted = copy.deepcopy(base, memo=dict(shared))  # the memo keeps the embeddings as they are, shared
    merged = PeftModel.from_pretrained(adapted, str(directory)).merge_and_unload()
    merged.eval().requires_grad_(False)
    log.info("counterfactual adapter loaded from %s (trained on %s)", directory, manifest.model_fingerprint)
    return merged, manifest  # type: ignore[return-value]  # merge_and_unload returns the wrapped model
