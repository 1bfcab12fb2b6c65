"""Wiring: build the parts, serve gRPC, stop cleanly. The only module that picks concrete classes."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import signal
import sys
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from transformers import PreTrainedTokenizerBase

from editcache.v1 import chat_pb2 as chat_pb
from editcache.v1 import chat_pb2_grpc as chat_pb_grpc
from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from editcache.v1 import parametric_pb2 as parametric_pb
from editcache.v1 import parametric_pb2_grpc as parametric_pb_grpc
from editdata.paths import COUNTERFACT_TRAIN
from server import metrics
from server.auth.authorizer import Authorizer
from server.chat.corrections import CorrectionExtractor
from server.chat.transcript import conversation_format
from server.config import IN_SCOPE_ROUTES, SIMILARITY_THRESHOLD, SUPERSEDE_THRESHOLD, Config
from server.gate.artifact import (
    DEFAULT_ARTIFACT,
    DEFAULT_OBJECT_ARTIFACT,
    DEFAULT_UNFAMILIAR_ARTIFACT,
    GateArtifact,
    load_artifact,
)
from server.gate.classifier import ClassifierGate
from server.gate.similarity import SimilarityGate
from server.generators.base import BaseGenerator
from server.generators.batching import ModelThread
from server.generators.counterfactual import CounterfactualGenerator
from server.generators.counterfactual_adapter import AdapterMismatch, default_adapter_dir, load_adapted_model
from server.generators.decoding import CausalLM
from server.generators.ike import DemonstrationPool, IKEGenerator
from server.generators.prompted import PromptedGenerator
from server.generators.stated import refusal_generator, reverse_generator
from server.http.app import create_app
from server.http.metrics import metrics_router
from server.http.serving import HttpServer, start_http
from server.interfaces import Gate, Generator
from server.memory.ann import AnnSettings
from server.memory.batched_embedder import BatchedEmbedder
from server.memory.edit_memory import EditMemory
from server.memory.embed import SentenceEncoder
from server.memory.postgres_follow import StoreFollower
from server.memory.store import EditStore
from server.models.load import LoadedModel, load_model, quantise_for_serving
from server.multihop import DEFAULT_DEMONSTRATIONS, FewShotPlanner, RouterSteps, load_demonstrations
from server.parametric.editor import ParametricEditor, ParametricSettings
from server.parametric.ledger import Ledger
from server.parametric.wordings import Wordings
from server.router import Router
from server.scope import ScopeCheck
from server.service import ServerInfo, Service, ServiceHolder
from server.service.answers import Answers
from server.service.edits import Edits
from server.service.parametric import Parametric
from server.service.writes import WriteLane
from server.servicers.chat import ChatServicer
from server.servicers.edits import EditServicer
from server.servicers.inference import InferenceServicer
from server.servicers.parametric import ParametricServicer
from server.types import GenerationOptions, Route
from server.worker import ModelWorker

log = logging.getLogger(__name__)
DEFAULT_IKE_POOL = COUNTERFACT_TRAIN
DEFAULT_STATS_TEXT = DEFAULT_IKE_POOL  # its prompts and answers: offline English text in the benchmark's domain

SERVICE_NAMES = (
    *(pb.DESCRIPTOR.services_by_name[name].full_name for name in ("EditService", "InferenceService")),
    parametric_pb.DESCRIPTOR.services_by_name["ParametricService"].full_name,
    chat_pb.DESCRIPTOR.services_by_name["ChatService"].full_name,
)


def build_service(config: Config) -> Service:
    """Loads the encoder, the edit memory and the model (minutes on a first run, seconds after)."""
    encoder = SentenceEncoder(config.encoder)
    memory = EditMemory(config.data_dir, encoder, config.encoder, config.limits.max_edits_per_namespace,
                        AnnSettings(threshold=config.approximate_index_threshold),
                        store=EditStore(config.store) if config.store is not None else None)
    degraded: list[str] = []  # a sentence per default part that cannot be used
    gate, threshold, gate_degraded = build_gate(config, encoder)
    # Over a shared store, other servers' writes reach this one's index and gate cache from here on.
    follower = StoreFollower(memory, gate.warm) if memory.shared else None
    if follower is not None:
        follower.start()
    if gate_degraded is not None:
        degraded.append(gate_degraded)
    loaded = load_model(config.model, config.cache_dir, config.torch_threads, config.precision)
    # The only thread that runs the language models; it batches their concurrent answers (config.batch_size).
    worker = ModelWorker(config.limits.max_queue, config.batch_size)
    # From the unedited weights: before the replay below.
    counterfactual, counterfactual_off = build_counterfactual(config, loaded, worker.batching)
    parametric = build_parametric(config, loaded)
    quantise_for_serving(loaded.model, loaded.precision)  # int8: after the replay, which needs float weights
    lm = CausalLM(loaded.model, loaded.tokenizer, config.limits.max_prompt_tokens, watch=parametric.watching,
                  batching=worker.batching)
    base = BaseGenerator(lm)
    # Edits baked into the weights are answered by the (edited) base model.
    generators: dict[Route, Generator] = {Route.BASE: base, Route.PARAMETRIC: base, Route.PROMPT: PromptedGenerator(lm)}
    if counterfactual is not None:
        generators[Route.COUNTERFACTUAL] = counterfactual
    if (reverse := build_reverse(config, gate, loaded.tokenizer)) is not None:
        generators[Route.REVERSE] = reverse
    if (ike := build_ike(config, lm, encoder)) is not None:
        generators[Route.IKE] = ike
    in_scope_route, fallback_route = in_scope_routes(config.in_scope_route, generators)
    if counterfactual_off is not None and config.in_scope_route == Route.COUNTERFACTUAL.value:
        degraded.append(f"in-scope queries are answered by the {in_scope_route.value} route, not the "
                        f"counterfactual model: {counterfactual_off}")
    log.info("in-scope queries take the %s route%s", in_scope_route.value,
             f" (base when it abstains, {fallback_route.value} under confidence {config.counterfactual_min_confidence})"
             if in_scope_route is Route.COUNTERFACTUAL else "")
    # Concurrent queries share encoder passes.
    scope = ScopeCheck(BatchedEmbedder(encoder), memory, gate, config.top_k, hidden=parametric.hidden_from_gate,
                       threshold=threshold, supersede_threshold=supersede_threshold(config, gate, threshold))
    router = Router(
        scope=scope, memory=memory, generators=generators, in_scope_route=in_scope_route, threshold=threshold,
        baked=parametric.is_baked, judge=counterfactual.judge if counterfactual is not None else None,
        min_confidence=config.counterfactual_min_confidence, fallback_route=fallback_route,
        refusal=refusal_generator(loaded.tokenizer, config.refusal), max_facts=config.max_facts,
    )
    info = ServerInfo(
        model=config.model, model_type=str(loaded.model.config.model_type),
        parameters=sum(p.numel() for p in loaded.model.parameters()), encoder=config.encoder,
        gate="similarity" if isinstance(gate, SimilarityGate) else config.gate,  # the gate in force
        threshold=threshold, top_k=config.top_k, in_scope_route=router.in_scope_route,
        routes=tuple(generators), version=version("editcache"), model_fingerprint=loaded.fingerprint.current,
        degraded=tuple(degraded),
    )
    metrics.watch_queue(lambda: worker.pending)
    metrics.watch_edits(memory.edit_counts)
    io = ThreadPoolExecutor(2, thread_name_prefix="io")  # reads, the gate's embedding and SQLite work
    writing = ThreadPoolExecutor(1, thread_name_prefix="edit-writes")  # AddEdits' embedding, apart from reads

    def close() -> None:
        worker.shutdown()
        io.shutdown(wait=True)
        writing.shutdown(wait=True)
        if follower is not None:
            follower.stop()
        memory.close()
        parametric.close()

    return Service(
        info,
        Answers(config, router, worker, io, conversation_format(loaded.tokenizer), *build_multihop(config, lm, router)),
        Edits(config, scope, memory, io, WriteLane(writing, config.limits.max_pending_edit_chars), worker,
              CorrectionExtractor(base),
              baked=lambda namespace, edit_id: parametric.baked(namespace, edit_id) is not None),
        Parametric(config, parametric, memory, io, worker),
        close,
    )


def build_multihop(config: Config, lm: CausalLM, router: Router) -> tuple[FewShotPlanner, RouterSteps]:
    """The served model as the multi-hop planner (after the shipped or configured demonstrations), and the steps
    answered through the router, a generated answer cut to a few greedy tokens up to the line's end."""
    path = config.multihop_demonstrations or DEFAULT_DEMONSTRATIONS
    planner = FewShotPlanner(lm, load_demonstrations(path), config.limits.max_hops)
    options = GenerationOptions(config.multihop_answer_tokens, stop=("\n",))
    return planner, RouterSteps(router, options)


