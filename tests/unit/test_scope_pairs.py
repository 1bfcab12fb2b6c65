"""The gate's v3 training data (scope_classifier/pairs.py): made-up subjects, relation templates, probes about
the new object and leading context. Each test would fail if its addition taught the gate a wrong label."""

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from editdata.cases import names
from scope_classifier.pairs import (
    MINED_KINDS,
    QUESTION_PHRASINGS,
    TRAIN_FILES,
    EditText,
    Pair,
    TemplateBank,
    build_pairs,
    made_up_name,
    own_label,
    own_label_phrasings,
    relation_stems,
    relation_template,
    synthetic_same_subject,
    target_object_probes,
    template_rewordings,
    template_same_subject,
    unfamiliar_copy,
    with_context,
)
from scope_classifier.train import add_retrieved_negatives
from server.gate.features import edit_view
from tests.unit.fakes import HashEmbedder

CF = [
    {"case_id": 1, "prompt": "Windows 95, developed by", "subject": "Windows 95", "target_new": "Google",
     "ground_truth": "Microsoft", "rephrase_prompt": "Windows 95 is a product of",
     "locality_prompt": "Internet Explorer, developed by", "locality_ground_truth": "Microsoft"},
    {"case_id": 2, "prompt": "Xbox, developed by", "subject": "Xbox", "target_new": "Sony",
     "ground_truth": "Microsoft", "rephrase_prompt": "Nice weather today. Xbox was made by",
     "locality_prompt": "Bing, developed by", "locality_ground_truth": "Microsoft"},
    {"case_id": 3, "prompt": "The Silent Hill was written by", "subject": "The Silent Hill", "target_new": "Dante",
     "ground_truth": "Homer", "rephrase_prompt": "The author of The Silent Hill is",
     "locality_prompt": "Ulysses was written by", "locality_ground_truth": "Joyce"},
    {"case_id": 4, "prompt": "Danielle Darrieux's mother tongue is", "subject": "Danielle Darrieux",
     "target_new": "English", "ground_truth": "French", "rephrase_prompt": "Danielle Darrieux speaks",
     "locality_prompt": "Jean Gabin's mother tongue is", "locality_ground_truth": "French"},
]
ZSRE = [{"subject": "UniFirst", "src": "What is the product made by UniFirst?", "pred": "uniform",
         "rephrase": "What will be the product of UniFirst?", "alt": "Taipei", "answers": ["uniform"],
         "loc": "nq question: who wrote hamlet", "loc_ans": "Shakespeare", "cond": ""}]
KNOWEDIT = [{"subject": "Goursez Vreizh", "prompt": "The name of the founder of Goursez Vreizh is",
             "target_new": "Jean Le Fustec", "ground_truth": "Ernest Renan",
             "portability": {"Subject_Aliasing": [{"prompt": "The name of the founder of Gorsedd of Brittany is",
                                                   "ground_truth": "Jean Le Fustec"}]},
             "locality": {"Relation_Specificity": [{"prompt": "The gender of Goursez Vreizh is",
                                                     "ground_truth": "male"}]}}]
RECORDS: list[dict[str, Any]] = [*CF, *ZSRE, *KNOWEDIT]


def test_made_up_names_vary_in_shape_and_never_share_a_word_with_the_real_subject() -> None:
    rng = random.Random(0)
    for subject in ("Paris", "The Silent Hill", "Velm", "K", "Boniface VIII"):
        for _ in range(200):
            name = made_up_name(rng, subject)
            assert name.casefold() != subject.casefold()
            assert not set(re.findall(r"\w+", name.casefold())) - {"the"} & set(re.findall(r"\w+", subject.casefold()))
    shapes = {("-" in n, n.startswith("The "), ". " in n, len(n.split())) for n in
              (made_up_name(rng, "x") for _ in range(300))}
    assert len(shapes) >= 4  # two words, coded, titled, one word, initial


