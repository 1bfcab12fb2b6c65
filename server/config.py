"""The one typed configuration, built once at start-up and passed down.

Sources, later wins: defaults, an optional TOML file, `EDITCACHE_*` environment
variables, command-line flags. Only `server/cli.py` reads the environment.
Config and Limits are pydantic dataclasses: every source is checked against the
field types (a string where a number or a tuple belongs is refused, not kept as
a string), unknown keys are refused, and the checks in __post_init__ follow.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BeforeValidator, ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

ENV_PREFIX = "EDITCACHE_"
GATES = ("classifier", "similarity")
# The served model's weights: fp32 (exact, the default), bf16, or int8 (dynamic quantisation of nn.Linear);
# server/models/load.py says what each does, docs/BENCHMARKS.md what each costs in agreement and gains in speed.
PRECISIONS = ("fp32", "bf16", "int8")
IN_SCOPE_ROUTES = ("counterfactual", "ike", "prompt")  # in order of preference: a missing route falls to the next
SIMILARITY_THRESHOLD = 0.8
# The classifier gate's score from which a new edit asks the same fact as a live edit of its subject: the lowest
# at which no KnowEdit train relation-specificity pair (another relation of the subject) superseded, while 0.96 of
# CounterFact and zsRE train rephrasings did (scripts/measure_supersede.py --split train, docs/BENCHMARKS.md).
SUPERSEDE_THRESHOLD = 0.7
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
STRICT = ConfigDict(extra="forbid")  # an unknown key is an error, named, never ignored
SettingsT = TypeVar("SettingsT")


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "editcache"


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value  # "" (e.g. from the environment) unsets an optional setting


UserPath = Annotated[Path, AfterValidator(Path.expanduser)]
OptionalPath = Annotated[UserPath | None, BeforeValidator(_empty_is_none)]
OptionalFloat = Annotated[float | None, BeforeValidator(_empty_is_none)]
OptionalStr = Annotated[str | None, BeforeValidator(_empty_is_none)]


@dataclass(frozen=True, config=STRICT)
class Limits:
    """Bounds on what one request may ask for (over a bound is INVALID_ARGUMENT), and on load
    (max_edits_per_namespace, max_queue: over them is RESOURCE_EXHAUSTED)."""

    max_text_chars: int = 2000  # subject, prompt, target, paraphrase, stop string
    max_prompt_chars: int = 8000  # a generation prompt
    max_paraphrases: int = 32
    max_aliases: int = 16  # other names of an edit's subject, each a key text
    max_edits_per_request: int = 1000
    max_new_tokens: int = 512
    max_stop_strings: int = 8
    max_page_size: int = 1000
    max_message_bytes: int = 4 * 1024 * 1024
    max_prompt_tokens: int = 2048  # a prompt after tokenisation, with any edit text its route adds
    max_edits_per_namespace: int = 100_000  # 0: no limit
    # Generation and score requests waiting for or running on the model; more get RESOURCE_EXHAUSTED at once.
    max_queue: int = 64
    max_chat_turns: int = 64  # turns in one Chat request; their contents share max_prompt_chars
    max_hops: int = 4  # steps of one multi-hop question (MQuAKE's longest chains); a longer planned one is cut
    # Characters of key texts (prompts, paraphrases, alias keys) that AddEdits and corrections may have waiting for
    # or on the edit-writing thread, which embeds them; past it, RESOURCE_EXHAUSTED at once. Reads and the gate
    # never wait for that thread.
    max_pending_edit_chars: int = 1_000_000


@dataclass(frozen=True, config=STRICT)
class Config:
    model: str = "gemma-3-270m"
    listen: str = "127.0.0.1:50051"
    # HOST:PORT of the HTTP front end (OpenAI-compatible API, edits, the chat page); None: no HTTP.
    http_listen: OptionalStr = None
    data_dir: UserPath = Path("data")
    # A PostgreSQL URL (postgresql://USER[:PASSWORD]@HOST:PORT/DB) of an edit store shared by several servers, which
    # follow each other's writes; None: SQLite files in data_dir. The index files stay in data_dir, one per server.
    store: OptionalStr = None
    # ExportModel writes only in directories under this one (created 0700 when first used); None: data_dir/exports.
    export_dir: OptionalPath = None
    cache_dir: UserPath = field(default_factory=default_cache_dir)
    encoder: str = "all-MiniLM-L6-v2"
    gate: str = "classifier"
    # The trained gate's artifact; None: the one shipped in artifacts/gate/.
    gate_artifact: OptionalPath = None
    # The trained gate for inserted facts and rules (edit kinds insert and patch); None: the one shipped in
    # artifacts/gate/. With unfamiliar_gate False, `gate_artifact` scores every kind.
    unfamiliar_gate_artifact: OptionalPath = None
    unfamiliar_gate: bool = True
    # The trained gate for queries that name an edit's new object and not its subject (reverse questions); None: the
    # one shipped in artifacts/gate/. With object_gate False, edits are found by their subject's keys only.
    object_gate_artifact: OptionalPath = None
    object_gate: bool = True
    # A query the object gate lets in (a reverse question) is answered by the edit's subject (route reverse); False:
    # by the in-scope route, as other in-scope queries. Without the object gate no query is found that way.
    reverse_route: bool = True
    # Gate score at or above which a query is in scope; None: the classifier's own threshold
    # (stored with its artifact), or SIMILARITY_THRESHOLD for the similarity gate.
    threshold: OptionalFloat = None
    # Gate score at or above which a new edit replaces the live edit of its subject it scores against (the same
    # fact asked again); None: SUPERSEDE_THRESHOLD (or `threshold`, if higher) for the classifier gate, `threshold`
    # for the similarity gate.
    supersede_threshold: OptionalFloat = None
    top_k: int = 8
    # Facts an in-scope answer may read (several edits per answer): the edit that answers, then edits the gate also
    # let in, then edits whose subject is an earlier fact's new object; 1: the answering edit alone.
    max_facts: int = 4
    # IKE demonstrations: a CounterFact-format file; None: ../shared/data/counterfact/train.json if present.
    ike_pool: OptionalPath = None
    ike_k: int = 8  # demonstrations per IKE prompt; 0 turns the IKE route off
    # Where the gate sends in-scope queries: counterfactual (the trained model, when an adapter for the served
    # model exists), ike, or prompt; a route the server lacks falls to the next in that order.
    in_scope_route: str = "counterfactual"
    # The counterfactual model's LoRA adapter (scripts/train_counterfactual.py); None: artifacts/counterfactual/
    # <model name>/ in the repository, used only if present. An adapter trained on another model is refused.
    counterfactual_adapter: OptionalPath = None
    # Under this confidence (mean probability of its greedy answer's first tokens) the counterfactual model
    # hands the in-scope query to IKE (prompt without IKE); 0 never hands over. Off by default: on held-out
    # train cases none of the adapter's answers fell under 0.8 and 97 % were right (artifacts/counterfactual/
    # */metrics.json, held_out_after.by_confidence), so reading three answer tokens instead of the one its
    # abstention check reads would only add latency.
    counterfactual_min_confidence: float = 0.0
    # Parametric editing: text the second moment C of MLP keys is estimated from (besides the model's own
    # samples); None: ../shared/data/counterfact/train.json if present.
    stats_text: OptionalPath = None
    stats_tokens: int = 20_000  # tokens C is estimated from (docs/BENCHMARKS.md measures the effect)
    stats_model_samples: int = 64  # 64-token texts the model samples itself for C
    context_prefixes: int = 5  # generated prefixes ROME/MEMIT average keys and values over (0: the prompt alone)
    # Other wordings of an edit's prompt ROME/MEMIT also optimise its value on, from the rephrasing pairs of a
    # CounterFact-format file (server/parametric/wordings.py); None: ../shared/data/counterfact/train.json if present.
    wordings_file: OptionalPath = None
    other_wordings: int = 4  # 0: the edit's own wording only
    # The served model's demonstrations for planning a multi-hop question's steps (server/multihop.py); None:
    # artifacts/multihop/demonstrations.json, written from KnowEdit train records.
    multihop_demonstrations: OptionalPath = None
    multihop_answer_tokens: int = 12  # a step the base model answers: MQuAKE's longest answers fit
    default_max_new_tokens: int = 32
    default_page_size: int = 100
    torch_threads: int = 0  # 0: torch's default
    # Answers decoded together in each model's running batch (server/generators/batching.py); 1: one at a time, so
    # an out-of-scope answer is bit-identical to the unedited model's greedy tokens (batched rows may differ in the
    # last bits of a matmul: docs/BENCHMARKS.md measures how often the tokens do).
    batch_size: int = 16
    # The base model's and the counterfactual model's weights (PRECISIONS); the gate's encoder stays fp32. Only fp32
    # gives out-of-scope answers bit-identical to the fp32 model; int8 serves parametric edits made earlier but
    # refuses new ones (FailedPrecondition).
    precision: str = "fp32"
    shutdown_grace_s: float = 5.0
    log_level: str = "INFO"
    # Bearer tokens (TOML or JSON, hashes only; see server/auth/tokens.py). None: auth off, local single-user mode.
    tokens_file: OptionalPath = None
    tls_cert: OptionalPath = None  # PEM certificate chain; with tls_key, the port speaks TLS only
    tls_key: OptionalPath = None
    insecure: bool = False  # allow a non-loopback listen address without tokens
    # HOST:PORT serving Prometheus /metrics on its own port (without auth); None: not served there.
    metrics_listen: Annotated[str | None, BeforeValidator(_empty_is_none)] = None
    # Key vectors in a namespace from which its index is approximate (a PQ scan re-ranked exactly, built in the
    # background); 0: always exact. 100,000 keeps the exact search under about 10 ms on 2 cores
    # (docs/BENCHMARKS.md, "Approximate index").
    approximate_index_threshold: int = 100_000
    # The answer to a query in the scope of an erase edit (the fact must no longer be stated).
    refusal: str = "I don't know."
    limits: Limits = field(default_factory=Limits)

    @property
    def export_root(self) -> Path:
        """Where ExportModel writes: `export_dir`, or `exports` in the data directory."""
        return self.export_dir if self.export_dir is not None else self.data_dir / "exports"

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.supersede_threshold is not None and not 0.0 <= self.supersede_threshold <= 1.0:
            raise ValueError(f"supersede_threshold must be in [0, 1], got {self.supersede_threshold}")
        if not 0.0 <= self.counterfactual_min_confidence <= 1.0:
            raise ValueError(
                f"counterfactual_min_confidence must be in [0, 1], got {self.counterfactual_min_confidence}"
            )
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if self.max_facts < 1:
            raise ValueError(f"max_facts must be at least 1 (1: the answering edit alone), got {self.max_facts}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (1: one answer at a time), got {self.batch_size}")
        if self.stats_tokens < 1 or min(self.stats_model_samples, self.context_prefixes, self.other_wordings) < 0:
            raise ValueError(
                "stats_tokens must be at least 1; stats_model_samples, context_prefixes and other_wordings at least 0"
            )
        if self.in_scope_route not in IN_SCOPE_ROUTES:
            raise ValueError(f"in_scope_route must be one of {', '.join(IN_SCOPE_ROUTES)}, got {self.in_scope_route!r}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {', '.join(GATES)}, got {self.gate!r}")
        for name, address in (("listen", self.listen), ("http_listen", self.http_listen)):
            if address is not None and not re.fullmatch(r"[^:\s]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", address):
                raise ValueError(f"{name} must be HOST:PORT, got {address!r}")
        if self.metrics_listen is not None and not re.fullmatch(r"[^:\s]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}",
                                                                self.metrics_listen):
            raise ValueError(f"metrics_listen must be HOST:PORT, got {self.metrics_listen!r}")
        if not 1 <= self.default_max_new_tokens <= self.limits.max_new_tokens:
            raise ValueError(
                f"default_max_new_tokens must be in [1, {self.limits.max_new_tokens}], "
                f"got {self.default_max_new_tokens}"
            )
        if not 1 <= self.default_page_size <= self.limits.max_page_size:
            raise ValueError(f"default_page_size must be in [1, {self.limits.max_page_size}]")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both, or neither for plaintext")
        if self.limits.max_queue < 1 or self.limits.max_prompt_tokens < 1 or self.limits.max_edits_per_namespace < 0:
            raise ValueError("limits.max_queue and limits.max_prompt_tokens must be at least 1, "
                             "limits.max_edits_per_namespace at least 0 (0: no limit)")
        if self.store is not None and not self.store.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"store must be a postgresql:// URL (or unset for SQLite in data_dir), got {self.store!r}")
        if self.approximate_index_threshold < 0:
            raise ValueError(f"approximate_index_threshold must be at least 0 (0: always exact), "
                             f"got {self.approximate_index_threshold}")
        if not self.refusal.strip() or len(self.refusal) > self.limits.max_text_chars:
            raise ValueError(f"refusal must be non-empty text of at most {self.limits.max_text_chars} characters, "
                             f"got {self.refusal!r}")
        if self.limits.max_chat_turns < 1:
            raise ValueError(f"limits.max_chat_turns must be at least 1, got {self.limits.max_chat_turns}")
        if self.limits.max_hops < 1:
            raise ValueError(f"limits.max_hops must be at least 1, got {self.limits.max_hops}")
        if not 1 <= self.multihop_answer_tokens <= self.limits.max_new_tokens:
            raise ValueError(f"multihop_answer_tokens must be in [1, {self.limits.max_new_tokens}], "
                             f"got {self.multihop_answer_tokens}")
        if self.limits.max_pending_edit_chars < 1:
            raise ValueError(
                f"limits.max_pending_edit_chars must be at least 1, got {self.limits.max_pending_edit_chars}"
            )


def build_config(
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Merges the sources in order; unknown keys and values of the wrong type are a ValueError naming the key."""
    values: dict[str, Any] = {}
    if file is not None:
        with open(file, "rb") as f:
            _merge(values, tomllib.load(f))
    for key, raw in (environ or {}).items():
        if key.startswith(ENV_PREFIX):
            values[key[len(ENV_PREFIX):].lower()] = raw
    _merge(values, {k: v for k, v in (overrides or {}).items() if v is not None})
    # A dataclass also validates from a list (as positional arguments): only a table names its limits.
    if "limits" in values and not isinstance(values["limits"], Mapping):
        raise ValueError("set limits one at a time, e.g. max_queue under [limits] in the file, not limits")
    return settings_from(Config, values)


def settings_from(cls: type[SettingsT], values: Mapping[str, Any]) -> SettingsT:
    """`cls` (a pydantic dataclass) validated from `values`; a ValueError that names every bad key and why."""
    try:
        return TypeAdapter(cls).validate_python(values)
    except ValidationError as exc:
        raise ValueError(_problems(exc)) from None


def _merge(values: dict[str, Any], new: Mapping[str, Any]) -> None:
    """Later sources win key by key, also inside the [limits] table."""
    for key, value in new.items():
        if key == "limits" and isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
            values[key] = {**values[key], **value}
        else:
            values[key] = value


def _problems(exc: ValidationError) -> str:
    unknown, problems = [], []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "unexpected_keyword_argument":
            unknown.append(where)
        elif not where:  # from __post_init__, which names the setting itself
            problems.append(str(error.get("ctx", {}).get("error", error["msg"])))
        else:
            problems.append(f"setting {where}: {error['msg']}, got {error['input']!r}")
    if unknown:
        problems.insert(0, f"unknown setting(s) {', '.join(unknown)} (the keys are the fields in server/config.py)")
    return "; ".join(problems)
