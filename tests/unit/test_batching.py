"""Continuous batching (server/generators/batching.py) on tiny models: concurrent requests decoded in one running
batch give each request the tokens it gets alone, whatever joins or leaves the batch around it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from server.errors import Cancelled
from server.generators.batching import Decoding, ModelThread, prompt_groups
from server.generators.decoding import CausalLM
from server.types import FinishReason, Generation, GenerationOptions
from tests.tiny import build_tiny_tokenizer, seeded_init, tiny_config

PROMPTS = (
    "the capital of france is",
    "who speaks german in the capital of italy",
    "a city",
    "what language is spoken in the country of spain where the capital is madrid",
    "paris",
    "the country of germany",
)


def sharp_model(model_type: str, **config: object) -> torch.nn.Module:
    """A random tiny model with large weights, so its greedy choices are clear rather than near-ties."""
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, **config), dtype=torch.float32)
    seeded_init(model, seed=1, std=0.5)
    return model.eval()


@pytest.fixture
def thread() -> Iterator[ModelThread]:
    model_thread = ModelThread(max_batch=4)
    yield model_thread
    model_thread.shutdown()


def alone(model: torch.nn.Module, prompt: str, options: GenerationOptions) -> Generation:
    return CausalLM(model, build_tiny_tokenizer()).decode(prompt, options)  # type: ignore[arg-type]


def concurrently(jobs: list[Callable[[], Generation]], stagger: float = 0.0) -> list[Generation]:
    """Runs the jobs on threads of their own, as the server's request threads do; `stagger` seconds apart."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = []
        for job in jobs:
            futures.append(pool.submit(job))
            threading.Event().wait(stagger)
        return [f.result(timeout=120) for f in futures]


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma3_text"])
@pytest.mark.parametrize("stagger", [0.0, 0.02])
def test_batched_greedy_answers_equal_each_answered_alone(thread: ModelThread, model_type: str,
                                                          stagger: float) -> None:
    # Six requests in batches of at most four: some wait, some join a running batch (stagger), rows of different
    # lengths are padded, and rows leave at different steps (their own max_new_tokens).
    model = sharp_model(model_type)
    lm = CausalLM(model, build_tiny_tokenizer(), batching=thread)  # type: ignore[arg-type]
    options = [GenerationOptions(max_new_tokens=n) for n in (6, 3, 9, 5, 1, 7)]
    expected = [alone(model, p, o) for p, o in zip(PROMPTS, options, strict=True)]
    got = concurrently([lambda p=p, o=o: lm.decode(p, o) for p, o in zip(PROMPTS, options, strict=True)], stagger)
    assert [g.token_ids for g in got] == [e.token_ids for e in expected]
    assert [g.text for g in got] == [e.text for e in expected]
    assert [g.finish_reason for g in got] == [e.finish_reason for e in expected]
    assert {len(g.token_ids) for g in got} == {6, 3, 9, 5, 1, 7}  # none stopped early on EOS: all rows decoded


def queued_behind_a_call(thread: ModelThread, jobs: list[Callable[[], object]]) -> list[object]:
    """Runs the jobs while a call holds the model thread, and lets it go once all of them are in its inbox, so that
    the model thread takes them together."""
    release = threading.Event()
    thread.call(lambda: release.wait(60))
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        for _ in range(600):
            if thread._inbox.qsize() >= len(jobs):  # the model thread is held, so nothing leaves the inbox
                break
            threading.Event().wait(0.01)
        release.set()
        return [f.result(timeout=120) for f in futures]


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma3_text"])
def test_prompts_that_arrive_together_are_read_in_one_padded_pass(thread: ModelThread, model_type: str) -> None:
    model = sharp_model(model_type)
    lm = CausalLM(model, build_tiny_tokenizer(), batching=thread)  # type: ignore[arg-type]
    passes: list[tuple[int, int]] = []  # (rows, tokens per row) of each forward call of the model's body
    hook = model.base_model.register_forward_pre_hook(
        lambda _, args, kwargs: passes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[4], PROMPTS[5]]  # four lengths, within twice each other
    options = GenerationOptions(max_new_tokens=5)
    got = queued_behind_a_call(thread, [lambda p=p: lm.decode(p, options) for p in prompts])
    longest = max(len(build_tiny_tokenizer()(p)["input_ids"]) for p in prompts)
    assert passes[0] == (4, longest)  # one pass over the four prompts, padded to the longest
    assert passes[1:] == [(4, 1)] * 4  # then the four rows decode together
    hook.remove()
    expected = [alone(model, p, options) for p in prompts]
    assert [g.token_ids for g in got] == [e.token_ids for e in expected]  # type: ignore[attr-defined]


class _Tokens:
    def advance(self, new_ids: list[int]) -> bool:
        return False