def test_an_unfamiliar_copy_renames_the_subject_everywhere_and_keeps_every_label() -> None:
    edit = EditText("Boniface VII", "Boniface VII holds the title of", "mayor")
    queries = [("Boniface VII holds the title of", 1, "prompt"),
               ("What title did boniface vii hold? It was", 1, "paraphrase"),
               ("Bonifase VII holds the title of", 1, "misspelt_paraphrase"),  # names the real entity: dropped
               ("Pope Boniface holds the title of", 1, "alias"),  # likewise
               ("Boniface VIII holds the title of", 0, "neighbourhood"),  # another subject: kept as it is
               ("The gender of Boniface VII is", 0, "same_subject")]
    copy, copied = unfamiliar_copy(edit, queries, "Velmora Drask")
    assert copy == EditText("Velmora Drask", "Velmora Drask holds the title of", "mayor")
    assert copied == [("Velmora Drask holds the title of", 1, "made_up_prompt"),
                      ("What title did Velmora Drask hold? It was", 1, "made_up_paraphrase"),
                      ("Boniface VIII holds the title of", 0, "made_up_neighbourhood"),
                      ("The gender of Velmora Drask is", 0, "made_up_same_subject")]
    assert not any(names(q, "Boniface VII") for q, _, _ in copied)


def test_relation_templates_cut_the_subject_as_a_whole_word() -> None:
    assert relation_template("Xbox, developed by", "Xbox") == "{}, developed by"
    assert relation_template("The Xboxes were", "Xbox") is None
    assert relation_template("What is {odd}?", "odd") is None
    bank = TemplateBank.from_records(RECORDS)
    assert bank.answers["{}, developed by"] == {"google", "microsoft", "sony"}
    # a paraphrase with a sentence before the subject's is context, not a rewording
    assert bank.rewordings["{}, developed by"] == ("{} is a product of",)
    assert bank.rewordings["What is the product made by {}?"] == ("What will be the product of {}?",)


def test_rewordings_come_from_another_record_of_the_same_template() -> None:
    bank = TemplateBank.from_records(RECORDS)
    edit = EditText("Zune", "Zune, developed by", "Apple")
    assert template_rewordings(edit, bank, random.Random(0)) == ["Zune is a product of"]
    assert template_rewordings(EditText("Zune", "Zune sounds like", "a"), bank, random.Random(0)) == []


def test_same_subject_templates_ask_another_relation_of_the_same_subject() -> None:
    bank = TemplateBank.from_records(RECORDS)
    edit = EditText("Zune", "Zune, developed by", "Apple")
    seen = {q for seed in range(30)
            for q in template_same_subject(edit, [edit.prompt], frozenset({"apple", "microsoft"}), bank,
                                           random.Random(seed))}
    assert seen and all(names(q, "Zune") for q in seen)
    # its own template, its rewording and templates sharing an answer (Sony) are never negatives
    assert not seen & {"Zune, developed by", "Zune is a product of"}
    assert "Zune's mother tongue is" in seen and "What is the product made by Zune?" in seen
    assert not any(relation_stems(q.replace("Zune", "")) & relation_stems("developed by") for q in seen)
    # "born" reaches the place-of-birth label: such a template is the edit's own relation
    assert relation_stems("The place of birth of {} is") & relation_stems("What city was {} born in?")


def test_target_object_probes_name_the_new_object_under_an_unrelated_relation() -> None:
    edit = EditText("Space Needle", "The Space Needle is located in", "Taipei")
    probes = [q for seed in range(40) for q in target_object_probes(edit, random.Random(seed))]
    assert probes and all(names(q, "Taipei") and not names(q, "Space Needle") for q in probes)
    assert not any("located" in q for q in probes)
    assert any(q.endswith("?") for q in probes) and any(q.endswith(" is") for q in probes)
    assert target_object_probes(EditText("Toko Yasuda", "Toko Yasuda plays the", "piano"), random.Random(0)) == []


