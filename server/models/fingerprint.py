"""Names the exact weights a model directory holds, whatever library version wrote the files.

Parametric deltas, key statistics and the counterfactual adapter are only valid for the weights they were
computed on, so each is stored with this name and checked against it. The digest covers every tensor (name,
dtype, shape, bytes) and the config fields that change the computation; it leaves out what a library writes
as metadata (`transformers_version`, `dtype`, ...), so converting the same GGUF under another transformers
release gives the same name. Hashing Gemma-3-270M's 1.1 GB takes a few seconds, so the digest is cached in a
small JSON record that is valid while the files keep their sizes and modification times.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RECORD_FILE = "editcache-fingerprint.json"
SCHEME = 2  # 1: config.json bytes plus file sizes (before 2026-12; broke on every transformers release)
# Keys save_pretrained writes that do not change what the model computes. `dtype` (once `torch_dtype`) names
# the tensors' storage type, which the digest already covers, and was renamed between releases.
CONFIG_METADATA = frozenset({"transformers_version", "_name_or_path", "_commit_hash", "torch_dtype", "dtype"})
_CHUNK = 64 << 20


@dataclass(frozen=True)
class Fingerprint:
    current: str  # "<name>-<12 hex digits>" of the weights and the config fields that change the computation
    legacy: str  # scheme 1's name for the same files: still accepted where it was stored, then migrated


def fingerprint(name: str, model_dir: Path, record_dir: Path | None = None) -> Fingerprint:
    """The fingerprint of the model in `model_dir`, from its cached record when the files are unchanged.

    The record lives in `record_dir` (default: beside the weights, as for a conversion cache); a directory the
    server does not own passes a folder of its cache instead.
    """
    digest = _cached_digest(model_dir, (record_dir or model_dir) / RECORD_FILE)
    return Fingerprint(f"{name}-{digest[:12]}", legacy_fingerprint(name, model_dir))


def _cached_digest(model_dir: Path, record_path: Path) -> str:
    """weights_digest(model_dir), read from the record while config.json and the weight files are unchanged."""
    signature = {p.name: [(stat := p.stat()).st_size, stat.st_mtime_ns]
                 for p in (model_dir / "config.json", *_weight_files(model_dir))}
    try:
        record = json.loads(record_path.read_text())
        if record.get("scheme") == SCHEME and record.get("files") == signature:
            return str(record["digest"])
    except (OSError, ValueError, AttributeError, KeyError):
        pass  # no record yet, or an unreadable one: compute it again
    log.info("fingerprinting the weights in %s (once per conversion)", model_dir)
    digest = weights_digest(model_dir)
    _write_record(record_path, {"scheme": SCHEME, "files": signature, "digest": digest})
    return digest


def weights_digest(model_dir: Path) -> str:
    """sha256 hex of the computation-relevant config fields and every tensor, in name order."""
    digest = hashlib.sha256(json.dumps(computation_config(model_dir), sort_keys=True).encode())
    if safetensors := sorted(model_dir.glob("*.safetensors")):
        tensors = {name: (path, entry) for path in safetensors for name, entry in _safetensors_header(path).items()}
        for name in sorted(tensors):
            path, entry = tensors[name]
            digest.update(f"{name}|{entry.dtype}|{entry.shape}|".encode())
            _hash_range(digest, path, entry.begin, entry.end)
    else:  # pickled checkpoints (pytorch_model*.bin): the file bytes are all there is to go on
        for path in _weight_files(model_dir):
            digest.update(path.name.encode())
            _hash_range(digest, path, 0, None)
    return digest.hexdigest()


def computation_config(model_dir: Path) -> dict[str, object]:
    """config.json without the metadata keys a library version writes."""
    config = json.loads((model_dir / "config.json").read_text())
    return {key: value for key, value in config.items() if key not in CONFIG_METADATA}


def legacy_fingerprint(name: str, model_dir: Path) -> str:
    """Scheme 1: config.json's bytes plus each weight file's name and size."""
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    for path in sorted(model_dir.glob("*.safetensors")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return f"{name}-{digest.hexdigest()[:12]}"


def _weight_files(model_dir: Path) -> list[Path]:
    """The weight files in name order: safetensors, else pickled checkpoints."""
    return sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("pytorch_model*.bin"))


@dataclass(frozen=True)
class _TensorEntry:
    dtype: str
    shape: list[int]
    begin: int  # byte offsets in the file
    end: int


def _safetensors_header(path: Path) -> dict[str, _TensorEntry]:
    """Tensor name -> where its bytes lie in the file, from the safetensors header."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    start = 8 + size  # offsets in the header count from the end of the header
    return {name: _TensorEntry(meta["dtype"], meta["shape"], start + meta["data_offsets"][0],
                               start + meta["data_offsets"][1]) for name, meta in header.items()}


def _hash_range(digest: hashlib._Hash, path: Path, begin: int, end: int | None) -> None:
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            stop = len(view) if end is None else end
            for offset in range(begin, stop, _CHUNK):
                digest.update(view[offset:min(offset + _CHUNK, stop)])


def _write_record(path: Path, record: dict[str, object]) -> None:
    """Atomically; a read-only location only costs the next start another hash."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
            json.dump(record, f)
        os.replace(f.name, path)
    except OSError as exc:
        log.warning("could not cache the model fingerprint at %s: %s", path, exc)