def test_a_prompt_that_fails_in_a_shared_pass_fails_only_its_own_request(thread: ModelThread) -> None:
    model = sharp_model("llama")
    tokenizer = build_tiny_tokenizer()
    lane = thread.lane(model)
    options = GenerationOptions(max_new_tokens=4)

    def decoding(ids: torch.Tensor) -> Decoding:
        return Decoding(ids, options, _Tokens(), frozenset(), gone=lambda: False)

    good = [decoding(tokenizer(p, return_tensors="pt")["input_ids"]) for p in PROMPTS[:2]]
    bad = decoding(torch.tensor([[1, model.config.vocab_size + 5, 2]]))  # no such token: its embedding fails
    queued_behind_a_call(thread, [lambda s=s: thread.decode(lane, s) for s in (good[0], bad, good[1])])
    assert [s.done.result(timeout=60).new_ids for s in good] == [
        alone(model, p, options).token_ids for p in PROMPTS[:2]]
    assert isinstance(bad.done.exception(timeout=60), IndexError)


def test_prompt_groups_keep_like_lengths_together_and_bound_a_pass() -> None:
    # Sorted 5, 6, 7, 48, 50: a fourth row padded to 48 would read 192 tokens for 66, so 48 starts a new pass.
    assert prompt_groups([5, 50, 6, 7, 48]) == [[0, 2, 3], [4, 1]]
    assert prompt_groups([10] * 5, max_tokens=30) == [[0, 1, 2], [3, 4]]
    assert prompt_groups([100], max_tokens=30) == [[0]]
    assert prompt_groups([]) == []


def test_stop_strings_and_streaming_work_per_row(thread: ModelThread) -> None:
    model = sharp_model("llama")
    lm = CausalLM(model, build_tiny_tokenizer(), batching=thread)  # type: ignore[arg-type]
    reference = alone(model, PROMPTS[0], GenerationOptions(max_new_tokens=8))
    stop = reference.text.split()[2]  # the third word it writes
    options = GenerationOptions(max_new_tokens=8, stop=(stop,))
    pieces: list[str] = []
    got = concurrently([
        lambda: lm.decode(PROMPTS[0], options, on_text=pieces.append),
        lambda: lm.decode(PROMPTS[1], GenerationOptions(max_new_tokens=8)),
    ])
    assert got[0].finish_reason is FinishReason.STOP
    assert got[0].text == alone(model, PROMPTS[0], options).text
    assert got[0].text.endswith(stop) and "".join(pieces) == got[0].text
    assert got[1].token_ids == alone(model, PROMPTS[1], GenerationOptions(max_new_tokens=8)).token_ids


def test_a_request_whose_caller_goes_away_leaves_the_batch_and_the_others_finish(thread: ModelThread) -> None:
    model = sharp_model("llama")
    lm = CausalLM(model, build_tiny_tokenizer(), batching=thread)  # type: ignore[arg-type]
    seen: list[str] = []
    long = GenerationOptions(max_new_tokens=20)
    got = concurrently([
        lambda: lm.decode(PROMPTS[0], long, on_text=seen.append, should_stop=lambda: len(seen) >= 2),
        lambda: lm.decode(PROMPTS[1], long),
    ])
    assert len(got[0].token_ids) < 20
    assert got[1].token_ids == alone(model, PROMPTS[1], long).token_ids


def test_a_request_whose_caller_is_gone_before_its_turn_is_not_run(thread: ModelThread) -> None:
    lm = CausalLM(sharp_model("llama"), build_tiny_tokenizer(), batching=thread)  # type: ignore[arg-type]
    with pytest.raises(Cancelled):
        lm.decode(PROMPTS[0], GenerationOptions(max_new_tokens=4), should_stop=lambda: True)


def test_seeded_sampling_repeats_whatever_else_is_in_the_batch(thread: ModelThread) -> None:
    model = sharp_model("llama")
    lm = CausalLM(model, build_tiny_tokenizer(), batching=thread)  # type: ignore[arg-type]
    sampled = GenerationOptions(max_new_tokens=10, temperature=1.5, top_p=0.9, seed=7)
    first = concurrently([lambda: lm.decode(PROMPTS[0], sampled)])[0]
    second = concurrently([lambda: lm.decode(PROMPTS[0], sampled),
                           lambda: lm.decode(PROMPTS[3], GenerationOptions(max_new_tokens=10))])[0]
    other_seed = concurrently([lambda: lm.decode(PROMPTS[0], GenerationOptions(
        max_new_tokens=10, temperature=1.5, top_p=0.9, seed=8))])[0]
    assert first.token_ids == second.token_ids
    assert first.token_ids != other_seed.token_ids