def test_context_goes_before_a_query_and_keeps_its_label() -> None:
    edit = EditText("Xbox", "Xbox, developed by", "Sony")
    queries = [("Xbox, developed by", 1, "prompt"), ("Xbox was made by", 1, "paraphrase"),
               ("The gender of Xbox is", 0, "synthetic_same_subject")]
    out = with_context(edit, queries, ["Ulysses was written by Joyce."], random.Random(0))
    assert out == [("Ulysses was written by Joyce. Xbox was made by", 1, "context_positive"),
                   ("Ulysses was written by Joyce. The gender of Xbox is", 0, "context_negative")]
    # a context naming the subject or the target could make it about the edit: not used
    assert with_context(edit, queries, ["Sony makes the Xbox."], random.Random(0)) == []


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    for name, records in zip(TRAIN_FILES, (CF, ZSRE, KNOWEDIT, KNOWEDIT), strict=True):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(json.dumps(records))
    for name in ("counterfact/val.json", "zsre/dev.json", "zsre/inverse-dev.json", "mquake/dev.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("[]")
    return tmp_path


def test_build_pairs_reads_the_train_files_only(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path] = []
    read_text = Path.read_text

    def recording(self: Path, *args: Any, **kwargs: Any) -> str:
        opened.append(self)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", recording)
    monkeypatch.setattr("scope_classifier.pairs.MADE_UP_SHARE", 1.0)
    edits, pairs = build_pairs(data_dir, None, 0)
    assert sorted(p.relative_to(data_dir).as_posix() for p in opened) == sorted(TRAIN_FILES)
    real = {r["subject"] for r in RECORDS}
    made_up = [e for e in edits if e.subject not in real]
    assert len(made_up) == len(RECORDS) + 1  # every edit copied (KnowEdit's record is in two files)
    for p in pairs:
        original_kind = p.kind.removeprefix("made_up_")
        if original_kind in ("prompt", "paraphrase", "alias", "misspelt_paraphrase", "template_rewording",
                             "context_positive", "own_label"):
            assert p.label == 1, p
        else:
            assert p.label == 0, p
        if p.kind.startswith("made_up_") and p.label == 1:
            assert names(p.query, edits[p.edit].subject) and edits[p.edit].subject not in real


def test_v3_additions_are_not_mined_for_retrieved_negatives() -> None:
    embed = HashEmbedder(dim=32)
    edits = [EditText("Peru", "The capital of Peru is", "Rome"), EditText("Chile", "The capital of Chile is", "Oslo"),
             EditText("Tovik-7", "The capital of Tovik-7 is", "Rome")]
    pairs = [Pair("What is the capital of Peru?", 0, 1, "paraphrase"),
             Pair("What is the capital of Tovik-7?", 2, 1, "made_up_paraphrase"),
             Pair("Peru's currency is", 0, 0, "template_same_subject")]
    encoded = {t: embed.encode_text(t) for t in {p.query for p in pairs} | {e.prompt for e in edits}}
    views = [edit_view(encoded[e.prompt], e.subject, e.target_new) for e in edits]
    added = add_retrieved_negatives(pairs, views, encoded, per_query=2)[len(pairs):]
    assert {p.query for p in added} == {"What is the capital of Peru?"}
    assert "made_up_paraphrase" not in MINED_KINDS and "paraphrase" in MINED_KINDS


@pytest.mark.parametrize(("prompt", "label"), [
    ("Tovik-7 is a citizen of", "country of citizenship"),  # through a cue word
    ("Tovik-7 is employed by", "employer"),
    ("The Silent Loom was written by", "author"),  # not "languages spoken, written or signed"
    ("The mother tongue of Tovik-7 is", "native language"),  # not "mother"
    ("What is the country of citizenship of Tovik-7?", "country of citizenship"),  # not "country"
    ("Tovik-7 was founded by", "founded by"),  # not "location of formation" (a cue only)
    ("What was Tovik-7's cause of death?", None),  # dates are left out
    ("Tovik-7 orbits the star", None),  # no label
])
def test_own_label_names_the_relation_the_prompt_asks_or_none(prompt: str, label: str | None) -> None:
    assert own_label(prompt) == label


def test_own_label_phrasings_ask_the_edits_relation_by_its_noun_with_the_subject() -> None:
    edit = EditText("Tovik-7", "Tovik-7 was founded by", "Mira Quell")
    asked = own_label_phrasings(edit, random.Random(0), n=3)
    assert sorted(asked) == ["The founder of Tovik-7 is", "Tovik-7's founder is", "What is the founder of Tovik-7?"]
    assert own_label_phrasings(EditText("Tovik-7", "Tovik-7 orbits the star", "Vega"), random.Random(0)) == []


def test_question_negatives_ask_other_labels_by_their_noun() -> None:
    edit = EditText("Tovik-7", "Tovik-7 orbits the star", "Vega")
    asked = synthetic_same_subject(edit, random.Random(0), 40, QUESTION_PHRASINGS)
    assert not any("founded by" in q or "owned by" in q for q in asked)
    assert all("Tovik-7" in q for q in asked)
