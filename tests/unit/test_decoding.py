from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from server.errors import FailedPrecondition
from server.generators.base import BaseGenerator
from server.generators.decoding import CausalLM
from server.generators.prompted import PromptedGenerator, prompt_with_edit
from server.interfaces import StopCheck, TextSink
from server.types import FinishReason, Generation, GenerationOptions, Route
from tests.tiny import EOS_ID, PAD_ID, build_tiny_model, build_tiny_tokenizer
from tests.unit.fakes import make_edit

# With the default init (std 0.02) the tiny model only repeats the last prompt token; larger weights
# give varied continuations, so stop strings and token-for-token comparisons mean something.
WEIGHT_STD = 0.5
PROMPT = "the capital of france is"  # continues for 12+ tokens without EOS under greedy decoding
EARLY_EOS_PROMPT = "who speaks german"  # greedy emits EOS within a few tokens
N = 12


@pytest.fixture(scope="module")
def lm() -> CausalLM:
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(vocab_size=len(tokenizer))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, WEIGHT_STD)
    return CausalLM(model, tokenizer)


def reference_ids(lm: CausalLM, prompt: str, max_new_tokens: int) -> tuple[int, ...]:
    """What the bare model produces under plain greedy `generate`."""
    inputs = lm.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = lm.model.generate(  # type: ignore[operator]
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=PAD_ID
        )
    return tuple(int(t) for t in out[0, inputs["input_ids"].shape[1]:])


def greedy(max_new_tokens: int = N, stop: tuple[str, ...] = ()) -> GenerationOptions:
    return GenerationOptions(max_new_tokens=max_new_tokens, stop=stop)


@pytest.mark.parametrize("prompt", [PROMPT, EARLY_EOS_PROMPT, "where is rome", "a"])
def test_greedy_matches_model_generate_token_for_token(lm: CausalLM, prompt: str) -> None:
    want = reference_ids(lm, prompt, N)
    got = lm.decode(prompt, greedy())
    assert got.token_ids == want
    assert got.text == lm.tokenizer.decode(list(want), skip_special_tokens=True)


def test_fixture_model_gives_a_varied_continuation(lm: CausalLM) -> None:
    # Guards the other tests: a model that repeats one token would make stop strings trivial.
    ids = reference_ids(lm, PROMPT, N)
    assert len(ids) == N and EOS_ID not in ids
    assert len(set(ids)) >= 4


def test_eos_ends_generation_with_reason_eos(lm: CausalLM) -> None:
    got = lm.decode(EARLY_EOS_PROMPT, greedy())
    assert len(got.token_ids) < N
    assert got.token_ids[-1] == EOS_ID
    assert got.finish_reason is FinishReason.EOS


@pytest.mark.parametrize("max_new_tokens", [1, 3, N])
def test_max_new_tokens_respected_with_reason_length(lm: CausalLM, max_new_tokens: int) -> None:
    got = lm.decode(PROMPT, greedy(max_new_tokens))
    assert len(got.token_ids) == max_new_tokens
    assert got.finish_reason is FinishReason.LENGTH
    assert got.token_ids == reference_ids(lm, PROMPT, N)[:max_new_tokens]


def test_streamed_deltas_concatenate_to_final_text(lm: CausalLM) -> None:
    pieces: list[str] = []
    got = lm.decode(PROMPT, greedy(), on_text=pieces.append)
    assert "".join(pieces) == got.text
    assert len(pieces) > 1  # streamed as it went, not once at the end
    assert all(pieces)


def stop_case(lm: CausalLM) -> tuple[str, str, int]:
    """A two-word stop string from the middle of the greedy continuation; the text and token count it cuts to."""
    ids = reference_ids(lm, PROMPT, N)
    full = str(lm.tokenizer.decode(list(ids), skip_special_tokens=True))
    words = full.split()
    stop = " ".join(words[2:4])
    want_text = full[: full.find(stop) + len(stop)]
    want_tokens = next(
        n for n in range(1, len(ids) + 1) if stop in lm.tokenizer.decode(list(ids[:n]), skip_special_tokens=True)
    )
    assert want_tokens < N, "the stop string should end generation early"
    return stop, want_text, want_tokens


def test_stop_string_ends_generation_early(lm: CausalLM) -> None:
    stop, want_text, want_tokens = stop_case(lm)
    got = lm.decode(PROMPT, greedy(stop=(stop,)))
    assert got.finish_reason is FinishReason.STOP
    assert got.text.endswith(stop)
    assert got.text == want_text
    assert want_tokens <= len(got.token_ids) < N
    assert got.token_ids == reference_ids(lm, PROMPT, N)[: len(got.token_ids)]


def test_stop_string_generates_no_token_past_the_stop(lm: CausalLM) -> None:
    stop, _, want_tokens = stop_case(lm)
    got = lm.decode(PROMPT, greedy(stop=(stop,)))
    assert got.token_ids == reference_ids(lm, PROMPT, N)[:want_tokens]