def test_a_call_waits_for_the_batch_to_drain_and_later_requests_wait_for_it(thread: ModelThread) -> None:
    # Each request's stop check runs on the model thread at its admission and after each of its tokens, so the
    # order of the entries is the order the model thread worked in.
    model = sharp_model("llama")
    lm = CausalLM(model, build_tiny_tokenizer(), batching=thread)  # type: ignore[arg-type]
    order: list[str] = []
    started = threading.Event()

    def checked(name: str) -> Callable[[], bool]:
        return lambda: bool(order.append(name))

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(lambda: lm.decode(PROMPTS[0], GenerationOptions(max_new_tokens=12),
                                              on_text=lambda _: started.set(), should_stop=checked("first")))
        assert started.wait(60)
        call = thread.call(lambda: order.append("call"))
        later = pool.submit(lambda: lm.decode(PROMPTS[1], GenerationOptions(max_new_tokens=2),
                                              should_stop=checked("later")))
        call.result(timeout=60)
        assert len(later.result(timeout=60).token_ids) == 2 and len(first.result(timeout=60).token_ids) == 12
    firsts = order.count("first")
    assert order == ["first"] * firsts + ["call"] + ["later"] * (len(order) - firsts - 1)
    assert order.count("later") >= 2


def test_on_the_model_thread_decoding_runs_alone(thread: ModelThread) -> None:
    # A call that has the model to itself (a correction's extraction) may decode: it must not wait for itself.
    model = sharp_model("llama")
    lm = CausalLM(model, build_tiny_tokenizer(), batching=thread)  # type: ignore[arg-type]
    options = GenerationOptions(max_new_tokens=4)
    inside = thread.call(lambda: lm.decode(PROMPTS[0], options)).result(timeout=60)
    assert inside.token_ids == alone(model, PROMPTS[0], options).token_ids


def test_a_sequence_past_the_sliding_window_decodes_alone_and_still_answers(thread: ModelThread) -> None:
    # Batched rows keep every token in every layer; a cache cut to its window cannot be stacked, so a sequence
    # that would outgrow the window is decoded alone, giving the model's own answer.
    model = sharp_model("gemma3_text", sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    lm = CausalLM(model, build_tiny_tokenizer(), batching=thread)  # type: ignore[arg-type]
    short, long = GenerationOptions(max_new_tokens=2), GenerationOptions(max_new_tokens=12)
    got = concurrently([lambda: lm.decode("paris", short), lambda: lm.decode(PROMPTS[3], long)])
    assert got[0].token_ids == alone(model, "paris", short).token_ids
    assert got[1].token_ids == alone(model, PROMPTS[3], long).token_ids


def test_shutdown_fails_waiting_requests_with_cancelled() -> None:
    model_thread = ModelThread(max_batch=2)
    block = threading.Event()
    model_thread.call(lambda: block.wait(30))
    lm = CausalLM(sharp_model("llama"), build_tiny_tokenizer(), batching=model_thread)  # type: ignore[arg-type]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: lm.decode(PROMPTS[0], GenerationOptions(max_new_tokens=3)))
        threading.Event().wait(0.2)
        stopper = threading.Thread(target=model_thread.shutdown)
        stopper.start()
        block.set()
        stopper.join(30)
        with pytest.raises(Cancelled, match="shutting down"):
            waiting.result(timeout=30)


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
def test_a_request_starts_from_a_handed_prompt_cache(thread: ModelThread, model_type: str) -> None:
    # The counterfactual route hands over the judgement's cache of all but the prompt's last token (made by
    # generate(), with the model's own cache layers: sliding ones for Gemma 3).
    model = sharp_model(model_type)
    tokenizer = build_tiny_tokenizer()
    lm = CausalLM(model, tokenizer, batching=thread)  # type: ignore[arg-type]
    ids = tokenizer(PROMPTS[1], return_tensors="pt")["input_ids"]
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        model(input_ids=ids[:, :-1], past_key_values=cache, use_cache=True)
    options = GenerationOptions(max_new_tokens=6)
    got = concurrently([lambda: lm.decode(PROMPTS[1], options, prefill=cache),
                        lambda: lm.decode(PROMPTS[0], options)])
    assert got[0].token_ids == alone(model, PROMPTS[1], options).token_ids
    assert got[1].token_ids == alone(model, PROMPTS[0], options).token_ids


def test_models_sharing_their_output_weights_share_one_int8_head(thread: ModelThread) -> None:
    # The counterfactual model's copy shares the base model's embedding (its tied output layer): one int8 copy.
    base = sharp_model("llama")
    copy = sharp_model("llama")
    copy.set_output_embeddings(base.get_output_embeddings())
    other = sharp_model("llama")
    heads = [thread.lane(m).head for m in (base, copy, other)]
    assert heads[0] is not None and heads[0] is heads[1] and heads[2] is not heads[0]
