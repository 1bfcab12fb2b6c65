"""The weights fingerprint: the same weights get one name whatever library version wrote their files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from server.models import fingerprint as fp
from server.models.load import load_model
from tests.tiny import build_tiny_model, build_tiny_tokenizer, write_tiny_gguf


def saved_tiny(path: Path, seed: int = 0) -> Path:
    build_tiny_model(seed=seed).save_pretrained(path)
    build_tiny_tokenizer().save_pretrained(path)
    return path


def rewrite_config(model_dir: Path, **changes: object) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(config | changes, indent=2))


def test_a_conversion_under_another_transformers_release_keeps_the_fingerprint(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny-f32.gguf"
    write_tiny_gguf(gguf)
    first = load_model(str(gguf), tmp_path / "cache-a")
    # The same GGUF converted again, as a later release would write it: another version string, and the
    # storage type under its older key.
    second_dir = tmp_path / "converted-by-another-release"
    shutil.copytree(first.source_dir, second_dir)
    (second_dir / fp.RECORD_FILE).unlink()
    config = json.loads((second_dir / "config.json").read_text())
    rewrite_config(second_dir, transformers_version="9.99.0", torch_dtype=config.pop("dtype", "float32"))

    second = fp.fingerprint(first.name, second_dir)

    assert second.current == first.fingerprint.current
    assert second.legacy != first.fingerprint.legacy  # the old scheme hashed config.json's bytes


def test_other_weights_or_another_computation_get_another_fingerprint(tmp_path: Path) -> None:
    base = saved_tiny(tmp_path / "base")
    other_seed = saved_tiny(tmp_path / "other-seed", seed=1)
    one_value = tmp_path / "one-value"
    shutil.copytree(base, one_value)
    tensors = load_file(one_value / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, one_value / "model.safetensors", metadata={"format": "pt"})
    other_eps = tmp_path / "other-eps"
    shutil.copytree(base, other_eps)
    rewrite_config(other_eps, rms_norm_eps=1e-3)

    names = {fp.fingerprint("tiny", d).current for d in (base, other_seed, one_value, other_eps)}

    assert len(names) == 4


def test_the_fingerprint_is_cached_until_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = saved_tiny(tmp_path / "model")
    first = fp.fingerprint("tiny", model_dir)
    assert (model_dir / fp.RECORD_FILE).is_file()

    def no_hashing(_: Path) -> str:
        raise AssertionError("the cached record should have been used")

    with monkeypatch.context() as m:
        m.setattr(fp, "weights_digest", no_hashing)
        assert fp.fingerprint("tiny", model_dir) == first

    weights = model_dir / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    calls: list[Path] = []
    real = fp.weights_digest
    monkeypatch.setattr(fp, "weights_digest", lambda d: calls.append(d) or real(d))
    assert fp.fingerprint("tiny", model_dir) == first
    assert calls == [model_dir]


def test_a_directory_the_server_does_not_own_keeps_its_record_in_the_cache(tmp_path: Path) -> None:
    model_dir = saved_tiny(tmp_path / "users-model")
    loaded = load_model(str(model_dir), tmp_path / "cache")
    assert not (model_dir / fp.RECORD_FILE).exists()
    assert list((tmp_path / "cache" / "fingerprints").rglob(fp.RECORD_FILE))
    assert loaded.fingerprint.current.startswith("users-model-")


def test_the_legacy_name_is_the_earlier_scheme(tmp_path: Path) -> None:
    """Scheme 1 as it was: sha256 of config.json's bytes, then each safetensors file's name and size."""
    import hashlib

    model_dir = saved_tiny(tmp_path / "model")
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    digest.update(f"model.safetensors:{(model_dir / 'model.safetensors').stat().st_size}".encode())
    assert fp.fingerprint("tiny", model_dir).legacy == f"tiny-{digest.hexdigest()[:12]}"


def test_the_digest_covers_tensors_in_name_order_not_file_layout(tmp_path: Path) -> None:
    base = saved_tiny(tmp_path / "base")
    resharded = tmp_path / "resharded"
    resharded.mkdir()
    shutil.copy(base / "config.json", resharded / "config.json")
    tensors = load_file(base / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    # Two shards, written in reverse order and with other file metadata.
    save_file({n: tensors[n] for n in reversed(names[:half])}, resharded / "model-00002.safetensors")
    save_file({n: tensors[n] for n in names[half:]}, resharded / "model-00001.safetensors", metadata={"x": "y"})
    assert fp.weights_digest(resharded) == fp.weights_digest(base)
    assert torch.equal(load_file(resharded / "model-00002.safetensors")[names[0]], tensors[names[0]])