def test_earliest_of_several_stop_strings_wins(lm: CausalLM) -> None:
    stop, want_text, _ = stop_case(lm)
    later = lm.decode(PROMPT, greedy()).text.split()[-1]
    got = lm.decode(PROMPT, greedy(stop=("never appears", later, stop)))
    assert got.text == want_text
    assert got.finish_reason is FinishReason.STOP
    assert len(got.token_ids) < N


def test_streamed_deltas_with_stop_string_concatenate_to_cut_text(lm: CausalLM) -> None:
    stop, want_text, _ = stop_case(lm)
    pieces: list[str] = []
    got = lm.decode(PROMPT, greedy(stop=(stop,)), on_text=pieces.append)
    assert got.text == want_text
    assert "".join(pieces) == got.text  # nothing past the stop string was ever sent


def test_stop_string_that_never_occurs_changes_nothing(lm: CausalLM) -> None:
    pieces: list[str] = []
    got = lm.decode(PROMPT, greedy(stop=("zzz qqq",)), on_text=pieces.append)
    assert got.token_ids == reference_ids(lm, PROMPT, N)
    assert got.finish_reason is FinishReason.LENGTH
    assert "".join(pieces) == got.text  # the held-back tail is flushed at the end


def test_should_stop_true_stops_after_first_token(lm: CausalLM) -> None:
    got = lm.decode(PROMPT, greedy(), should_stop=lambda: True)
    assert len(got.token_ids) == 1
    assert got.token_ids == reference_ids(lm, PROMPT, 1)


def test_should_stop_is_checked_after_every_token(lm: CausalLM) -> None:
    calls: list[None] = []

    def stop_on_third() -> bool:
        calls.append(None)
        return len(calls) >= 3

    got = lm.decode(PROMPT, greedy(), should_stop=stop_on_third)
    assert len(got.token_ids) == 3


def test_sampling_with_same_seed_is_reproducible(lm: CausalLM) -> None:
    options = GenerationOptions(max_new_tokens=N, temperature=1.0, top_p=0.95, seed=1234)
    first = lm.decode(PROMPT, options)
    second = lm.decode(PROMPT, options)
    assert first == second


def test_sampling_depends_on_the_seed(lm: CausalLM) -> None:
    outputs = {lm.decode(PROMPT, GenerationOptions(max_new_tokens=N, temperature=1.5, seed=s)).token_ids
               for s in range(6)}
    assert len(outputs) > 1


# --- generators -------------------------------------------------------------------------------

EDIT = make_edit(prompt="The capital of France is", target_new="Rome", subject="France")


def test_prompt_with_edit_states_the_edit_before_the_query() -> None:
    query = "what is the capital of france"
    prompt = prompt_with_edit(EDIT, query)
    statement = EDIT.statement()
    assert statement in prompt
    assert prompt.endswith(query)
    assert prompt.index(statement) < prompt.rindex(query)
    assert "Rome" in statement


@dataclass
class RecordingLM:
    """Stands in for CausalLM: records the prompts it is asked to continue."""

    prompts: list[str] = field(default_factory=list)

    def decode(self, prompt: str, options: GenerationOptions, on_text: TextSink | None = None,
               should_stop: StopCheck | None = None, prefill: object = None) -> Generation:
        assert prefill is None  # the prompt route keeps no cache
        self.prompts.append(prompt)
        return Generation(prompt.upper(), (len(prompt),), FinishReason.LENGTH)


def test_prompted_generator_decodes_the_edit_prompt() -> None:
    fake = RecordingLM()
    generator = PromptedGenerator(fake)  # type: ignore[arg-type]
    assert generator.route is Route.PROMPT
    generator.generate("what is the capital of france", EDIT, greedy())
    assert fake.prompts == [prompt_with_edit(EDIT, "what is the capital of france")]


def test_prompted_generator_on_the_real_model(lm: CausalLM) -> None:
    got = PromptedGenerator(lm).generate(PROMPT, EDIT, greedy())
    assert got == lm.decode(prompt_with_edit(EDIT, PROMPT), greedy())


def test_prompted_generator_refuses_no_edit() -> None:
    fake = RecordingLM()
    with pytest.raises(FailedPrecondition):
        PromptedGenerator(fake).generate(PROMPT, None, greedy())  # type: ignore[arg-type]
    assert fake.prompts == []


def test_base_generator_ignores_the_edit(lm: CausalLM) -> None:
    generator = BaseGenerator(lm)
    assert generator.route is Route.BASE
    without = generator.generate(PROMPT, None, greedy())
    with_edit = generator.generate(PROMPT, EDIT, greedy())
    assert without == with_edit
    assert without.token_ids == reference_ids(lm, PROMPT, N)


def test_base_generator_passes_the_prompt_untouched() -> None:
    fake = RecordingLM()
    BaseGenerator(fake).generate(PROMPT, EDIT, greedy())  # type: ignore[arg-type]
    assert fake.prompts == [PROMPT]