def build_reverse(config: Config, gate: Gate, tokenizer: PreTrainedTokenizerBase) -> Generator | None:
    """The reverse route when configured and the gate finds edits by their object (else no query would take it)."""
    return reverse_generator(tokenizer) if config.reverse_route and gate.reads_objects else None


def in_scope_routes(configured: str, available: Collection[Route]) -> tuple[Route, Route]:
    """The in-scope route (the configured one, else the next in IN_SCOPE_ROUTES the server has) and the route
    an unsure counterfactual model hands over to (IKE, else prompt)."""
    preferred = IN_SCOPE_ROUTES[IN_SCOPE_ROUTES.index(configured):]
    route = next((Route(r) for r in preferred if Route(r) in available), Route.PROMPT)
    return route, Route.IKE if Route.IKE in available else Route.PROMPT


def build_counterfactual(
    config: Config, loaded: LoadedModel, batching: ModelThread | None = None
) -> tuple[CounterfactualGenerator | None, str | None]:
    """The counterfactual model when an adapter trained on the served model exists, else None and why.

    A configured adapter that is missing or was trained on another model stops the start; the default one
    (artifacts/counterfactual/<model>/) is skipped with a warning.
    """
    directory = config.counterfactual_adapter or default_adapter_dir(loaded.name)
    if not directory.exists():
        if config.counterfactual_adapter is not None:
            raise ValueError(f"counterfactual_adapter {directory} does not exist")
        why = f"no adapter for {loaded.name} at {directory} (scripts/train_counterfactual.py makes one)"
        log.info("counterfactual route off: %s", why)
        return None, why
    try:
        model, manifest = load_adapted_model(loaded.model, directory, loaded.fingerprint.current,
                                             loaded.fingerprint.legacy)
    except AdapterMismatch as exc:
        if config.counterfactual_adapter is not None:
            raise
        log.warning("counterfactual route off: %s", exc)
        return None, str(exc)
    quantise_for_serving(model, loaded.precision)  # the adapter is merged in float weights first
    # Its own tokenizer: the router asks it for its judgement on an I/O thread, and a fast tokenizer used by two
    # threads fails ("Already borrowed") when one changes its padding (parametric statistics do, on the model thread).
    tokenizer = copy.deepcopy(loaded.tokenizer)
    lm = CausalLM(model, tokenizer, config.limits.max_prompt_tokens, batching=batching)
    return CounterfactualGenerator(lm, manifest.prompt), None


