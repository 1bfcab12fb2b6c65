"""A server with a counterfactual adapter for its model sends in-scope queries to it (tiny model, real gRPC).

Without one, in-scope queries take the IKE route: tests/integration/test_serving.py checks that on its server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client import GenerationOptions
from client.launch import LocalServer

PROMPT = "the capital of france is"


@pytest.fixture(scope="module")
def server(counterfactual_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    model_dir, adapter_dir = counterfactual_model
    server = LocalServer(model_dir, tmp_path_factory.mktemp("cf-data"), "--counterfactual-adapter", str(adapter_dir),
                         "--counterfactual-min-confidence", "0.5", "--torch-threads", "1")
    server.start()
    yield server
    server.stop()


def test_in_scope_queries_take_the_counterfactual_route(server: LocalServer) -> None:
    with server.client("cf") as client:
        info = client.server_info()
        assert info.in_scope_route == "counterfactual" and {"counterfactual", "ike"} <= set(info.routes)
        edit = client.add_edit("france", PROMPT, "rome")
        answer = client.generate(PROMPT, options=GenerationOptions(max_new_tokens=6))
        assert (answer.route, answer.edit_id) == ("counterfactual", edit.id)
        assert answer.text.split()[:1] == ["rome"] and answer.finish_reason == "stop"
        forced = client.generate(PROMPT, options=GenerationOptions(max_new_tokens=2), route="ike")
        assert (forced.route, forced.edit_id) == ("ike", edit.id)
        unrelated = client.generate("who speaks german in berlin", options=GenerationOptions(max_new_tokens=2))
        assert unrelated.route == "base"


def test_a_query_the_edit_does_not_bear_on_goes_to_the_base_model_when_the_model_abstains(
    counterfactual_model: tuple[Path, Path], tmp_path: Path
) -> None:
    model_dir, adapter_dir = counterfactual_model
    # A gate that lets every query in, so the counterfactual model alone tells them apart.
    server = LocalServer(model_dir, tmp_path, "--counterfactual-adapter", str(adapter_dir), "--gate", "similarity",
                         "--threshold", "0", "--torch-threads", "1")
    server.start()
    try:
        with server.client("cf-abstain") as client:
            edit = client.add_edit("france", PROMPT, "rome")
            other_relation = "the language france speaks is"
            three = GenerationOptions(max_new_tokens=3)
            answer = client.generate(other_relation, options=three)
            assert (answer.route, answer.edit_id, answer.abstained) == ("base", None, True)
            assert answer.token_ids == client.generate(other_relation, options=three, route="base").token_ids
            scored = client.score(other_relation, " french")
            assert (scored.route, scored.abstained) == ("base", True)
            in_scope = client.generate(PROMPT, options=three)
            assert (in_scope.route, in_scope.edit_id, in_scope.abstained) == ("counterfactual", edit.id, False)
    finally:
        server.stop()


def test_an_unsure_counterfactual_model_hands_the_query_to_ike(
    counterfactual_model: tuple[Path, Path], tmp_path: Path
) -> None:
    model_dir, adapter_dir = counterfactual_model
    server = LocalServer(model_dir, tmp_path, "--counterfactual-adapter", str(adapter_dir),
                         "--counterfactual-min-confidence", "1.0", "--torch-threads", "1")  # never sure enough
    server.start()
    try:
        with server.client("cf-unsure") as client:
            edit = client.add_edit("france", PROMPT, "rome")
            answer = client.generate(PROMPT, options=GenerationOptions(max_new_tokens=2))
            assert (answer.route, answer.edit_id) == ("ike", edit.id)
            assert client.server_info().in_scope_route == "counterfactual"
    finally:
        server.stop()

