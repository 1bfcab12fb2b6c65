import json
from pathlib import Path

from server.generators.ike import KINDS, DemonstrationPool, IKEGenerator, demonstrations_of
from tests.unit.fakes import HashEmbedder, make_edit

RECORDS = [
    {"prompt": f"{s} is a citizen of", "target_new": t, "subject": s, "ground_truth": "x",
     "rephrase_prompt": f"{s} holds a passport from", "locality_prompt": f"{o} is a citizen of",
     "locality_ground_truth": "France"}
    for s, t, o in [("Ada", "Peru", "Bob"), ("Cy", "Chile", "Dee"), ("Eve", "Laos", "Fay"), ("Gus", "Mali", "Hal")]
]


def test_each_record_gives_copy_update_and_retain() -> None:
    copy, update, retain = demonstrations_of(RECORDS[0])  # type: ignore[misc]
    assert (copy.kind, update.kind, retain.kind) == KINDS
    assert copy.render() == "New Fact: Ada is a citizen of Peru\nPrompt: Ada is a citizen of Peru\n\n"
    assert update.prompt == "Ada holds a passport from" and update.answer == "Peru"
    assert retain.prompt == "Bob is a citizen of" and retain.answer == "France"
    assert demonstrations_of({"prompt": "no target"}) is None


def test_pool_embeds_once_and_picks_the_nearest_records(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(RECORDS))
    embedder = HashEmbedder(dim=64)
    pool = DemonstrationPool.load(path, embedder, "hash", tmp_path)
    assert len(embedder.calls) == 1
    DemonstrationPool.load(path, embedder, "hash", tmp_path)  # cached on disk
    assert len(embedder.calls) == 1
    demos = pool.nearest(embedder.encode(["Cy is a citizen of Chile"])[0], 2)
    assert demos[-1].fact == "Cy is a citizen of Chile" and demos[-1].kind == "copy"  # nearest sits last
    assert demos[0].kind == "update"


def test_ike_prompt_ends_with_the_new_fact_and_the_query(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(RECORDS))
    embedder = HashEmbedder(dim=64)
    pool = DemonstrationPool.load(path, embedder, "hash", tmp_path)
    generator = IKEGenerator(lm=None, pool=pool, encoder=embedder, k=3)  # type: ignore[arg-type]
    edit = make_edit(prompt="The capital of France is", target_new="Rome")
    prompt = generator.prompt_for(edit, "France's capital is")
    assert prompt.endswith("New Fact: The capital of France is Rome\nPrompt: France's capital is")
    assert prompt.count("New Fact:") == 4


def test_ike_generation_stops_at_the_end_of_its_demonstration_format(tmp_path: Path) -> None:
    from server.generators.ike import DEMONSTRATION_END
    from server.types import GenerationOptions

    path = tmp_path / "pool.json"
    path.write_text(json.dumps(RECORDS))
    embedder = HashEmbedder(dim=64)
    generator = IKEGenerator(None, DemonstrationPool.load(path, embedder, "hash", tmp_path), embedder, 2)  # type: ignore[arg-type]
    options = generator.adjust_options(GenerationOptions(max_new_tokens=8, stop=("!",)))
    assert options.stop == ("!", DEMONSTRATION_END)