def build_parametric(config: Config, loaded: LoadedModel) -> ParametricEditor:
    """The weight editor, with every recorded delta replayed onto the freshly loaded weights."""
    ledger = Ledger(config.store or config.data_dir / "parametric.sqlite", loaded.fingerprint.current,
                    loaded.fingerprint.legacy)
    text = config.stats_text or DEFAULT_STATS_TEXT
    settings = ParametricSettings(
        cache_dir=config.cache_dir, text_files=(text,) if text.exists() else (),
        stats_tokens=config.stats_tokens, model_samples=config.stats_model_samples, prefixes=config.context_prefixes,
        wordings=load_wordings(config.wordings_file or DEFAULT_IKE_POOL) if config.other_wordings else Wordings(),
        other_wordings=config.other_wordings,
    )
    # Key statistics computed on bf16 activations are kept apart from the fp32 ones (the ledger's deltas are not:
    # they fit the same weights whatever the precision they are added in).
    statistics_id = loaded.fingerprint.current + ("" if loaded.precision == "fp32" else f"-{loaded.precision}")
    frozen = None if loaded.precision != "int8" else (
        "the server runs with --precision int8, whose quantised weights take no parametric change: the edits "
        "already in the ledger are served, but applying, rolling back and exporting need float weights; restart "
        "with --precision bf16 or fp32 to change them")
    editor = ParametricEditor(loaded.model, loaded.tokenizer, loaded.arch, ledger, statistics_id, settings, frozen)
    if replayed := editor.replay():
        log.info("replayed %d parametric deltas (%d edits in the weights)", replayed, len(editor.baked_edits()))
    return editor


