"""--precision over real gRPC: one data directory served in fp32, then int8 and bf16, with a parametric edit in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from client import EditcacheError, GenerationOptions, ParametricOptions
from client.launch import LocalServer

# The tiny model holds each fact at "is" (tests/unit/test_parametric_editor.py says why).
SUBJECT, PROMPT = "france is", "the capital of france is"
ONE_TOKEN = GenerationOptions(max_new_tokens=1)
ROME = ParametricOptions(layer=0, steps=40)


def serve(model_dir: Path, tmp_path: Path, precision: str) -> LocalServer:
    server = LocalServer(model_dir, tmp_path / "data", "--context-prefixes", "0", "--stats-tokens", "2000",
                         "--gate", "similarity", "--cache-dir", str(tmp_path / "cache"), "--precision", precision)
    server.start()
    return server


def base_answer(server: LocalServer, prompt: str = PROMPT) -> str:
    with server.client("p") as client:
        return client.generate(prompt, options=ONE_TOKEN, route="base").text.strip()


def test_int8_serves_the_ledger_and_refuses_parametric_changes_bf16_takes_them(
    taught_model_dir: Path, tmp_path: Path
) -> None:
    server = serve(taught_model_dir, tmp_path, "fp32")
    try:
        with server.client("p") as client:
            edit = client.add_edit(SUBJECT, PROMPT, "berlin")
            client.apply_parametric("rome", [edit.id], options=ROME)
            spain = client.add_edit("spain is", "the capital of spain is", "rome")
        assert base_answer(server) == "berlin"
    finally:
        server.stop()

    server = serve(taught_model_dir, tmp_path, "int8")
    try:
        assert base_answer(server) == "berlin", "int8 must serve the edit the ledger holds"
        with server.client("p") as client:
            for call in (lambda: client.apply_parametric("rome", [spain.id], options=ROME),
                         lambda: client.rollback_parametric(edit.id)):
                with pytest.raises(EditcacheError) as refused:
                    call()
                assert refused.value.code.name == "FAILED_PRECONDITION"
                assert "--precision bf16 or fp32" in refused.value.details, refused.value.details
    finally:
        server.stop()

    server = serve(taught_model_dir, tmp_path, "bf16")
    try:
        assert base_answer(server) == "berlin"
        with server.client("p") as client:
            client.apply_parametric("rome", [spain.id], options=ROME)
            assert base_answer(server, "the capital of spain is") == "rome"
            client.rollback_parametric(edit.id)
        assert base_answer(server) == "paris"
    finally:
        server.stop()
