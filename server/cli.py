"""editcache-server: flags → Config → app.serve(config)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="editcache-server",
        description="Serve a base model behind a gated edit memory over gRPC. "
        "Settings come from defaults, --config FILE (TOML), EDITCACHE_* variables, then these flags.",
    )
    parser.add_argument("--config", type=Path, help="TOML file of settings (keys as in server/config.py)")
    parser.add_argument("--model", help="gemma-3-270m (default), smollm2-135m-instruct, a model folder or a .gguf file")
    parser.add_argument("--listen", help="HOST:PORT to bind (default 127.0.0.1:50051; port 0 picks a free one)")
    parser.add_argument("--http-listen",
                        help="HOST:PORT for HTTP: the OpenAI-compatible API and the chat page (default: off)")
    parser.add_argument("--data-dir", type=Path, help="where the edit store and index live (default ./data)")
    parser.add_argument("--store",
                        help="postgresql://USER@HOST:PORT/DB: an edit store shared with other servers, which follow "
                        "each other's writes (default: SQLite in --data-dir)")
    parser.add_argument("--cache-dir", type=Path, help="converted-model cache (default ~/.cache/editcache)")
    parser.add_argument("--export-dir", type=Path, help="ExportModel writes only under this (default DATA_DIR/exports)")
    parser.add_argument("--encoder", help="sentence encoder: all-MiniLM-L6-v2 (default) or a local folder")
    parser.add_argument("--gate", help="scope gate: classifier (default, the trained one) or similarity")
    parser.add_argument("--gate-artifact", type=Path, help="a trained gate (.npz) instead of the shipped one")
    parser.add_argument("--unfamiliar-gate-artifact", type=Path,
                        help="a trained gate (.npz) for insert and patch edits instead of the shipped one")
    parser.add_argument("--no-unfamiliar-gate", dest="unfamiliar_gate", action="store_false", default=None,
                        help="score insert and patch edits with the main gate too")
    parser.add_argument("--object-gate-artifact", type=Path,
                        help="a trained gate (.npz) for queries naming an edit's new object instead of the shipped one")
    parser.add_argument("--no-object-gate", dest="object_gate", action="store_false", default=None,
                        help="find edits by their subject only, not by a new object the query names")
    parser.add_argument("--no-reverse-route", dest="reverse_route", action="store_false", default=None,
                        help="answer a question found by an edit's new object with the in-scope route, not with "
                             "the edit's subject")
    parser.add_argument("--threshold", type=float, help="gate score at or above which a query is in scope")
    parser.add_argument("--supersede-threshold", type=float,
                        help="gate score at or above which a new edit replaces a live edit of its subject (default "
                             "0.7 with the trained gate)")
    parser.add_argument("--top-k", type=int, help="edits retrieved per query before gating (default 8)")
    parser.add_argument("--max-facts", type=int,
                        help="edits an in-scope answer may read: the one that answers, others the gate let in, and "
                             "ones about an earlier fact's new object (default 4; 1: the answering edit alone)")
    parser.add_argument("--ike-pool", type=Path, help="CounterFact-format file of IKE demonstrations")
    parser.add_argument("--multihop-demonstrations", type=Path,
                        help="the planner's shots for AnswerMultiHop (default: artifacts/multihop/demonstrations.json)")
    parser.add_argument("--in-scope-route", help="counterfactual (default; ike without an adapter), ike or prompt")
    parser.add_argument("--counterfactual-adapter", type=Path,
                        help="the counterfactual model's adapter directory (default artifacts/counterfactual/MODEL/)")
    parser.add_argument("--counterfactual-min-confidence", type=float,
                        help="under this confidence the counterfactual model hands the query to IKE (default 0: never)")
    parser.add_argument("--ike-k", type=int, help="IKE demonstrations per prompt (default 8; 0: no IKE route)")
    parser.add_argument("--stats-tokens", type=int,
                        help="tokens ROME/MEMIT estimate each layer's key statistics from (default 20000)")
    parser.add_argument("--context-prefixes", type=int,
                        help="generated prefixes ROME/MEMIT average keys and values over (default 5)")
    parser.add_argument("--other-wordings", type=int,
                        help="other wordings of an edit's prompt ROME/MEMIT optimise its value on (default 4; 0: none)")
    parser.add_argument("--precision",
                        help="the model's weights: fp32 (default, exact), bf16 or int8 (faster, not exact; the "
                        "README's 'Serving precision' gives each one's agreement with fp32 and speed)")
    parser.add_argument("--torch-threads", type=int, help="intra-op threads for torch (0: torch's default)")
    parser.add_argument("--batch-size", type=int,
                        help="answers decoded together per model (default 16; 1: one at a time, exact)")
    parser.add_argument("--log-level", help="DEBUG, INFO (default), WARNING or ERROR")
    parser.add_argument("--tokens-file", type=Path,
                        help="bearer tokens (TOML/JSON of hashes; `python -m server.auth add` makes them); "
                        "without one, auth is off")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve TLS (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    parser.add_argument("--metrics-listen",
                        help="HOST:PORT serving Prometheus /metrics on its own port, without auth (default: off; "
                        "with --http-listen, /metrics is also on the HTTP port)")
    parser.add_argument("--approximate-index-threshold", type=int,
                        help="key vectors in a namespace from which its index is approximate "
                        "(default 100000; 0: exact)")
    parser.add_argument("--refusal",
                        help="the answer to a query in the scope of an erase edit (default \"I don't know.\")")
    parser.add_argument("--insecure", action="store_true", default=None,
                        help="allow a non-loopback --listen address without --tokens-file")
    parser.add_argument("--max-queue", type=int,
                        help="generation/score requests waiting or running before RESOURCE_EXHAUSTED (default 64)")
    parser.add_argument("--port-file", type=Path,
                        help="once bound, write the port here (for --listen HOST:0; launchers wait for the file)")
    parser.add_argument("--http-port-file", type=Path,
                        help="once bound, write the HTTP port here (for --http-listen HOST:0); before --port-file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "max_queue", "port_file", "http_port_file")}
    if args.max_queue is not None:
        overrides["limits"] = {"max_queue": args.max_queue}
    # The flag or variable applies from the first line; the settings' log_level (file, variable or flag) once read.
    logging.basicConfig(
        level=(args.log_level or os.environ.get("EDITCACHE_LOG_LEVEL") or "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # No library progress bars in a server's log: besides the noise, tqdm deadlocked in its write lock when its
    # output (stderr on a full disk) failed, hanging shutdown. Set before the libraries that read it are imported.
    os.environ.setdefault("TQDM_DISABLE", "1")
    # Heavy imports after logging is set up, so their failures are logged.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs its CPU probing at INFO
    from server.app import serve
    from server.auth.authorizer import Authorizer
    from server.auth.exposure import exposure_problem
    from server.config import build_config
    from server.errors import DiskFull, StorageFailed
    from server.store import masked

    try:
        config = build_config(args.config, os.environ, overrides)
        auth = Authorizer.from_file(config.tokens_file)
    except (ValueError, OSError) as exc:  # TokensFileError is a ValueError
        print(f"editcache-server: {exc}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(config.log_level.upper())
    problem = next((p for listen in (config.listen, config.http_listen) if listen is not None
                    if (p := exposure_problem(listen, auth.enabled, config.insecure)) is not None), None)
    if problem is not None:
        print(f"editcache-server: {problem}", file=sys.stderr)
        return 2
    log.info("configuration: %s", {k: masked(str(v)) if k == "store" else str(v) for k, v in asdict(config).items()})
    try:
        asyncio.run(serve(
            config, auth, on_bound=None if args.port_file is None else port_file_writer(args.port_file),
            on_http_bound=None if args.http_port_file is None else port_file_writer(args.http_port_file),
        ))
    except (StorageFailed, DiskFull) as exc:  # the data directory: the message names the file and what to do
        print(f"editcache-server: cannot start: {exc}", file=sys.stderr)
        return 3
    return 0


def port_file_writer(path: Path) -> Callable[[int], None]:
    """serve's on_bound for --port-file. Written to a temporary name, then renamed: a reader polling for the
    file never sees it empty or half written."""

    def write(port: int) -> None:
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(f"{port}\n")
        os.replace(temporary, path)

    return write


if __name__ == "__main__":
    sys.exit(main())