def load_wordings(path: Path) -> Wordings:
    """The rephrasing pairs of a CounterFact-format file; none (a warning) when the file is missing."""
    if not path.exists():
        log.warning("no wordings file at %s: ROME/MEMIT optimise each edit on its own wording only", path)
        return Wordings()
    try:
        return Wordings.load(path)
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"wordings file {path} is not a CounterFact-format JSON list: {exc}") from exc


def build_gate(config: Config, encoder: SentenceEncoder) -> tuple[Gate, float, str | None]:
    """The configured gate, the threshold it is used with, and a sentence when the classifier should be on but is not.

    A configured gate artifact that cannot be used stops the start; when the shipped one cannot, the similarity
    gate stands in, and the sentence says so and why.
    """
    similarity = SIMILARITY_THRESHOLD if config.threshold is None else config.threshold
    if config.gate == "similarity":
        return SimilarityGate(), similarity, None
    try:
        artifact = load_artifact(config.gate_artifact or DEFAULT_ARTIFACT)
        if artifact.encoder != config.encoder:
            raise ValueError(
                f"the gate artifact was trained on encoder {artifact.encoder}; the server uses {config.encoder}"
            )
    except (OSError, ValueError, KeyError) as exc:
        if config.gate_artifact is not None:
            raise
        sentence = (f"the similarity gate (threshold {similarity}) decides which queries are in scope, not the "
                    f"trained scope classifier: {DEFAULT_ARTIFACT} cannot be used ({exc})")
        log.warning("scope classifier off: %s", sentence)
        return SimilarityGate(), similarity, sentence
    threshold = artifact.threshold if config.threshold is None else config.threshold
    log.info("scope classifier (%s) loaded; threshold %.3f (the artifact's: %.3f)", artifact.kind, threshold,
             artifact.threshold)
    return (ClassifierGate(artifact, encoder, unfamiliar=unfamiliar_gate(config), objects=object_gate(config)),
            threshold, None)


def unfamiliar_gate(config: Config) -> GateArtifact | None:
    """The gate for insert and patch edits (see `side_gate`)."""
    return side_gate(config.unfamiliar_gate, config.unfamiliar_gate_artifact, DEFAULT_UNFAMILIAR_ARTIFACT,
                     config.encoder, "insert and patch edits", "the main gate scores insert and patch edits too")


def object_gate(config: Config) -> GateArtifact | None:
    """The gate for queries naming an edit's new object (see `side_gate`)."""
    return side_gate(config.object_gate, config.object_gate_artifact, DEFAULT_OBJECT_ARTIFACT, config.encoder,
                     "queries naming an edit's new object", "edits are found by their subject only")


def side_gate(enabled: bool, configured: Path | None, shipped: Path, encoder: str, scores: str,
              without: str) -> GateArtifact | None:
    """A gate beside the main one, for what it `scores`: the configured artifact (which must load), else the
    shipped one (when that cannot be used: none, with a warning saying what happens `without` it)."""
    if not enabled:
        return None
    try:
        artifact = load_artifact(configured or shipped)
        if artifact.encoder != encoder:
            raise ValueError(f"the gate for {scores} was trained on encoder {artifact.encoder}; the server uses "
                             f"{encoder}")
    except (OSError, ValueError, KeyError) as exc:
        if configured is not None:
            raise
        log.warning("%s: %s cannot be used (%s)", without, shipped, exc)
        return None
    log.info("%s: scope classifier %s, threshold %.3f", scores, artifact.kind, artifact.threshold)
    return artifact


def supersede_threshold(config: Config, gate: Gate, threshold: float) -> float:
    if config.supersede_threshold is not None:
        return config.supersede_threshold
    return max(threshold, SUPERSEDE_THRESHOLD) if isinstance(gate, ClassifierGate) else threshold


