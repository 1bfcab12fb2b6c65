"""How editctl prints: JSON objects for scripts (`--json`), tables and summary lines for people."""

from __future__ import annotations

import dataclasses
import json
import os
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from client.errors import EditcacheError
from client.records import EditRecord, GenerationResult, MultiHopResult, ServerInfo

_HINTS = {
    "UNAUTHENTICATED": "pass --token or set EDITCACHE_TOKEN",
    "PERMISSION_DENIED": "the token does not grant this namespace; check --namespace",
    "DEADLINE_EXCEEDED": "raise --timeout (seconds; 0 means no deadline)",
}


def shown(text: str) -> str:
    """`text` with control characters escaped (\\x1b, \\n, …): stored text reaches an operator's terminal, where
    an escape sequence could clear the screen or rewrite what is shown, and a newline would break a table row."""
    return "".join(c.encode("unicode_escape").decode() if unicodedata.category(c) == "Cc" else c for c in text)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def print_dim(text: str, stream: TextIO) -> None:
    """Faint on a terminal (unless NO_COLOR is set): for lines about the answer rather than the answer."""
    if stream.isatty() and not os.environ.get("NO_COLOR"):
        text = f"\033[2m{text}\033[0m"
    print(text, file=stream)


def describe_error(exc: EditcacheError, addr: str) -> str:
    """One line, `CODE: details`, with a hint where one helps."""
    code = exc.code.name
    details = " ".join(exc.details.split()) or "(no details)"
    if code == "UNAVAILABLE":
        if _looks_like_connection_failure(details):
            return (
                f"{code}: cannot reach the server at {addr} ({details}); "
                "is it running? Start one with `make serve`"
            )
        return f"{code}: server at {addr}: {details}"
    hint = _HINTS.get(code)
    return f"{code}: {details} ({hint})" if hint else f"{code}: {details}"


def _looks_like_connection_failure(details: str) -> bool:
    lowered = details.lower()
    return any(s in lowered for s in ("connect", "dns resolution", "unreachable", "no route"))


def edit_json(edit: EditRecord) -> dict[str, Any]:
    obj = dataclasses.asdict(edit)
    obj["paraphrases"] = list(edit.paraphrases)
    obj["aliases"] = list(edit.aliases)
    obj["history"] = [edit_json(e) for e in edit.history]
    return obj


def edit_text(edit: EditRecord) -> str:
    """`key: value` rows, one per field, a row per paraphrase and per alias."""
    rows = [
        ("id", edit.id),
        ("namespace", edit.namespace),
        ("kind", edit.kind),
        ("subject", edit.subject),
        *((("pattern", edit.pattern), ("replacement", edit.replacement)) if edit.kind == "regex" else
          (("prompt", edit.prompt), ("target_new", edit.target_new))),
        ("target_true", edit.target_true if edit.target_true is not None else "-"),
        ("version", str(edit.version)),
        ("created", iso_time(edit.created_at_unix_s)),
        *((("updated", iso_time(edit.updated_at_unix_s)),) if edit.version > 1 else ()),
        *((("supersedes", edit.supersedes),) if edit.supersedes else ()),
        *((("superseded by", edit.superseded_by),) if edit.superseded_by else ()),
    ]
    rows += [("paraphrase", p) for p in edit.paraphrases]
    rows += [("alias", a) for a in edit.aliases]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{key + ':':<{width + 1}} {shown(value)}" for key, value in rows)


def edit_table(edits: Sequence[EditRecord]) -> str:
    id_width = max(len("ID"), *(len(e.id) for e in edits))
    subject_width = min(max(len("SUBJECT"), *(len(shown(e.subject)) for e in edits)), 30)
    lines = [f"{'ID':<{id_width}}  {'SUBJECT':<{subject_width}}  EDIT"]
    for e in edits:
        lines.append(f"{e.id:<{id_width}}  {shown(e.subject):<{subject_width}}  {edit_summary(e)}")
    return "\n".join(lines)


def edit_summary(edit: EditRecord) -> str:
    """`prompt → target_new` for one line; an erase edit's prompt → (erased), a patch's rule, a regex's rewrite."""
    if edit.kind == "regex":
        return f"/{shown(edit.pattern)}/ → {shown(edit.replacement)!r}"
    if edit.kind == "patch":
        return f"patch: {shown(edit.prompt)}"
    target = "(erased)" if edit.kind == "erase" else shown(edit.target_new)
    return f"{shown(edit.prompt)} → {target}" + (" [insert]" if edit.kind == "insert" else "")


def iso_time(unix_s: float) -> str:
    """A server timestamp in UTC, to the second."""
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="seconds")


def result_json(result: GenerationResult) -> dict[str, Any]:
    return {
        "text": result.text,
        "route": result.route,
        "edit_id": result.edit_id,
        "score": result.gate_score,
        "timings_ms": result.timings_ms,
        "token_ids": list(result.token_ids),
        "finish_reason": result.finish_reason,
        "abstained": result.abstained,
        "related_edit_ids": list(result.related_edit_ids),
    }


def summary_line(result: GenerationResult) -> str:
    parts = [f"route={result.route}"]
    if result.abstained:
        parts.append("abstained")  # the gate let it in; the counterfactual model handed it to the base model
    if result.edit_id:
        parts.append(f"edit={result.edit_id}")
    if result.related_edit_ids:
        parts.append(f"also={','.join(result.related_edit_ids)}")
    parts.append(f"score={result.gate_score:.2f}")
    parts.append(f"total={result.timings_ms.get('total', 0.0):.0f}ms")
    return f"[{' '.join(parts)}]"


def hop_lines(result: MultiHopResult) -> list[str]:
    """One line per step: what was asked, the answer, and where it came from."""
    lines = []
    for i, hop in enumerate(result.hops, 1):
        source = f"{hop.route} edit={hop.edit_id}" if hop.edit_id else hop.route
        if hop.related_edit_ids:
            source += f" also={','.join(hop.related_edit_ids)}"
        lines.append(f"{i}. {hop.question} -> {hop.answer} [{source}]")
    return lines


def info_text(info: ServerInfo) -> str:
    rows = [
        ("model", f"{info.model} ({info.model_type}, {info.parameters / 1e6:.0f}M parameters)"),
        ("fingerprint", info.model_fingerprint),
        ("gate", f"{info.gate} (threshold {info.threshold:.3f}, top-k {info.top_k}, encoder {info.encoder})"),
        ("in-scope route", info.in_scope_route),
        ("routes", ", ".join(info.routes)),
        ("version", info.version),
        *(("degraded", sentence) for sentence in info.degraded),
    ]
    return "\n".join(f"{name:<15}{value}" for name, value in rows)
