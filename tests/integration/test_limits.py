"""Limits and back-pressure over real gRPC: a bounded model queue, cancellation, deadlines, per-namespace caps."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from client import (
    DeadlineExceeded,
    EditcacheClient,
    EditcacheError,
    EditInput,
    GenerationOptions,
    GenerationStream,
    InvalidArgument,
    ResourceExhausted,
)
from client.launch import LocalServer
from tests.tiny import build_tiny_tokenizer, tiny_config

LONG = 4000  # new tokens: over ten seconds on the tiny model, so a stream is still running when cancelled
HOLD = GenerationOptions(max_new_tokens=LONG)
PROMPT = "the capital of france is"


@pytest.fixture(scope="module")
def long_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny llama with room for long generations and no EOS token, so a stream runs until it is stopped."""
    path = tmp_path_factory.mktemp("long-model")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", 64, max_position_embeddings=8192, eos_token_id=None))
    model.generation_config.eos_token_id = None
    model.eval().save_pretrained(path)
    build_tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(long_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    data = tmp_path_factory.mktemp("limits-data")
    settings = data / "limits.toml"
    # One answer at a time (batch_size 1), so that a second request waits in the queue behind the first: batched
    # requests wait only for a full batch (tests/unit/test_batching.py covers their cancellation).
    settings.write_text(
        f"batch_size = 1\n[limits]\nmax_new_tokens = {LONG}\nmax_queue = 2\nmax_edits_per_namespace = 3\n"
        "max_prompt_tokens = 24\n"
    )
    server = LocalServer(long_model_dir, data, "--config", str(settings), "--gate", "similarity")
    server.start()
    yield server
    server.stop()


def wait_for_log(server: LocalServer, pattern: str, since: int, timeout_s: float = 30.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if match := re.search(pattern, server.log_text()[since:]):
            return match
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in the server log:\n{server.log_text()[since:][-3000:]}")


def first_refusal(probe: Callable[[], object], other_errors: list[EditcacheError], attempts: int = 10) -> Exception:
    """The first RESOURCE_EXHAUSTED, from the probe or from the other request racing it for the last slot."""
    for _ in range(attempts):
        try:
            probe()
        except ResourceExhausted as exc:
            return exc
        except DeadlineExceeded:  # the probe got the last slot and waited: the other request was third
            pass
        if refused := [e for e in other_errors if isinstance(e, ResourceExhausted)]:
            return refused[0]
    raise AssertionError("RESOURCE_EXHAUSTED never raised")


def drain(stream: GenerationStream, errors: list[EditcacheError]) -> None:
    try:
        for _ in stream:
            pass
    except EditcacheError as exc:
        errors.append(exc)


def test_full_queue_is_refused_at_once_and_cancelled_streams_stop_generating(server: LocalServer) -> None:
    since = len(server.log_text())
    with server.client() as client, EditcacheClient(server.addr, timeout_s=3) as probe:
        first = client.stream(PROMPT, options=HOLD)
        first_deltas = iter(first)
        next(first_deltas)  # the first stream holds the model
        second = client.stream(PROMPT, options=HOLD)  # waits for it: the queue (2) is now full
        second_errors: list[EditcacheError] = []
        reading = threading.Thread(target=drain, args=(second, second_errors))
        reading.start()  # a stream's call starts when it is first read
        busy = first_refusal(lambda: probe.generate(PROMPT, options=GenerationOptions(max_new_tokens=1)), second_errors)
        assert "server busy" in str(busy) and "max_queue 2" in str(busy)

        first.cancel()  # the model thread must stop, not run on to LONG tokens
        stopped = wait_for_log(server, r"generation stopped after (\d+) new tokens", since)
        assert 0 < int(stopped.group(1)) < LONG
        second.cancel()
        reading.join()
        # Both slots free again long before two full generations could have finished.
        answer = probe.generate(PROMPT, options=GenerationOptions(max_new_tokens=2))
        assert answer.token_ids and answer.route == "base"


def test_a_request_whose_deadline_passes_in_the_queue_is_not_run(server: LocalServer) -> None:
    since = len(server.log_text())
    with server.client() as client, EditcacheClient(server.addr, timeout_s=1.0) as impatient:
        holder = client.stream(PROMPT, options=HOLD)
        holder_deltas = iter(holder)  # kept: a dropped iterator cancels its stream
        next(holder_deltas)
        try:
            with pytest.raises(DeadlineExceeded):
                impatient.generate(PROMPT, options=HOLD, namespace="impatient")
            wait_for_log(server, r"not run: the caller went away or its deadline passed while queued", since)
        finally:
            holder.cancel()
        assert "namespace=impatient" not in server.log_text()[since:]


def test_adding_past_the_namespace_limit_is_resource_exhausted(server: LocalServer) -> None:
    with server.client("cap-" + uuid.uuid4().hex[:8]) as client:
        client.add_edit("france", PROMPT, "rome")
        client.add_edit("germany", "the capital of germany is", "madrid")
        with pytest.raises(ResourceExhausted) as caught:
            client.add_edits([client_spec("italy"), client_spec("spain")])
        assert "has 2 edits; adding 2 would pass its limit of 3" in caught.value.details
        assert client.list_edits().total == 2  # all or none
        client.add_edits([client_spec("italy")])


def test_prompt_over_the_token_limit_is_invalid_argument(server: LocalServer) -> None:
    with server.client() as client:
        with pytest.raises(InvalidArgument) as caught:
            words = " ".join(["france"] * 30)  # 31 tokens with <bos>
            client.generate(words, options=GenerationOptions(max_new_tokens=1))
        assert "prompt is 31 tokens" in caught.value.details and "limit is 24" in caught.value.details
        with pytest.raises(InvalidArgument, match="prompt"):
            client.score(" ".join(["france"] * 30), " paris")
        assert client.generate("france " * 10, options=GenerationOptions(max_new_tokens=1)).token_ids


def client_spec(country: str) -> EditInput:
    return EditInput(country, f"the capital of {country} is", "paris")