def build_ike(config: Config, lm: CausalLM, encoder: SentenceEncoder) -> IKEGenerator | None:
    pool_path = config.ike_pool or DEFAULT_IKE_POOL
    if config.ike_k == 0 or not pool_path.exists():
        log.info("IKE route off (%s)", "ike_k is 0" if config.ike_k == 0 else f"no demonstration pool at {pool_path}")
        return None
    pool = DemonstrationPool.load(pool_path, encoder, config.encoder, config.cache_dir)
    return IKEGenerator(lm, pool, encoder, config.ike_k)


async def serve(
    config: Config, auth: Authorizer, on_bound: Callable[[int], None] | None = None,
    on_http_bound: Callable[[int], None] | None = None,
) -> None:
    """Binds first (health NOT_SERVING, RPCs UNAVAILABLE, HTTP 503), loads, then serves until SIGINT/SIGTERM.

    `auth` guards the editcache services; health and reflection stay open. With `config.http_listen`, the HTTP
    front end (server/http/) runs in this loop on the same service; `on_http_bound` gets its port before
    `on_bound` gets gRPC's, so a launcher that waits for the latter knows both.
    """
    limits = config.limits
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
    ])
    holder = ServiceHolder()
    health = HealthServicer()
    pb_grpc.add_EditServiceServicer_to_server(EditServicer(holder, auth), server)
    pb_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(holder, auth), server)
    parametric_pb_grpc.add_ParametricServiceServicer_to_server(ParametricServicer(holder, auth), server)
    chat_pb_grpc.add_ChatServiceServicer_to_server(ChatServicer(holder, auth), server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, reflection.SERVICE_NAME, "grpc.health.v1.Health"), server)
    for name in ("", *SERVICE_NAMES):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    if config.tls_cert is not None and config.tls_key is not None:
        credentials = grpc.ssl_server_credentials([(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])
        port = server.add_secure_port(config.listen, credentials)
    else:
        port = server.add_insecure_port(config.listen)
    if port == 0:
        raise OSError(f"could not bind {config.listen}")
    await server.start()
    host = config.listen.rsplit(":", 1)[0]
    log.info("listening on %s:%d (loading the model; RPCs answer UNAVAILABLE until ready)", host, port)
    log.info("transport %s; auth %s", "TLS" if config.tls_cert else "plaintext",
             "on (bearer tokens)" if auth.enabled else "off (no tokens_file: every caller may do everything)")
    http: HttpServer | None = None
    if config.http_listen is not None:
        app = create_app(holder, auth, routers=[metrics_router()])  # /metrics on the HTTP port too
        http = await start_http(app, config.http_listen, config.shutdown_grace_s, config.tls_cert, config.tls_key)
        log.info("HTTP%s on %s:%d: the OpenAI-compatible API under /v1, the chat page at /",
                 "S" if config.tls_cert else "", config.http_listen.rsplit(":", 1)[0], http.port)
        if on_http_bound is not None:
            on_http_bound(http.port)
    stop_metrics = None
    if config.metrics_listen is not None:
        metrics_host, metrics_port = config.metrics_listen.rsplit(":", 1)
        stop_metrics = metrics.serve_metrics(metrics_host.strip("[]"), int(metrics_port))
        log.info("Prometheus metrics on http://%s/metrics", config.metrics_listen)
    if on_bound is not None:
        on_bound(port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    loading: asyncio.Future[Any] = loop.run_in_executor(None, build_service, config)
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    try:
        service: Service | None = loading.result() if loading.done() else None  # a load failure raises here
    except BaseException:
        await server.stop(None)  # in this loop: the caller prints why the start failed, then exits
        if http is not None:
            await http.stop()
        raise
    if service is not None:
        for sentence in service.info.degraded:  # besides the log: where a user running `make serve` looks
            # stderr may be a file on a full disk: a lost notice must not stop a server that can serve reads.
            with contextlib.suppress(OSError):
                print(f"editcache-server: degraded start: {sentence}", file=sys.stderr, flush=True)
        holder.set(service)
        for name in ("", *SERVICE_NAMES):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("ready on %s:%d", host, port)
        await stop.wait()

    log.info("shutting down: draining for up to %.0f s", config.shutdown_grace_s)
    await health.enter_graceful_shutdown()
    await server.stop(config.shutdown_grace_s)
    if http is not None:
        await http.stop()
    if service is not None:
        service.close()
    if stop_metrics is not None:
        stop_metrics()
    log.info("stopped")

