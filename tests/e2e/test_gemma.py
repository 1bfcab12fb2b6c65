"""The acceptance session on the real default model (Gemma-3-270M), through editctl and the client.

The first run converts the packaged GGUF into the model cache (about 80 s); later runs load it in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from client import EditInput, GenerationOptions
from client.editctl import main as editctl
from client.launch import LocalServer
from server.models.load import load_model

pytestmark = pytest.mark.real_model

EDITED = "The Space Needle is located in the city of"
UNRELATED = "The Eiffel Tower is located in the city of"
ADAPTER = Path(__file__).parents[2] / "artifacts" / "counterfactual" / "gemma-3-270m"


@pytest.fixture(scope="module")
def gemma_server(tmp_path_factory: pytest.TempPathFactory) -> LocalServer:
    server = LocalServer("gemma-3-270m", tmp_path_factory.mktemp("gemma-data"))
    server.start(timeout_s=900)
    yield server
    server.stop()


def ask(addr: str, prompt: str, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert editctl(["--addr", addr, "--json", "ask", prompt, "--max-new-tokens", "8", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_editctl_session_on_gemma(gemma_server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    addr = gemma_server.addr
    before = ask(addr, UNRELATED, capsys)
    assert editctl(["--addr", addr, "--json", "add", "--subject", "Space Needle", "--prompt", EDITED,
                    "--target", "Taipei"]) == 0
    edit_id = json.loads(capsys.readouterr().out)["id"]

    edited = ask(addr, EDITED, capsys)
    assert edited["route"] == "counterfactual" and edited["edit_id"] == edit_id
    assert edited["text"].strip().startswith("Taipei")

    unrelated = ask(addr, UNRELATED, capsys)
    assert unrelated["route"] == "base" and unrelated["edit_id"] is None
    assert unrelated["token_ids"] == before["token_ids"]

    # The same answer as the plain model under greedy decoding, token for token.
    loaded = load_model("gemma-3-270m", Path.home() / ".cache" / "editcache")
    inputs = loaded.tokenizer(UNRELATED, return_tensors="pt")
    with torch.inference_mode():
        out = loaded.model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert unrelated["token_ids"] == out[0, inputs["input_ids"].shape[1]:].tolist()


def test_default_server_answers_in_scope_with_the_counterfactual_model(
    gemma_server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert editctl(["info", "--addr", gemma_server.addr, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    shipped = json.loads((ADAPTER / "counterfactual.json").read_text())
    assert info["in_scope_route"] == "counterfactual" and info["degraded"] == []
    assert info["gate"] == "classifier"
    assert info["model_fingerprint"] == shipped["model_fingerprint"]


def test_a_multihop_question_follows_an_edit_then_asks_the_model(gemma_server: LocalServer) -> None:
    """Step 1 is answered by the edit (its new object, exactly), step 2 by Gemma's own knowledge of that object."""
    with gemma_server.client("multihop") as client:
        (needle,) = client.add_edits([EditInput("Space Needle", EDITED, "Taipei")])
        result = client.answer_multihop("In which country is the city where the Space Needle stands?",
                                        steps=[EDITED, "#1 is located in the country of"])
    first, second = result.hops
    assert (first.answer, first.route, first.edit_id) == ("Taipei", "counterfactual", needle.id)
    assert second.question == "Taipei is located in the country of"
    assert second.route == "base" and second.edit_id is None
    assert result.answer.startswith("Taiwan") and result.edit_ids == (needle.id,)


def test_a_reverse_question_is_answered_from_the_edit_found_by_its_object(gemma_server: LocalServer) -> None:
    """The question names only the edit's new object; the object gate lets it in and the edit's subject answers it
    (route reverse). Another question about the object stays with Gemma."""
    with gemma_server.client("reverse") as client:
        (edit,) = client.add_edits([EditInput("Amira Solen", "Who is Amira Solen's father?", "Tomas Brandt")])
        short = GenerationOptions(max_new_tokens=8)
        reverse = client.generate("Who is the daughter of Tomas Brandt?", options=short)
        other = client.generate("Where was Tomas Brandt born?", options=short)
    assert (reverse.route, reverse.edit_id, reverse.text) == ("reverse", edit.id, " Amira Solen")
    assert (other.route, other.edit_id) == ("base", None)
