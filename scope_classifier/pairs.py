"""Training pairs for the scope classifier, from the train files only (../shared/data/README.md).

Positives (the query is about the edited fact): the edit's own prompt, its paraphrases, subject-alias
rewordings (KnowEdit Subject_Aliasing), and each paraphrase once more with one subject word misspelt
(`misspelt`: zsRE's paraphrases, back-translated, misspell subjects: "Who's Nebajoths Dad?").
Negatives: neighbourhood prompts (the same relation of another subject), the same subject under
another relation (KnowEdit Relation_Specificity), synthetic same-subject probes (below), and hard
negatives that retrieval finds among the other edits (added in train.py, where the encoder is at
hand), which also stand for unrelated queries.

The train files' same-subject prompts are nearly all "The name of the <relation> of <subject> is";
asked the same way about other subjects, a gate trained on them alone accepts "<subject> <relation>"
or a question about the subject's other relations. So every edit also gets synthetic same-subject
negatives: a Wikidata property label (a relation the edit does not ask about: none of the label's
words occurs in the edit prompt) in the two phrasings of KnowEdit's locality prompts.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.gate.features import find_span

# Common Wikidata property labels, across people, places, works, organisations, taxa, genes and
# astronomical objects: the relations a same-subject probe may ask instead of the edited one.
PROPERTY_LABELS = (
    "place of birth", "place of death", "date of birth", "date of death", "occupation", "employer", "father",
    "mother", "sibling", "spouse", "child", "country of citizenship", "educated at", "religion",
    "sex or gender", "field of work", "member of", "award received", "position held", "native language",
    "genre", "instrument", "record label", "country", "located in the administrative territorial entity",
    "capital", "continent", "official language", "part of", "has part(s)", "instance of", "subclass of",
    "founded by", "headquarters location", "industry", "owned by", "parent organization", "manufacturer",
    "developer", "publisher", "director", "screenwriter", "composer", "cast member", "author",
    "original language of film or TV show", "publication date", "inception", "follows", "followed by",
    "named after", "described by source", "taxon rank", "parent taxon", "found in taxon", "chromosome",
    "constellation", "epoch", "drainage basin", "mouth of the watercourse", "legal form", "architect",
    "sport", "member of sports team", "league", "position played on team / speciality", "military branch",
    "conflict", "noble title", "family", "IUCN conservation status", "cell component", "molecular function",
    "biological process", "strand orientation", "platform", "notable work", "movement", "shares border with",
    "head of government", "located in time zone", "languages spoken, written or signed", "ethnic group",
    "political party", "residence", "nominated for", "significant event", "use", "material used",
    "location of formation", "dissolved, abolished or demolished date", "operator", "significant person",
)
# Words by which a prompt asks a label's relation without naming it ("X passed away in": place of death).
RELATION_CUES = {
    "place of birth": "born birthplace native", "place of death": "died passed away death", "date of birth": "born",
    "date of death": "died passed away", "occupation": "works profession job", "employer": "works employed",
    "country of citizenship": "citizen nationality", "educated at": "studied attended graduated university college",
    "native language": "language tongue speak", "languages spoken, written or signed": "language speak tongue",
    "official language": "language speak", "original language of film or TV show": "language",
    "instrument": "plays", "position played on team / speciality": "plays position",
    "member of sports team": "plays team club",
    "located in the administrative territorial entity": "located where", "country": "located where",
    "headquarters location": "headquartered based located", "location of formation": "founded formed",
    "founded by": "founder founded", "developer": "developed created", "manufacturer": "produced made manufactured",
    "owned by": "owner owns", "parent organization": "owner owned subsidiary", "religion": "religious faith",
    "genre": "music plays", "spouse": "married wife husband", "child": "son daughter", "sibling": "brother sister",
    "father": "dad parent", "mother": "mom parent", "record label": "label signed", "author": "wrote written",
    "director": "directed", "composer": "composed", "award received": "won awarded",
    "position held": "position office", "continent": "located", "capital": "capital",
    "member of": "member", "head of government": "mayor", "notable work": "known",
    "found in taxon": "found living species", "parent taxon": "family genus", "family": "genus",
}
RELATION_STOPWORDS = frozenset({"of", "the", "in", "by", "on", "to", "a", "an", "or", "is", "and", "s", "date"})
SYNTHETIC_PER_EDIT = 2

TRAIN_FILES = (
    "counterfact/train.json",
    "zsre/train-1k.json",
    "knowedit/wiki_counterfact_train.json",
    "knowedit/wiki_recent_train.json",
)


@dataclass(frozen=True)
class EditText:
    subject: str
    prompt: str
    target_new: str


@dataclass(frozen=True)
class Pair:
    query: str
    edit: int  # index into the edit list
    label: int  # 1: in scope
    kind: str  # prompt, paraphrase, alias, neighbourhood, same_subject, synthetic_same_subject, retrieved


def build_pairs(data_dir: Path, max_cases_per_file: int | None, seed: int) -> tuple[list[EditText], list[Pair]]:
    edits: list[EditText] = []
    pairs: list[Pair] = []
    rng = random.Random(seed)
    for name in TRAIN_FILES:
        records = json.loads((data_dir / name).read_text())
        rng.shuffle(records)
        for record in records[:max_cases_per_file]:
            built = _from_record(record)
            if built is None:
                continue
            edit, queries = built
            queries += [(q, 0, "synthetic_same_subject") for q in synthetic_same_subject(edit, rng)]
            paraphrases = [q for q, _, kind in queries if kind == "paraphrase"]
            queries += [(m, 1, "misspelt_paraphrase") for q in paraphrases if (m := misspelt(q, edit.subject, rng))]
            edits.append(edit)
            pairs += [Pair(q, len(edits) - 1, label, kind) for q, label, kind in queries if q.strip()]
    return edits, pairs


def _from_record(r: dict[str, Any]) -> tuple[EditText, list[tuple[str, int, str]]] | None:
    if "src" in r:  # MEND zsRE
        if not r.get("alt"):
            return None
        edit = EditText(r["subject"], r["src"], r["alt"])
        # Its `loc` NQ questions are kept out: scope_classifier/evaluate.py measures unrelated_fpr on them.
        return edit, [(r["src"], 1, "prompt"), (r.get("rephrase", ""), 1, "paraphrase")]
    if not r.get("target_new") or not r.get("prompt"):
        return None
    edit = EditText(r["subject"], r["prompt"], r["target_new"])
    queries = [(r["prompt"], 1, "prompt")]
    if "rephrase_prompt" in r:
        queries.append((r["rephrase_prompt"], 1, "paraphrase"))
    if "locality_prompt" in r:  # EasyEdit flat CounterFact
        queries.append((r["locality_prompt"], 0, "neighbourhood"))
    locality = r.get("locality") or {}
    portability = r.get("portability") or {}
    queries += [(item["prompt"], 0, "same_subject") for item in locality.get("Relation_Specificity", [])]
    queries += [(item["prompt"], 1, "alias") for item in portability.get("Subject_Aliasing", [])]
    return edit, queries


def synthetic_same_subject(edit: EditText, rng: random.Random, n: int = SYNTHETIC_PER_EDIT) -> list[str]:
    """Probes about the edit's subject under relations the edit prompt does not name."""
    if not edit.subject.strip():
        return []
    prompt_words = set(re.findall(r"\w+", edit.prompt.casefold()))
    others = [label for label in PROPERTY_LABELS
              if not (_relation_words(label) & prompt_words)]
    phrasings = ("The {label} of {subject} is", "{subject} {label}")
    return [phrasings[i % 2].format(label=label, subject=edit.subject)
            for i, label in enumerate(rng.sample(others, min(n, len(others))))]


MISSPELLABLE = re.compile(r"[^\W\d_]{4,}")  # words of four letters or more: short ones are numerals, initials


def misspelt(query: str, subject: str, rng: random.Random) -> str | None:
    """The query with one letter inside one subject word dropped, changed, doubled or swapped with the
    next; None when the query does not hold the subject or the subject has no word of four letters or more."""
    span = find_span(query, subject)
    words = list(MISSPELLABLE.finditer(subject))
    if span is None or not words:
        return None
    word = rng.choice(words)
    i = span[0] + word.start() + rng.randrange(1, len(word.group()) - 2)  # first and last letters stay (swap too)
    op = rng.choice(("drop", "change", "double", "swap"))
    replacement = {"drop": "", "change": rng.choice([c for c in "aeioulnrst" if c != query[i].lower()]),
                   "double": query[i] * 2, "swap": query[i + 1] + query[i]}[op]
    typo = query[:i] + replacement + query[i + (2 if op == "swap" else 1):]
    return typo if typo != query else None  # swapping two equal letters changes nothing


def _relation_words(label: str) -> set[str]:
    words = set(re.findall(r"\w+", f"{label} {RELATION_CUES.get(label, '')}".casefold()))
    return words - RELATION_STOPWORDS
