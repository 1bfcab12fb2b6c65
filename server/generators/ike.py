"""In-context knowledge editing (IKE, Zheng et al. 2023): the edit taught by retrieved demonstrations.

The prompt holds k demonstrations, then the new fact and the query. Demonstrations come from a pool of
CounterFact-format records; each record gives the paper's three kinds:
- copy: the edited prompt itself, answered with the new target;
- update: a paraphrase, answered with the new target;
- retain: a neighbouring prompt, answered with its own (unchanged) answer.
The records nearest to the edit (by sentence embedding of the new fact) supply them, kinds in turn.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from server.generators.decoding import CausalLM
from server.generators.in_prompt import EditInPromptGenerator, with_related
from server.interfaces import Embedder
from server.types import Edit, EditKind, GenerationOptions, Route

log = logging.getLogger(__name__)

KINDS = ("copy", "update", "retain")
DEMONSTRATION_END = "\n\n"


@dataclass(frozen=True)
class Demonstration:
    kind: str  # copy, update or retain
    fact: str  # "New Fact: …" line
    prompt: str
    answer: str

    def render(self) -> str:
        return f"New Fact: {self.fact}\nPrompt: {self.prompt} {self.answer}{DEMONSTRATION_END}"


def demonstrations_of(record: dict) -> tuple[Demonstration, ...] | None:
    """The copy, update and retain demonstrations of one EasyEdit-flat CounterFact record."""
    try:
        fact = f"{record['prompt']} {record['target_new']}"
        return (
            Demonstration("copy", fact, record["prompt"], record["target_new"]),
            Demonstration("update", fact, record["rephrase_prompt"], record["target_new"]),
            Demonstration("retain", fact, record["locality_prompt"], record["locality_ground_truth"]),
        )
    except (KeyError, TypeError):
        return None


class DemonstrationPool:
    """Demonstrations with the embedding of their new fact, loaded once and cached on disk."""

    def __init__(self, demonstrations: list[tuple[Demonstration, ...]], vectors: np.ndarray) -> None:
        self._demonstrations = demonstrations
        self._vectors = vectors  # (n_records, dim), unit rows

    @classmethod
    def load(cls, path: Path, encoder: Embedder, encoder_name: str, cache_dir: Path) -> DemonstrationPool:
        raw = path.read_bytes()
        records = [d for r in json.loads(raw) if (d := demonstrations_of(r)) is not None]
        if not records:
            raise ValueError(f"{path} holds no CounterFact records (prompt, target_new, rephrase_prompt, locality_*)")
        key = hashlib.sha256(raw + encoder_name.encode()).hexdigest()[:16]
        cached = cache_dir / "ike" / f"pool-{key}.npy"
        if cached.exists():
            vectors = np.load(cached)
        else:
            log.info("embedding the IKE demonstration pool (%d records from %s), once", len(records), path)
            vectors = encoder.encode([demos[0].fact for demos in records])  # (n, dim)
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, vectors)
        log.info("IKE pool: %d records from %s", len(records), path)
        return cls(records, vectors)

    def nearest(self, query_vector: np.ndarray, k: int) -> list[Demonstration]:
        """k demonstrations from the k records nearest to the vector, kinds taken in turn; most similar last."""
        order = np.argsort(-(self._vectors @ query_vector))[:k]  # (k,)
        chosen = [self._demonstrations[int(i)][n % len(KINDS)] for n, i in enumerate(order)]
        return chosen[::-1]  # the closest demonstration sits next to the query


class IKEGenerator(EditInPromptGenerator):
    route = Route.IKE

    def __init__(self, lm: CausalLM, pool: DemonstrationPool, encoder: Embedder, k: int) -> None:
        super().__init__(lm)
        self._pool = pool
        self._encoder = encoder
        self._k = k

    def adjust_options(self, options: GenerationOptions) -> GenerationOptions:
        # The model would go on to write the next demonstration; a blank line ends each one.
        return replace(options, stop=(*options.stop, DEMONSTRATION_END))

    def prompt_for(self, edit: Edit, query: str, related: Sequence[Edit] = ()) -> str:
        fact = edit.statement() if edit.kind is EditKind.PATCH else f"{edit.prompt.rstrip()} {edit.target_new.strip()}"
        demos = self._pool.nearest(self._encoder.encode([fact])[0], self._k)  # chosen by the answering edit's fact
        facts = with_related(f"{fact}.", related) if related else fact  # sentences once there are several
        return "".join(d.render() for d in demos) + f"New Fact: {facts}\nPrompt: {query}"
